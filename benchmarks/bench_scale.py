"""Scale: the reference pipeline and training sets as the data grows, with each engine's peak memory.

Events come from the synthetic generator written in blocks (100 events per user, 50k items), the
pipeline is the reference one (64-d co-occurrence model, user vectors, validation, two commits), each
run in a fresh child process: seconds, events/s and the child's peak RSS (VmHWM polled from /proc);
on DuckDB also the peak disk use of its temporary directory (``spill_gb``).
The cost ratio per size step (time and memory, size x4) shows how each grows: x4 means linear.
Training sets: 1M and 10M spine rows (50M with ``--large``) over two feature groups (100k keys x 30
commits, 64-d), the first training set over the commits (it builds the join cache) streamed to Parquet.

    python benchmarks/bench_scale.py                      # 1M, 4M, 16M events; 1M and 10M spines
    python benchmarks/bench_scale.py --sizes 1000000      # one size
    python benchmarks/bench_scale.py --large              # adds 64M and (DuckDB) 500M events, a 50M spine
    python benchmarks/bench_scale.py --engines duckdb     # engines, comma-separated
    python benchmarks/bench_scale.py --engines duckdb,spark   # with Spark local[2] (BENCH_SPARK_MASTER)

Each engine is one function (``pipeline_<engine>``, ``training_<engine>``) that runs a child and
returns a row; adding an engine is adding those two. On DuckDB, events beyond ``chunk_events`` (8M by
default) stay in DuckDB and are counted and aggregated in chunks, so memory does not grow with events
(docs/performance.md). ``--chunk-events`` changes that threshold for the run (e.g. to compare the two
paths at one size).
Results: a table on stdout, JSON in benchmarks/results/scale.json (scale_<sizes>.json with --sizes/--spines).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
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
def events_file(data: Path, n: int, per_user: float = EVENTS_PER_USER) -> tuple[Path, float]:
    """The synthetic events of size ``n`` (made once, kept in ``data``) and the seconds it took;
    ``per_user``: events per user (fewer: more entities for the same events)."""
    path = data / (f"events_{n}.parquet" if per_user == EVENTS_PER_USER else f"events_{n}_{per_user:g}pu.parquet")
    if path.exists():
        return path, 0.0
    cmd = [sys.executable, __file__, "--child-generate", str(path), str(n), str(per_user)]
    t = time.perf_counter()
    subprocess.run(cmd, check=True, env=_env())
    return path, time.perf_counter() - t


def child_generate(path: str, n: int, per_user: float = EVENTS_PER_USER) -> None:
    from featurestore.synthetic import write_purchase_histories

    tmp = path + ".partial"
    write_purchase_histories(tmp, n_users=max(1, int(n / per_user)), n_items=N_ITEMS, n_events=n, seed=0)
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
    store = FeatureStore(root, engine=DuckDBEngine(chunk_events=chunk_events, memory_limit=memory_limit or None,
                                                   temp_directory=os.environ.get(SPILL_ENV)))
    store.apply(str(REPO / "schemas"))
    t = time.perf_counter()
    result = pipeline.run(store, datetime.fromisoformat(CUTOFF), quiet=True)
    seconds = time.perf_counter() - t
    info = store.feature_group("item_embeddings", 1).history()[-1].metadata.get("model_info", {})
    print(json.dumps({"seconds": seconds, "events": result.events, "items": result.items,
                      "entities": result.entities_written, "pairs_nnz": info.get("pairs_nnz"),
                      "stages": result.seconds}))


def pipeline_duckdb(events: Path, work: Path, args: argparse.Namespace) -> dict:
    root, spill = work / "store_duckdb", work / "spill"
    shutil.rmtree(root, ignore_errors=True)
    cmd = [sys.executable, __file__, "--child-pipeline", "duckdb", str(events), str(root), str(args.chunk_events),
           args.memory_limit or ""]
    os.environ[SPILL_ENV] = str(spill)
    with SpillWatch(spill) as watch:
        r = bench_training.run_child(cmd, args.timeout)
    del os.environ[SPILL_ENV]
    r["spill_mb"] = watch.peak / 2**20
    shutil.rmtree(root, ignore_errors=True)
    shutil.rmtree(spill, ignore_errors=True)
    return r


SPILL_ENV = "BENCH_SPILL_DIR"  # the child's DuckDB temporary directory, watched by the parent


class SpillWatch:
    """The peak disk use (bytes allocated) of a folder while a child runs, polled every second."""

    def __init__(self, folder: Path):
        self.folder, self.peak = folder, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        while not self._stop.wait(1.0):
            total = 0
            for base, _, files in os.walk(self.folder):
                for f in files:
                    with contextlib.suppress(OSError):
                        total += os.stat(os.path.join(base, f)).st_blocks * 512
            self.peak = max(self.peak, total)

    def __enter__(self) -> SpillWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def training_duckdb(work: Path, spine: Path, args: argparse.Namespace) -> dict:
    out = work / "training_out.parquet"
    cmd = [sys.executable, str(HERE / "bench_training.py"), "--child", str(work), str(spine), str(out), "parquet"]
    shutil.rmtree(work / "store" / "_cache" / "joins", ignore_errors=True)  # the first training set over them
    r = bench_training.run_child(cmd, args.timeout)
    out.unlink(missing_ok=True)
    return r


# ---- Spark -----------------------------------------------------------------------------------------
def _spark_engine(driver_memory: str):  # type: ignore[no-untyped-def]
    from featurestore.engine.spark import SparkEngine, SparkSettings

    engine = SparkEngine(settings=SparkSettings.parse(SPARK_MASTER, {
        "spark.ui.enabled": "false", "spark.driver.memory": driver_memory, "spark.sql.shuffle.partitions": "16",
        "spark.ui.showConsoleProgress": "false"}))
    engine.session.sparkContext.setLogLevel("ERROR")
    return engine


def _jvm_peak_mb(engine) -> float:  # type: ignore[no-untyped-def]
    """Peak RSS (VmHWM) of the Spark JVM this process started (local mode: driver and executors)."""
    pids = [engine.session.sparkContext._gateway.proc.pid]
    seen = 0.0
    while pids:
        pid = pids.pop()
        try:
            status = Path(f"/proc/{pid}/status").read_text()
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        except OSError:
            continue
        if b"java" in Path(f"/proc/{pid}/cmdline").read_bytes():
            for line in status.splitlines():
                if line.startswith("VmHWM:"):
                    seen = max(seen, int(line.split()[1]) / 1024)
        pids += [int(c) for c in children]
    return seen


def child_pipeline_spark(events: str, root: str, chunk_events: int, memory_limit: str) -> None:
    """One pipeline run on Spark (``SPARK_MASTER``, driver memory ``memory_limit``) in this child."""
    from featurestore import FeatureStore
    from featurestore.pipeline import load_pipeline

    os.environ["FEATURESTORE_EVENTS"] = events
    pipeline = load_pipeline(str(REPO / "pipelines" / "purchase_embeddings.py"))
    t0 = time.perf_counter()
    engine = _spark_engine(memory_limit or "2g")
    start = time.perf_counter() - t0
    store = FeatureStore(root, engine=engine)
    store.apply(str(REPO / "schemas"))
    t = time.perf_counter()
    result = pipeline.run(store, datetime.fromisoformat(CUTOFF), quiet=True, engine=engine)
    seconds = time.perf_counter() - t
    print(json.dumps({"seconds": seconds, "events": result.events, "items": result.items, "session_s": start,
                      "entities": result.entities_written, "stages": result.seconds,
                      "jvm_rss_mb": _jvm_peak_mb(engine)}))


def pipeline_spark(events: Path, work: Path, args: argparse.Namespace) -> dict:
    root = work / "store_spark"
    shutil.rmtree(root, ignore_errors=True)
    n = int(events.stem.split("_")[1])  # events_<n>[_<per user>pu]
    memory = "4g" if n >= 64_000_000 else "2g"  # the bound: 64M events with spark.driver.memory=4g
    cmd = [sys.executable, __file__, "--child-pipeline", "spark", str(events), str(root), str(args.chunk_events),
           memory]
    r = bench_training.run_child(cmd, args.timeout)
    shutil.rmtree(root, ignore_errors=True)
    return r


def child_training_spark(work: str, spine: str, out: str) -> None:
    """bench_training's training set (two groups, ttl) on Spark, streamed to Parquet, in this child."""
    from featurestore import FeatureStore

    engine = _spark_engine("2g")
    store = FeatureStore(Path(work) / "store")
    t = time.perf_counter()
    ts = store.training_set(spine, ["bench_users:1", "bench_items:1"], event_time="label_time",
                            ttl=bench_training.TTL, engine=engine)
    rows = ts.to_parquet(out)
    print(json.dumps({"seconds": time.perf_counter() - t, "rows": rows, "pins": ts.pins,
                      "jvm_rss_mb": _jvm_peak_mb(engine)}))


def training_spark(work: Path, spine: Path, args: argparse.Namespace) -> dict:
    out = work / "training_out_spark.parquet"
    cmd = [sys.executable, __file__, "--child-training-spark", str(work), str(spine), str(out)]
    r = bench_training.run_child(cmd, args.timeout)
    out.unlink(missing_ok=True)
    return r


SPARK_MASTER = os.environ.get("BENCH_SPARK_MASTER", "local[2]")
PIPELINE = {"duckdb": pipeline_duckdb, "spark": pipeline_spark}
TRAINING = {"duckdb": training_duckdb, "spark": training_spark}
ONLY_DUCKDB = {500_000_000}  # sizes other engines skip


# ---- the run ---------------------------------------------------------------------------------------
def run_pipelines(engines: list[str], sizes: list[int], data: Path, work: Path, args: argparse.Namespace) -> list[dict]:
    rows: list[dict] = []
    for n in sizes:
        events, gen_s = events_file(data, n, args.events_per_user)
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
    if "spill_mb" in r:
        out["spill_gb"] = round(r["spill_mb"] / 1024, 2)
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


def _spark_summary(rows: list[dict]) -> None:
    """Spark's overhead over DuckDB at the smallest size of each step, and (an estimate, not a
    measurement) the time of 1B pipeline events on 10 and 100 executors of 4 cores each, from the
    per-core rate measured here (local[2]: 2 cores); shuffles over a network are not in that rate."""
    for step in ("pipeline", "training set"):
        mine = sorted((r for r in rows if r["step"] == step and r["engine"] == "spark" and "seconds" in r),
                      key=lambda r: r["size"])
        if not mine:
            continue
        first = mine[0]
        duck = next((r for r in rows if r["step"] == step and r["engine"] == "duckdb" and "seconds" in r
                     and r["size"] == first["size"]), None)
        if duck is not None:
            print(f"{step}: Spark local[2] / DuckDB at {first['size']:,}: {first['seconds'] / duck['seconds']:.1f}x "
                  f"time ({first['seconds']:.1f} s vs {duck['seconds']:.1f} s)")
        if step == "pipeline":
            best = mine[-1]
            per_core = best["size"] / best["seconds"] / 2
            for executors in (10, 100):
                est = 1e9 / (per_core * executors * 4)
                print(f"estimate: 1B events on {executors} executors x 4 cores ~ {est / 60:.1f} min "
                      f"(from {per_core:,.0f} events/s per core at {best['size']:,}; network shuffles not included)")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--engines", default="duckdb", help=f"comma-separated, of {sorted(PIPELINE)} (default duckdb)")
    ap.add_argument("--sizes", default=None, help="event counts, comma-separated (default 1M,4M,16M; 0 = none)")
    ap.add_argument("--spines", default=None, help="training-set spine rows (default 1M,10M; 0 = none)")
    ap.add_argument("--large", action="store_true", help="add 64M and 500M (DuckDB only) events and a 50M spine")
    ap.add_argument("--chunk-events", type=int, default=8_000_000,
                    help="DuckDB: events read whole up to this many, else streamed in chunks (default 8M)")
    ap.add_argument("--memory-limit", default=None, help="DuckDB memory limit for event reads (default 2GB)")
    ap.add_argument("--data", default=None,
                    help="folder keeping the generated events between runs (default: a temporary folder)")
    ap.add_argument("--workdir", default=None, help="where stores and spines go (default: a temporary folder)")
    ap.add_argument("--timeout", type=float, default=None, help="cap per child, seconds")
    ap.add_argument("--events-per-user", type=float, default=EVENTS_PER_USER,
                    help=f"events per generated user (default {EVENTS_PER_USER}; fewer: an entity-heavy log, e.g. "
                         "1.3333333 gives 32M events 24M users, 4.2M of them with events)")
    ap.add_argument("--child-generate", nargs=3, help=argparse.SUPPRESS)
    ap.add_argument("--child-pipeline", nargs=5, help=argparse.SUPPRESS)
    ap.add_argument("--child-training-spark", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child_training_spark:
        child_training_spark(*args.child_training_spark)
        return 0
    if args.child_generate:
        child_generate(args.child_generate[0], int(args.child_generate[1]), float(args.child_generate[2]))
        return 0
    if args.child_pipeline:
        engine, events, root, chunk, limit = args.child_pipeline
        globals()[f"child_pipeline_{engine}"](events, root, int(chunk), limit)
        return 0
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    unknown = [e for e in engines if e not in PIPELINE]
    if unknown:
        ap.error(f"unknown engine(s) {unknown}; known: {sorted(PIPELINE)}")
    sizes = [int(x) for x in args.sizes.split(",") if int(x)] if args.sizes else SIZES + (LARGE if args.large else [])
    spines = [int(x) for x in args.spines.split(",") if int(x)] if args.spines else (
        SPINES + (LARGE_SPINES if args.large else []))
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp, \
            tempfile.TemporaryDirectory(dir=args.workdir) as tmp_data:
        data = Path(args.data) if args.data else Path(tmp_data)
        data.mkdir(parents=True, exist_ok=True)
        rows = run_pipelines(engines, sizes, data, Path(tmp), args)
        rows += run_training(engines, spines, Path(tmp), args)
    print()
    _spark_summary(rows)
    table = [{k: v for k, v in r.items() if k != "stages"} for r in rows]
    name = "scale" if not (args.sizes or args.spines) else "scale_" + "_".join(
        [f"{n // 1_000_000}m" for n in sizes] + [f"spine{n // 1_000_000}m" for n in spines])
    report(name, table, {"engines": engines, "sizes": sizes, "spines": spines, "items": N_ITEMS,
                            "events_per_user": args.events_per_user, "dim": 64, "chunk_events": args.chunk_events,
                            "memory_limit": args.memory_limit or "2GB (default)", "cpus": os.cpu_count(),
                            "date": datetime.now(UTC).isoformat(timespec="seconds"), "stages": [
                                {"step": r["step"], "engine": r["engine"], "size": r["size"],
                                 "stages": r.get("stages")} for r in rows]})
    return 0


if __name__ == "__main__":
    sys.exit(main())
