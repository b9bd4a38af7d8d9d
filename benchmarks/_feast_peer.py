"""The Feast side of bench_serving.py, run with the peers interpreter (Feast lives in its own virtualenv).

Usage: python _feast_peer.py setup REPO PARQUET      build a Feast repo (sqlite online store) and load it
       python _feast_peer.py lookup REPO KEYS_JSON    time get_online_features; print JSON

The repo uses Feast's sqlite online store with the rows written by ``write_to_online_store`` (the same
keys and vectors as the featurestore side). Timings are of calls, not of the interpreter start.
"""

from __future__ import annotations

import json
import sys
import time
from datetime import timedelta
from pathlib import Path

import numpy as np

YAML = """project: bench
registry: {repo}/registry.db
provider: local
online_store:
  type: sqlite
  path: {repo}/online.db
offline_store:
  type: duckdb
entity_key_serialization_version: 3
"""


def _objects(parquet: str):
    from feast import Entity, FeatureView, Field, FileSource, ValueType
    from feast.types import Array, Float32, Int64

    item = Entity(name="item", join_keys=["item_id"], value_type=ValueType.STRING)
    source = FileSource(path=parquet, timestamp_field="event_time")
    view = FeatureView(
        name="items", entities=[item], ttl=timedelta(days=3650), online=True, source=source,
        schema=[Field(name="embedding", dtype=Array(Float32)), Field(name="n_events", dtype=Int64)],
    )
    return item, view


def setup(repo: str, parquet: str) -> None:
    import pandas as pd
    from feast import FeatureStore

    Path(repo).mkdir(parents=True, exist_ok=True)
    (Path(repo) / "feature_store.yaml").write_text(YAML.format(repo=repo))
    store = FeatureStore(repo_path=repo)
    item, view = _objects(parquet)
    store.apply([item, view])
    df = pd.read_parquet(parquet)
    t = time.perf_counter()
    step = 50_000
    for start in range(0, len(df), step):
        store.write_to_online_store("items", df.iloc[start:start + step])
    print(json.dumps({"rows": len(df), "load_seconds": time.perf_counter() - t}))


def lookup(repo: str, keys_file: str) -> None:
    from feast import FeatureStore

    store = FeatureStore(repo_path=repo)
    spec = json.loads(Path(keys_file).read_text())
    out = {}
    for name, batches in spec.items():
        times = []
        for i, keys in enumerate(batches):
            t = time.perf_counter()
            resp = store.get_online_features(features=["items:embedding"],
                                             entity_rows=[{"item_id": k} for k in keys]).to_dict()
            times.append(time.perf_counter() - t)
            if i == 0:  # check the answer holds real vectors
                assert len(resp["embedding"]) == len(keys) and resp["embedding"][0] is not None
        ts = np.asarray(times[min(20, len(times) // 10):])  # drop warm-up calls
        out[name] = {"p50_ms": float(np.percentile(ts, 50) * 1e3), "p99_ms": float(np.percentile(ts, 99) * 1e3),
                     "calls": len(ts)}
    print(json.dumps(out))


if __name__ == "__main__":
    {"setup": setup, "lookup": lookup}[sys.argv[1]](*sys.argv[2:])
