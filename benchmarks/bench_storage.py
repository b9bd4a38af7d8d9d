"""Storage benchmark: insert and read back N x 64-d vectors, time travel, DuckDB scan and exact top-10.

Each figure of the store is measured beside its bare baseline in the same run (pyarrow Parquet for
writes and reads, numpy for exact top-10), so the ratio says what the store's checks, commit and
views cost. Usage: ``python benchmarks/bench_storage.py [--rows 1000000] [--quick]``.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks._util import peak_rss_mb, report, timed
from featurestore import FeatureStore

SCHEMAS = Path(__file__).resolve().parent.parent / "schemas"
T0 = datetime(2026, 11, 1, tzinfo=UTC)


def batch(n: int, dim: int, seed: int, when: datetime) -> pa.Table:
    v = np.random.default_rng(seed).standard_normal((n, dim), dtype=np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return pa.table({
        "item_id": pa.array([f"item_{i}" for i in range(n)]),
        "event_time": pa.array(np.full(n, int(when.timestamp() * 1e6)), pa.int64()).cast(
            pa.timestamp("us", tz="UTC")),
        "embedding": pa.FixedSizeListArray.from_arrays(pa.array(v.ravel()), dim),
        "n_events": pa.array(np.arange(n, dtype=np.int64)),
        "last_event_time": pa.array(np.full(n, int(when.timestamp() * 1e6)), pa.int64()).cast(
            pa.timestamp("us", tz="UTC")),
    })


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--commits", type=int, default=10, help="extra commits for the time-travel figure")
    ap.add_argument("--quick", action="store_true", help="100k rows, 3 commits")
    ap.add_argument("--dir", default=None, help="work folder (default: a temporary one)")
    args = ap.parse_args()
    if args.quick:
        args.rows, args.commits = 100_000, 3
    n, dim = args.rows, 64
    work = Path(args.dir or tempfile.mkdtemp(prefix="bench_storage_"))
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    rows: list[dict] = []
    data = batch(n, dim, 0, T0)

    store = FeatureStore(work / "store")
    store.apply(SCHEMAS)
    fg = store.feature_group("item_embeddings", version=1)

    from featurestore.validation import gx

    gx.load()  # the one-time import of great_expectations, not an insert cost (bench_validation)

    t_pq, _ = timed(lambda: pq.write_table(data, work / "plain.parquet"))
    t_ins, commit = timed(lambda: fg.insert(data, cutoff=T0))
    rows.append({"figure": f"insert {n:,} x {dim}", "featurestore_s": t_ins, "baseline": "pq.write_table",
                 "baseline_s": t_pq, "ratio": t_ins / t_pq, "rows_per_s": n / t_ins})

    t_pqr, _ = timed(lambda: pq.read_table(work / "plain.parquet"), repeat=3)
    t_read, back = timed(lambda: fg.read(), repeat=3)
    assert back.num_rows == n
    assert back["embedding"].combine_chunks().values.to_numpy().tobytes() == \
        data["embedding"].combine_chunks().values.to_numpy().tobytes()
    rows.append({"figure": f"read {n:,} x {dim} (bit-exact)", "featurestore_s": t_read,
                 "baseline": "pq.read_table", "baseline_s": t_pqr, "ratio": t_read / t_pqr,
                 "rows_per_s": n / t_read})

    step = max(n // 10, 1)
    for c in range(args.commits):
        # the same keys' vectors again (seed 0): each commit passes the drift check against the last
        fg.insert(batch(step, dim, 0, T0 + timedelta(days=c + 1)).slice(0, step))
    t_tt, old = timed(lambda: fg.read(commit=commit.commit), repeat=3)
    assert old.num_rows == n
    t_tt_time, old2 = timed(lambda: fg.read(commit_time=commit.timestamp), repeat=3)
    assert old2.num_rows == n
    rows.append({"figure": f"time travel to commit 1 of {commit.commit + args.commits}", "featurestore_s": t_tt,
                 "baseline": "read newest", "baseline_s": timed(lambda: fg.read(), repeat=3)[0],
                 "ratio": "", "rows_per_s": n / t_tt})
    rows.append({"figure": "time travel by timestamp", "featurestore_s": t_tt_time, "baseline": "", "baseline_s": "",
                 "ratio": "", "rows_per_s": n / t_tt_time})

    scan_q = "SELECT count(*), avg(n_events), max(event_time) FROM item_embeddings_v1"
    t_scan, _ = timed(lambda: store.sql(scan_q, commits={"item_embeddings_v1": commit.commit}).fetchall(), repeat=3)
    rows.append({"figure": f"DuckDB scan {n:,} rows", "featurestore_s": t_scan, "baseline": "", "baseline_s": "",
                 "ratio": "", "rows_per_s": n / t_scan})

    q = np.random.default_rng(7).standard_normal(dim).astype(np.float32)
    top_q = ("SELECT item_id, array_cosine_similarity(embedding, $q::FLOAT[64]) AS s FROM item_embeddings_v1 "
             "ORDER BY s DESC LIMIT 10")
    t_top, got = timed(lambda: store.sql(top_q, params={"q": q.tolist()},
                                         commits={"item_embeddings_v1": commit.commit}).fetchall(), repeat=3)
    mat = data["embedding"].combine_chunks().values.to_numpy().reshape(n, dim)

    def numpy_top10():
        s = mat @ (q / np.linalg.norm(q))
        idx = np.argpartition(-s, 10)[:10]
        return idx[np.argsort(-s[idx])]

    t_np, want = timed(numpy_top10, repeat=3)
    assert [g[0] for g in got] == [f"item_{i}" for i in want], "DuckDB and numpy disagree on the top-10"
    rows.append({"figure": f"exact cosine top-10 over {n:,} (DuckDB SQL)", "featurestore_s": t_top,
                 "baseline": "numpy in memory", "baseline_s": t_np, "ratio": t_top / t_np, "rows_per_s": n / t_top})
    rows.append({"figure": "peak RSS (MB)", "featurestore_s": peak_rss_mb(), "baseline": "", "baseline_s": "",
                 "ratio": "", "rows_per_s": ""})
    report("bench_storage", rows, {"rows": n, "dim": dim, "commits": args.commits})
    store.close()
    if not args.dir:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
