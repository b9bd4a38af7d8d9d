"""The Feast side of bench_serving.py, run with the peers interpreter (Feast lives in its own virtualenv).

Usage: python _feast_peer.py setup REPO PARQUET [USERS_PARQUET STATS_PARQUET]
                                                      build a Feast repo (sqlite online store) and load it;
                                                      with the user tables also the feature service "ranking"
       python _feast_peer.py lookup REPO KEYS_JSON    time get_online_features; print JSON
       python _feast_peer.py service REPO ENTITIES_JSON  time get_online_features(features=<feature service>)

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


def _service_objects(users_parquet: str, stats_parquet: str, items_view: object) -> list[object]:
    """The user groups and the feature service over users, user_stats and items (as the featurestore side)."""
    from feast import Entity, FeatureService, FeatureView, Field, FileSource, ValueType
    from feast.types import Array, Float32, Float64, Int64

    user = Entity(name="user", join_keys=["user_id"], value_type=ValueType.STRING)
    users = FeatureView(name="users", entities=[user], ttl=timedelta(days=3650), online=True,
                        source=FileSource(path=users_parquet, timestamp_field="event_time"),
                        schema=[Field(name="embedding", dtype=Array(Float32)), Field(name="n_events", dtype=Int64)])
    stats = FeatureView(name="user_stats", entities=[user], ttl=timedelta(days=3650), online=True,
                        source=FileSource(path=stats_parquet, timestamp_field="event_time"),
                        schema=[Field(name="clicks_7d", dtype=Int64), Field(name="ctr", dtype=Float64)])
    service = FeatureService(name="ranking", features=[users[["embedding", "n_events"]], stats,
                                                       items_view[["embedding", "n_events"]]])  # type: ignore[index]
    return [user, users, stats, service]


def _load(store: object, name: str, df: object) -> None:
    step = 50_000
    for start in range(0, len(df), step):  # type: ignore[arg-type]
        store.write_to_online_store(name, df.iloc[start:start + step])  # type: ignore[attr-defined]


def setup(repo: str, parquet: str, users_parquet: str | None = None, stats_parquet: str | None = None) -> None:
    import pandas as pd
    from feast import FeatureStore

    Path(repo).mkdir(parents=True, exist_ok=True)
    (Path(repo) / "feature_store.yaml").write_text(YAML.format(repo=repo))
    store = FeatureStore(repo_path=repo)
    item, view = _objects(parquet)
    objects = [item, view]
    if users_parquet and stats_parquet:
        objects += _service_objects(users_parquet, stats_parquet, view)
    store.apply(objects)
    df = pd.read_parquet(parquet)
    t = time.perf_counter()
    _load(store, "items", df)
    if users_parquet and stats_parquet:
        _load(store, "users", pd.read_parquet(users_parquet))
        _load(store, "user_stats", pd.read_parquet(stats_parquet))
    print(json.dumps({"rows": len(df), "load_seconds": time.perf_counter() - t}))


def service(repo: str, entities_file: str) -> None:
    """get_online_features with the feature service, one entity (user_id, item_id) per call."""
    from feast import FeatureStore

    store = FeatureStore(repo_path=repo)
    fs = store.get_feature_service("ranking")
    times = []
    for i, row in enumerate(json.loads(Path(entities_file).read_text())):
        t = time.perf_counter()
        resp = store.get_online_features(features=fs, entity_rows=[row], full_feature_names=True).to_dict()
        times.append(time.perf_counter() - t)
        if i == 0:  # the answer holds all three groups
            assert resp["user_stats__clicks_7d"][0] is not None and resp["users__embedding"][0] is not None, list(resp)
    ts = np.asarray(times[min(20, len(times) // 10):])
    print(json.dumps({"p50_ms": float(np.percentile(ts, 50) * 1e3), "p99_ms": float(np.percentile(ts, 99) * 1e3),
                      "calls": len(ts)}))


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
    {"setup": setup, "lookup": lookup, "service": service}[sys.argv[1]](*sys.argv[2:])
