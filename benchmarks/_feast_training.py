"""Feast side of bench_training.py, run with the peers interpreter (Feast in its own virtualenv).

    python _feast_training.py WORKDIR SPINE.parquet OUT.parquet {duckdb,file} TTL_SECONDS

Builds a Feast repo over the benchmark's Parquet files (one per feature group), then times
``get_historical_features(entity_df, ...).to_arrow()`` (the call only, not ``import feast``) and writes
the result to OUT.parquet. Prints one JSON line: {"seconds": ..., "rows": ...}.
"""

from __future__ import annotations

import json
import os
import sys
import time
from datetime import timedelta


def main() -> None:
    work, spine_path, out, store_type, ttl_s = sys.argv[1:6]
    import pandas as pd
    import pyarrow.parquet as pq
    from feast import Entity, FeatureStore, FeatureView, Field, FileSource, ValueType
    from feast.types import Array, Float32

    repo = os.path.join(work, f"feast_{store_type}")
    os.makedirs(repo, exist_ok=True)
    with open(os.path.join(repo, "feature_store.yaml"), "w") as f:
        f.write(f"""project: bench
registry: {repo}/registry.db
provider: local
offline_store:
  type: {store_type}
online_store:
  type: sqlite
  path: {repo}/online.db
entity_key_serialization_version: 3
""")
    store = FeatureStore(repo_path=repo)
    ttl = timedelta(seconds=float(ttl_s))
    objs = []
    for group, key in (("users", "user_id"), ("items", "item_id")):
        entity = Entity(name=key.removesuffix("_id"), join_keys=[key], value_type=ValueType.INT64)
        source = FileSource(name=f"{group}_src", path=os.path.join(work, f"feast_{group}.parquet"),
                            timestamp_field="event_timestamp", created_timestamp_column="created")
        view = FeatureView(name=group, entities=[entity], ttl=ttl, source=source, online=False,
                           schema=[Field(name="embedding", dtype=Array(Float32))])
        objs += [entity, view]
    store.apply(objs)
    entity_df = pq.read_table(spine_path).to_pandas()
    entity_df = entity_df.rename(columns={"label_time": "event_timestamp"})
    entity_df["event_timestamp"] = pd.to_datetime(entity_df["event_timestamp"], utc=True)
    t = time.perf_counter()
    job = store.get_historical_features(entity_df=entity_df, features=["users:embedding", "items:embedding"],
                                        full_feature_names=True)
    table = job.to_arrow()
    seconds = time.perf_counter() - t
    pq.write_table(table, out)
    print(json.dumps({"seconds": seconds, "rows": table.num_rows}))


if __name__ == "__main__":
    main()
