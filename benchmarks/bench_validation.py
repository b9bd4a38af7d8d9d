"""What validation adds to an insert: 1M x 64-d rows, with and without the checks, side by side.

"Without" is exactly the insert path minus validation (conform, then write the Parquet files and commit
them: the same writer); "with" is ``fg.insert`` (conform, then validate while the files are written in a
background thread: great_expectations suite on per-row scalars + numpy embedding checks, store the
report, commit). Both run without the training-set vector cache (``cache_vectors=False``), whose
write-behind is no part of validation. The one-time great_expectations import is measured apart and excluded. The load
average before and after is printed: the machine's other jobs share its cores.
A second insert over the same keys measures the drift checks too (they read the previous commit).

    python benchmarks/bench_validation.py            # 1M rows
    python benchmarks/bench_validation.py --quick    # 100k rows
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from featurestore import FeatureStore  # noqa: E402
from featurestore.conform import conform  # noqa: E402
from featurestore.storage import staging  # noqa: E402
from featurestore.storage.delta import META_PREFIX  # noqa: E402
from featurestore.validation.runner import previous_commit, validate_batch  # noqa: E402

T0 = datetime(2026, 11, 1, tzinfo=UTC)
DIM = 64


def make_batch(n: int, seed: int, base: np.ndarray | None = None) -> tuple[pa.Table, np.ndarray]:
    rng = np.random.default_rng(seed)
    v = rng.standard_normal((n, DIM)).astype(np.float32) if base is None else \
        base + 0.05 * rng.standard_normal((n, DIM)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    table = pa.table({
        "item_id": pa.array([f"item_{i:07d}" for i in range(n)]),
        "embedding": pa.FixedSizeListArray.from_arrays(pa.array(v.ravel()), DIM),
        "n_events": pa.array(rng.integers(1, 500, n)),
        "last_event_time": pa.array(np.full(n, np.datetime64("2026-10-31T23:00:00", "us"))).cast(
            pa.timestamp("us", tz="UTC")),
    })
    return table, v


def insert_without_validation(fg, data: pa.Table, cutoff: datetime) -> None:
    """The insert path with the validation step left out: conform, then one Delta commit."""
    batch = conform(fg.spec, data, cutoff=cutoff)
    stored = fg._storage_table(batch)
    staging.append(fg.root, fg.rel, stored, {META_PREFIX + "run_id": f"bench-{time.time_ns()}"})


def fresh_group(tmp: Path, name: str):
    # no training-set vector cache: its write-behind thread is no part of validation, and would run
    # into the next measurement
    store = FeatureStore(tmp / name, cache_vectors=False)
    store.apply(ROOT / "schemas")
    return store, store.feature_group("item_embeddings", 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="100k rows instead of 1M")
    ap.add_argument("--rows", type=int, default=None)
    ap.add_argument("--repeat", type=int, default=6, help="runs of each measurement (median reported)")
    args = ap.parse_args()
    n = args.rows or (100_000 if args.quick else 1_000_000)

    load_before = os.getloadavg()
    t = time.perf_counter()
    from featurestore.validation import gx

    gx.load()  # the one-time import of great_expectations, excluded below
    import_s = time.perf_counter() - t

    data, base = make_batch(n, seed=0)
    data2, _ = make_batch(n, seed=1, base=base)
    tmp = Path(tempfile.mkdtemp(prefix="bench_validation_"))
    try:
        # warm-up: the great_expectations context, numpy and DuckDB code paths
        _, fg = fresh_group(tmp, "warm")
        fg.insert(make_batch(2000, seed=9)[0], cutoff=T0)

        without, with_, with_drift, without_2 = [], [], [], []
        parts: dict[str, list[float]] = {}
        for r in range(args.repeat):
            print(f"run {r + 1}/{args.repeat} ...", file=sys.stderr)

            def run_without(r: int = r) -> None:
                _, fg_a = fresh_group(tmp, f"a{r}")
                t = time.perf_counter()
                insert_without_validation(fg_a, data, T0)
                without.append(time.perf_counter() - t)
                t = time.perf_counter()
                insert_without_validation(fg_a, data2, T0 + timedelta(days=1))
                without_2.append(time.perf_counter() - t)

            def run_with(r: int = r) -> tuple:
                _, fg_b = fresh_group(tmp, f"b{r}")
                t = time.perf_counter()
                c1 = fg_b.insert(data, cutoff=T0)
                with_.append(time.perf_counter() - t)
                t = time.perf_counter()
                c2 = fg_b.insert(data2, cutoff=T0 + timedelta(days=1))
                with_drift.append(time.perf_counter() - t)
                return fg_b, c1, c2

            # the order alternates between runs: a machine whose speed drifts (shared cores, page
            # cache, other jobs) does not always favour the same side
            if r % 2 == 0:
                run_without()
                fg_b, c1, c2 = run_with()
            else:
                fg_b, c1, c2 = run_with()
                run_without()
            assert c1.extra["validation_status"] == "passed" and c2.extra["validation_status"] == "passed"

            batch = conform(fg_b.spec, data, cutoff=T0)
            rep = validate_batch(fg_b.spec, batch, previous=None)
            parts.setdefault("validate alone, 1st commit (no drift)", []).append(rep.timings["total"])
            batch = conform(fg_b.spec, data2, cutoff=T0)
            t = time.perf_counter()
            prev = previous_commit(fg_b, before=2)
            parts.setdefault("read previous commit", []).append(time.perf_counter() - t)
            rep = validate_batch(fg_b.spec, batch, previous=prev)
            for k in ("derive", "great_expectations", "embedding", "total"):
                parts.setdefault(f"validate alone, 2nd commit: {k}", []).append(rep.timings[k])
            shutil.rmtree(tmp / f"a{r}")
            shutil.rmtree(tmp / f"b{r}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    load_after = os.getloadavg()
    med = statistics.median
    w, v, v2, w2 = med(without), med(with_), med(with_drift), med(without_2)
    rows = [
        ("insert without validation (1st commit)", w, None),
        ("insert with validation (1st commit)", v, None),
        ("validation added, 1st commit", v - w, (v - w) / w),
        ("insert without validation (2nd commit, same keys)", w2, None),
        ("insert with validation incl. drift (2nd commit)", v2, None),
        ("validation added, 2nd commit (drift on)", v2 - w2, (v2 - w2) / w2),
        *((name, med(vals), None) for name, vals in parts.items()),
        ("great_expectations import (one-time, excluded)", import_s, None),
    ]
    print(f"\nbench_validation: {n:,} rows x {DIM}-d, median of {args.repeat} run(s); load average "
          f"{load_before[0]:.2f} before, {load_after[0]:.2f} after")
    print(f"{'figure':58} {'seconds':>9} {'added/insert':>13}")
    for name, sec, ratio in rows:
        print(f"{name:58} {sec:9.3f} {'' if ratio is None else f'{ratio:13.2f}'}")
    target = (v - w) / w <= 0.5
    print(f"\ntarget (validation adds <= 0.5x the insert time, 1st commit): {'met' if target else 'NOT met'}")
    out = ROOT / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    doc = {"benchmark": "validation", "rows": n, "dim": DIM, "repeat": args.repeat,
           "date": datetime.now(UTC).isoformat(timespec="seconds"), "machine": platform.platform(),
           "figures": [{"figure": name, "seconds": sec, "ratio": ratio} for name, sec, ratio in rows],
           "runs": {"without": without, "with": with_, "without_2": without_2, "with_drift": with_drift},
           "target_met": target, "load_average": {"before": load_before, "after": load_after}}
    (out / "bench_validation.json").write_text(json.dumps(doc, indent=2))
    print(f"wrote {out / 'bench_validation.json'}", file=sys.stderr)


if __name__ == "__main__":
    main()
