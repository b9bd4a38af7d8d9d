"""A sequence pipeline: purchase histories -> sequence_item_embeddings v1 and sequence_user_embeddings v1.

The item vectors and the user encoder come from a causal self-attention next-item model
(:class:`featurestore.embed.sequence.SequenceEmbedder`, needs ``pip install 'featurestore[sequence]'``).
The model is retrained weekly, after 7 runs that reused it, or when more than 20% of the new events are
on items it does not know; the runs in between re-encode only the users with new events, with the
committed weights. Register the groups with ``featurestore apply schemas/sequence/``. Events as for
``pipelines/purchase_embeddings.py`` (``$FEATURESTORE_EVENTS``)::

    featurestore run pipelines/sequence_embeddings.py --cutoff 2026-11-01
    featurestore run pipelines/sequence_embeddings.py --cutoff 2026-11-01 --max-minutes 30
"""

import os
from datetime import timedelta

from featurestore.embed.sequence import SequenceEmbedder
from featurestore.engine.events import Columns, EventSource
from featurestore.pipeline import Pipeline

pipeline = Pipeline(
    name="sequence_embeddings",
    source=EventSource(os.environ.get("FEATURESTORE_EVENTS", "events/*.parquet"),
                       columns=Columns(entity="user_id", item="item_id", type="event_type", time="event_time")),
    embedder=SequenceEmbedder(dim=64, seed=0),
    items=("sequence_item_embeddings", 1),
    entities=("sequence_user_embeddings", 1),
    mode="incremental",
    retrain_every=timedelta(days=7),
    retrain_runs=7,
    retrain_drift=0.2,
)
