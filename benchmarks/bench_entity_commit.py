"""Memory of a batched entity commit: ``FeatureGroup.insert_batches`` of N generated user rows (64-d unit
vectors, string ids, batches of 262,144 as a pipeline makes them) into ``user_embeddings``, validated and
committed, each size in a fresh child process: seconds, the child's peak RSS, and its growth per entity over
what the process held before the insert (great_expectations imported).

    python benchmarks/bench_entity_commit.py                    # 1M and 4M entities
    python benchmarks/bench_entity_commit.py --entities 8000000

What stays per entity until the commit is described in docs/performance.md ("Memory at scale", Entities).
Results: a table on stdout, JSON in benchmarks/results/entity_commit.json.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

from benchmarks._util import report  # noqa: E402

BATCH = 262_144
T0 = datetime(2026, 10, 1, tzinfo=UTC)


def child(n: int, work: str) -> None:
    import numpy as np
    import pyarrow as pa

    from featurestore import FeatureStore
    from featurestore.validation import gx

    store = FeatureStore(Path(work) / "store")
    store.apply(REPO / "schemas" / "user_embeddings.v1.yaml")
    fg = store.feature_group("user_embeddings", 1)

    def batches():  # type: ignore[no-untyped-def]
        rng = np.random.default_rng(0)
        for lo in range(0, n, BATCH):
            m = min(BATCH, n - lo)
            v = rng.standard_normal((m, 64)).astype(np.float32)
            v /= np.linalg.norm(v, axis=1, keepdims=True)
            yield pa.table({"user_id": pa.array([f"u{i:09d}" for i in range(lo, lo + m)]),
                            "embedding": pa.FixedSizeListArray.from_arrays(pa.array(v.ravel()), 64),
                            "n_events": pa.array(np.ones(m, np.int64)),
                            "last_event_time": pa.array([T0] * m, pa.timestamp("us", tz="UTC"))})

    gx.load()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    t = time.perf_counter()
    commit = fg.insert_batches(batches(), cutoff=T0)
    seconds = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"entities": n, "seconds": round(seconds, 2), "peak_rss_gb": round(peak / 1e9, 2),
                      "before_gb": round(before / 1e9, 2), "bytes_per_entity": round((peak - before) / n),
                      "rows_committed": commit.row_count}))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--entities", default="1000000,4000000", help="entity counts, comma-separated")
    ap.add_argument("--workdir", default=None, help="where the stores go (default: a temporary folder)")
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(int(args.child[0]), args.child[1])
        return 0
    rows = []
    for n in [int(x) for x in args.entities.split(",")]:
        work = tempfile.mkdtemp(prefix="entity_commit_", dir=args.workdir)
        try:
            out = subprocess.run([sys.executable, __file__, "--child", str(n), work], check=True,
                                 capture_output=True, text=True)
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        finally:
            shutil.rmtree(work, ignore_errors=True)
        print(rows[-1], flush=True)
    print()
    report("entity_commit", rows, {"batch_rows": BATCH, "dim": 64,
                                   "date": datetime.now(UTC).isoformat(timespec="seconds")})
    return 0


if __name__ == "__main__":
    sys.exit(main())
