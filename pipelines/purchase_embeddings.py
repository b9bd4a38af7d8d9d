"""The reference pipeline: purchase histories -> item_embeddings v1 and user_embeddings v1.

Events come from ``$FEATURESTORE_EVENTS`` (a Parquet file or glob; default ``events/*.parquet``) with
columns user_id, item_id, event_type (view, add_to_cart, purchase) and event_time. Run it with::

    featurestore run pipelines/purchase_embeddings.py --cutoff 2026-11-01
    featurestore run pipelines/purchase_embeddings.py --backfill 2026-11-01 2026-11-07 --every 1d
    featurestore run pipelines/purchase_embeddings.py --events other/*.parquet --columns entity=customer,item=sku
"""

import os
from datetime import timedelta

from featurestore.embed import Aggregation, CooccurrenceEmbedder
from featurestore.engine.events import Columns, EventSource
from featurestore.pipeline import Pipeline

pipeline = Pipeline(
    name="purchase_embeddings",
    source=EventSource(os.environ.get("FEATURESTORE_EVENTS", "events/*.parquet"),
                       columns=Columns(entity="user_id", item="item_id", type="event_type", time="event_time")),
    embedder=CooccurrenceEmbedder(dim=64, window=5, alpha=0.75, seed=0),
    aggregation=Aggregation(half_life=2, max_events=10),
    weights={"view": 1.0, "add_to_cart": 2.0, "purchase": 4.0},
    items=("item_embeddings", 1),
    entities=("user_embeddings", 1),
    mode="incremental",
    retrain_every=timedelta(days=1),
)
