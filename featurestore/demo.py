"""The end-to-end demo behind ``featurestore demo`` / ``make demo``: a local store, generated data.

It creates (or reuses) a store folder, applies the shipped specs, commits several runs of generated
item embeddings, time-travels to an older commit and queries the vectors through DuckDB.
"""

from __future__ import annotations

import shutil
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa

from featurestore.store import FeatureStore

SCHEMAS = Path(__file__).resolve().parent.parent / "schemas"


def _items(rng: np.random.Generator, n: int, dim: int, day: datetime) -> pa.Table:
    v = rng.standard_normal((n, dim)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return pa.table({
        "item_id": [f"item_{i:05d}" for i in range(n)],
        "embedding": pa.FixedSizeListArray.from_arrays(pa.array(v.ravel()), dim),
        "n_events": rng.integers(1, 500, n),
        "last_event_time": pa.array([day - timedelta(hours=1)] * n, pa.timestamp("us", tz="UTC")),
    })


def run(root: str | Path = "./featurestore_data", *, items: int = 5000, days: int = 3,
        fresh: bool = True, schemas: Path = SCHEMAS, seed: int = 0) -> FeatureStore:
    """Run the demo and print what happened; returns the store."""
    started = time.perf_counter()
    root = Path(root)
    if fresh and root.exists():
        shutil.rmtree(root)
    store = FeatureStore(root)
    for r in store.apply(schemas):
        print(f"apply: {r.name} v{r.version} {r.action}")
    fg = store.feature_group("item_embeddings", version=1)
    rng = np.random.default_rng(seed)
    first = datetime(2026, 11, 1, tzinfo=UTC)
    for d in range(days):
        as_of = first + timedelta(days=d)
        c = fg.insert(_items(rng, items, 64, as_of), as_of=as_of, metadata={"pipeline": "demo", "day": d})
        print(f"commit {c.commit}: {c.row_count} item vectors as of {as_of.date()}")
    print(f"history: {len(fg.history())} commits; newest has {fg.count()} rows, "
          f"{len(fg.latest())} items (latest per key)")
    old = fg.read(as_of=1)
    print(f"time travel: commit 1 holds {old.num_rows} rows, all as of "
          f"{old['event_time'][0].as_py().date()}")
    q = store.sql(
        "WITH q AS (SELECT embedding FROM item_embeddings WHERE item_id = 'item_00042' "
        "ORDER BY event_time DESC LIMIT 1) "
        "SELECT i.item_id, array_cosine_similarity(i.embedding, q.embedding) AS score "
        "FROM item_embeddings i, q "
        "WHERE i.event_time = (SELECT max(event_time) FROM item_embeddings) "
        "ORDER BY score DESC LIMIT 5").fetchall()
    print("DuckDB: items nearest to item_00042 (cosine):")
    for item_id, score in q:
        print(f"  {item_id}  {score:.3f}")
    print(f"done in {time.perf_counter() - started:.1f}s; store at {store.root.uri}")
    return store
