"""Scale: the reference pipeline and training sets as the data grows, with each engine's peak memory.

Events come from the synthetic generator written in blocks (100 events per user, 50k items), the
pipeline is the reference one (64-d co-occurrence model, user vectors, validation, two commits), each
run in a fresh child process: seconds, events/s and the child's peak RSS (VmHWM polled from /proc).
The cost ratio per size step (time and memory, size x4) shows how each grows: x4 means linear.
Training sets: 1M and 10M spine rows (50M with ``--large``) over two feature groups (100k keys x 30
commits, 64-d), the first training set over the commits (it builds the join cache) streamed to Parquet.

    python benchmarks/bench_scale.py                      # 1M, 4M, 16M events; 1M and 10M spines
    python benchmarks/bench_scale.py --sizes 1000000      # one size
    python benchmarks/bench_scale.py --large              # adds 64M and (DuckDB) 500M events, a 50M spine
    python benchmarks/bench_scale.py --engines duckdb     # engines, comma-separated

Each engine is one function (``pipeline_<engine>``, ``training_<engine>``) that runs a child and
returns a row; adding an engine is adding those two. On DuckDB, events beyond ``chunk_events`` (8M by
default) stay in DuckDB and are counted and aggregated in chunks, so memory does not grow with events
(docs/performance.md). ``--chunk-events`` changes that threshold for the run (e.g. to compare the two
paths at one size).
Results: a table on stdout, JSON in benchmarks/results/scale.json (scale_<sizes>.json with --sizes/--spines).
"""

from __future__ import annotations

import argparse
import json
import os
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

from benchmarks import bench_training  # noqa: E402
from benchmarks._util import report  # noqa: E402

SIZES = [1_000_000, 4_000_000, 16_000_000]
LARGE = [64_000_000, 500_000_000]
SPINES = [1_000_000, 10_000_000]
LARGE_SPINES = [50_000_000]
N_ITEMS = 50_000
EVENTS_PER_USER = 100
CUTOFF = "2026-10-31T00:00:00+00:00"
KEYS, COMMITS = 100_000, 30


# ---- data ----------------------------------------------------------------------------------------
def events_file(data: Path, n: int) -> tuple[Path, float]:
    """The synthetic events of size ``n`` (made once, kept in ``data``) and the seconds it took."""
    path = data / f"events_{n}.parquet"
    if path.exists():
        return path, 0.0
    cmd = [sys.executable, __file__, "--child-generate", str(path), str(n)]
    t = time.perf_counter()
    subprocess.run(cmd, check=True, env=_env())
    return path, time.perf_counter() - t


def child_generate(path: str, n: int) -> None:
    from featurestore.synthetic import write_purchase_histories

    tmp = path + ".partial"
    write_purchase_histories(tmp, n_users=max(1, n // EVENTS_PER_USER), n_items=N_ITEMS, n_events=n, seed=0)
    os.replace(tmp, path)


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}


# ---- DuckDB ----------------------------------------------------------------------------------------
def child_pipeline_duckdb(events: str, root: str, chunk_events: int, memory_limit: str) -> None:
    """One pipeline run on DuckDB in this (child) process; prints a JSON line."""
    from featurestore import FeatureStore
    from featurestore.engine.duckdb import DuckDBEngine
    from featurestore.pipeline import load_pipeline

    os.environ["FEATURESTORE_EVENTS"] = events
    pipeline = load_pipeline(str(REPO / "pipelines" / "purchase_embeddings.py"))
    store = FeatureStore(root, engine=DuckDBEngine(chunk_events=chunk_events, memory_limit=memory_limit or None))
    store.apply(str(REPO / "schemas"))
    t = time.perf_counter()
    result = pipeline.run(store, datetime.fromisoformat(CUTOFF), quiet=True)
    seconds = time.perf_counter() - t
    info = store.feature_group("item_embeddings", 1).history()[-1].metadata.get("model_info", {})
    print(json.dumps({"seconds": seconds, "events": result.events, "items": result.items,
                      "entities": result.entities_written, "pairs_nnz": info.get("pairs_nnz"),
                      "stages": result.seconds}))


def pipeline_duckdb(events: Path, work: Path, args: argparse.Namespace) -> dict:
    root = work / "store_duckdb"
    shutil.rmtree(root, ignore_errors=True)
    cmd = [sys.executable, __file__, "--child-pipeline", "duckdb", str(events), str(root), str(args.chunk_events),
           args.memory_limit or ""]
    r = bench_training.run_child(cmd, args.timeout)
    shutil.rmtree(root, ignore_errors=True)
    return r


def training_duckdb(work: Path, spine: Path, args: argparse.Namespace) -> dict:
    out = work / "training_out.parquet"
    cmd = [sys.executable, str(HERE / "bench_training.py"), "--child", str(work), str(spine), str(out), "parquet"]
    shutil.rmtree(work / "store" / "_cache" / "joins", ignore_errors=True)  # the first training set over them
    r = bench_training.run_child(cmd, args.timeout)
    out.unlink(missing_ok=True)
    return r


PIPELINE = {"duckdb": pipeline_duckdb}
TRAINING = {"duckdb": training_duckdb}
ONLY_DUCKDB = {500_000_000}  # sizes other engines skip


# ---- the run ---------------------------------------------------------------------------------------
def run_pipelines(engines: list[str], sizes: list[int], data: Path, work: Path, args: argparse.Namespace) -> list[dict]:
    rows: list[dict] = []
    for n in sizes:
        events, gen_s = events_file(data, n)
        if gen_s:
            print(f"generated {n:,} events in {gen_s:.0f} s ({events.stat().st_size / 1e9:.2f} GB)", flush=True)
        for engine in engines:
            if n in ONLY_DUCKDB and engine != "duckdb":
                continue
            r = PIPELINE[engine](events, work, args)
            row = {"step": "pipeline", "engine": engine, "size": n, **_figures(r, n)}
            rows.append(row)
            print(row, flush=True)
    _ratios(rows)
    return rows


def run_training(engines: list[str], spines: list[int], work: Path, args: argparse.Namespace) -> list[dict]:
    if not spines:
        return []
    t = time.perf_counter()
    bench_training.generate(work, KEYS, COMMITS)
    print(f"generated 2 groups x {COMMITS} commits x {KEYS:,} keys in {time.perf_counter() - t:.0f} s", flush=True)
    rows: list[dict] = []
    for n in spines:
        spine = work / f"spine_{n}.parquet"
        bench_training.make_spine(spine, n, KEYS, COMMITS)
        for engine in engines:
            r = TRAINING[engine](work, spine, args)
            row = {"step": "training set", "engine": engine, "size": n, **_figures(r, n)}
            rows.append(row)
            print(row, flush=True)
        spine.unlink()
    _ratios(rows)
    return rows


def _figures(r: dict, n: int) -> dict:
    if r.get("status") != "ok":
        return {"status": r.get("status"), "peak_rss_gb": round(r.get("rss_mb", 0) / 1024, 2)}
    s = r["seconds"]
    out = {"seconds": round(s, 2), "per_s": round(n / s), "peak_rss_gb": round(r["rss_mb"] / 1024, 2)}
    if "jvm_rss_mb" in r:
        out["jvm_rss_gb"] = round(r["jvm_rss_mb"] / 1024, 2)
    for k in ("entities", "pairs_nnz", "stages"):
        if k in r:
            out[k] = r[k]
    return out


def _ratios(rows: list[dict]) -> None:
    """Cost ratio to the previous size of the same step and engine (time and peak memory), and the size
    ratio beside it: equal ratios mean linear growth."""
    last: dict[tuple[str, str], dict] = {}
    for row in rows:
        key = (row["step"], row["engine"])
        prev = last.get(key)
        if prev is not None and "seconds" in row and "seconds" in prev:
            row["size_x"] = round(row["size"] / prev["size"], 1)
            row["time_x"] = round(row["seconds"] / prev["seconds"], 2)
            row["rss_x"] = round(row["peak_rss_gb"] / max(prev["peak_rss_gb"], 1e-9), 2)
        last[key] = row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--engines", default="duckdb", help=f"comma-separated, of {sorted(PIPELINE)} (default duckdb)")
    ap.add_argument("--sizes", default=None, help="event counts, comma-separated (default 1M,4M,16M)")
    ap.add_argument("--spines", default=None, help="training-set spine rows (default 1M,10M; 0 = none)")
    ap.add_argument("--large", action="store_true", help="add 64M and 500M (DuckDB only) events and a 50M spine")
    ap.add_argument("--chunk-events", type=int, default=8_000_000,
                    help="DuckDB: events read whole up to this many, else streamed in chunks (default 8M)")
    ap.add_argument("--memory-limit", default=None, help="DuckDB memory limit for event reads (default 2GB)")
    ap.add_argument("--data", default=None,
                    help="folder keeping the generated events between runs (default: a temporary folder)")
    ap.add_argument("--workdir", default=None, help="where stores and spines go (default: a temporary folder)")
    ap.add_argument("--timeout", type=float, default=None, help="cap per child, seconds")
    ap.add_argument("--child-generate", nargs=2, help=argparse.SUPPRESS)
    ap.add_argument("--child-pipeline", nargs=5, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child_generate:
        child_generate(args.child_generate[0], int(args.child_generate[1]))
        return 0
    if args.child_pipeline:
        engine, events, root, chunk, limit = args.child_pipeline
        globals()[f"child_pipeline_{engine}"](events, root, int(chunk), limit)
        return 0
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    unknown = [e for e in engines if e not in PIPELINE]
    if unknown:
        ap.error(f"unknown engine(s) {unknown}; known: {sorted(PIPELINE)}")
    sizes = [int(x) for x in args.sizes.split(",")] if args.sizes else SIZES + (LARGE if args.large else [])
    spines = [int(x) for x in args.spines.split(",") if int(x)] if args.spines else (
        SPINES + (LARGE_SPINES if args.large else []))
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp, \
            tempfile.TemporaryDirectory(dir=args.workdir) as tmp_data:
        data = Path(args.data) if args.data else Path(tmp_data)
        data.mkdir(parents=True, exist_ok=True)
        rows = run_pipelines(engines, sizes, data, Path(tmp), args)
        rows += run_training(engines, spines, Path(tmp), args)
    print()
    table = [{k: v for k, v in r.items() if k != "stages"} for r in rows]
    name = "scale" if not (args.sizes or args.spines) else "scale_" + "_".join(f"{n // 1_000_000}m" for n in sizes)
    report(name, table, {"engines": engines, "sizes": sizes, "spines": spines, "items": N_ITEMS,
                            "events_per_user": EVENTS_PER_USER, "dim": 64, "chunk_events": args.chunk_events,
                            "memory_limit": args.memory_limit or "2GB (default)", "cpus": os.cpu_count(),
                            "date": datetime.now(UTC).isoformat(timespec="seconds"), "stages": [
                                {"step": r["step"], "engine": r["engine"], "size": r["size"],
                                 "stages": r.get("stages")} for r in rows]})
    return 0


if __name__ == "__main__":
    sys.exit(main())
