"""Object-storage benchmark: the same store on local disk and on a local S3-compatible server (moto's server
mode on 127.0.0.1, the one the tests use), side by side in one run.

Per operation: seconds on local disk, on S3 from the writing machine (its cache holds what it wrote), and
on S3 from a fresh machine (an empty cache: every file is downloaded first), with the ratios to local disk.
Operations: insert N x 64-d item vectors (one commit), read the commit back, a point-in-time training set
over a spine of M rows, and the online view (materialise: build and upload; on a fresh machine, download
and verify). moto keeps objects in memory and answers one request at a time, so the S3 figures measure the
store's request pattern plus a local server, not a network: real S3 adds 10-50 ms per request and its
bandwidth. Usage: ``python benchmarks/bench_object_storage.py [--rows 200000] [--spine 200000]``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks._util import peak_rss_mb, report, timed
from benchmarks.bench_storage import batch
from featurestore import FeatureStore
from tests.s3_server import S3Server

SCHEMAS = Path(__file__).resolve().parent.parent / "schemas"
T0 = datetime(2026, 11, 1, tzinfo=UTC)


def spine(rows: int, n_items: int) -> pd.DataFrame:
    rng = np.random.default_rng(1)
    return pd.DataFrame({"item_id": [f"item_{i}" for i in rng.integers(0, n_items, rows)],
                         "event_time": T0 + pd.to_timedelta(rng.integers(0, 7200, rows), unit="s")})


def steps(rows: int, spine_rows: int) -> dict[str, Callable[[FeatureStore], Any]]:
    feats = ["item_embeddings:1"]
    keys = {"item_embeddings": "item_id"}
    sp = spine(spine_rows, rows)
    return {
        "read commit": lambda s: s.feature_group("item_embeddings", 1).read(),
        "training set": lambda s: s.training_set(sp, feats, entity_keys=keys).to_arrow(),
        "online view": lambda s: s.online("item_embeddings", 1),
    }


def run_side(root: str, rows: int, spine_rows: int, cache: Path, fresh: Path | None) -> dict[str, float]:
    """Seconds per operation on one store; ``fresh``: then again from an empty cache folder."""
    os.environ["FEATURESTORE_CACHE"] = str(cache)
    out: dict[str, float] = {}
    with FeatureStore(root) as store:
        store.apply(SCHEMAS)
        fg = store.feature_group("item_embeddings", 1)
        out["insert"], _ = timed(lambda: fg.insert(batch(rows, 64, 0, T0)))
        for name, fn in steps(rows, spine_rows).items():
            out[name], _ = timed(lambda fn=fn: fn(store))
    if fresh is not None:
        os.environ["FEATURESTORE_CACHE"] = str(fresh)
        with FeatureStore(root) as other:
            for name, fn in steps(rows, spine_rows).items():
                out[f"{name} (fresh machine)"], _ = timed(lambda fn=fn, other=other: fn(other))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--spine", type=int, default=200_000)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-s3-"))
    from featurestore.validation import gx

    gx.load()  # the validation library's one-off import (seconds) is not the storage's cost
    server = S3Server()
    try:
        server.create_bucket("bench")
        os.environ.update(server.env())
        local = run_side(str(work / "local"), args.rows, args.spine, work / "cache-local", None)
        s3 = run_side(f"s3://bench/{uuid.uuid4().hex[:8]}", args.rows, args.spine, work / "cache-writer",
                      work / "cache-fresh")
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    rows = []
    for op, sec in local.items():
        fresh = s3.get(f"{op} (fresh machine)")
        rows.append({"operation": op, "local_s": round(sec, 3), "s3_writer_s": round(s3[op], 3),
                     "s3_writer_x": round(s3[op] / sec, 2),
                     "s3_fresh_s": round(fresh, 3) if fresh is not None else "",
                     "s3_fresh_x": round(fresh / sec, 2) if fresh is not None else ""})
    report("object_storage", rows, {"rows": args.rows, "dim": 64, "spine": args.spine,
                                    "server": "moto 5 server mode on 127.0.0.1", "peak_rss_mb": peak_rss_mb(),
                                    "measured": datetime.now(UTC).isoformat(timespec="seconds")})


if __name__ == "__main__":
    main()
