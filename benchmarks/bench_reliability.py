"""Reliability at full size: kill -9 at random points (200 times per operation), concurrent writers,
a full disk, and the serving latency during a hot reload.

    python benchmarks/bench_reliability.py                 # 200 kills per operation, 4 writers x 50 inserts
    python benchmarks/bench_reliability.py --trials 20     # a shorter run
    python benchmarks/bench_reliability.py --only reload   # only the hot-reload latency

* kill -9: a worker repeats an operation (insert, pipeline run, materialize, training-set save) and is
  killed at a random moment; then the store is checked (``store.check()``; rows against the commits'
  row counts; every acknowledged commit, view and saved version present; the next write). See
  :mod:`benchmarks._reliability`.
* concurrency: 4 processes x 50 inserts into one group; two processes running the same pipeline date.
* disk full: the file-size limit (RLIMIT_FSIZE) of the worker during insert, materialize and save.
* hot reload: a 200k-row group served over HTTP under a steady load from 2 client threads while a new
  commit is published and hot-reloaded (the view is built and checked in another process): the
  per-second p99 of the lookups during the reload against the quiet seconds before and after it (as
  many after it as it took), median and worst second of each.

Results: a table on stdout, JSON in benchmarks/results/reliability.json.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from benchmarks import _reliability as rel  # noqa: E402
from benchmarks._util import report  # noqa: E402

COMMIT_SCRIPT = """
import sys
import numpy as np, pyarrow as pa
from benchmarks._reliability import T0
from featurestore import FeatureStore
rows = int(sys.argv[2])
v = np.random.default_rng(2).standard_normal((rows, 64)).astype(np.float32)
FeatureStore(sys.argv[1]).feature_group("items", 1).insert(pa.table({
    "id": [f"k{i}" for i in range(rows)], "embedding": pa.FixedSizeListArray.from_arrays(pa.array(v.ravel()), 64)}),
    cutoff=T0)
"""
DELAYS = {"insert": 1.0, "pipeline": 2.5, "materialize": 1.5, "save": 1.5}


def kills(work: Path, trials: int, rows: int, kinds: list[str], scale: float = 1.0) -> list[dict[str, Any]]:
    out = []
    zygote = rel.Zygote()
    try:
        for kind in kinds:
            delay = DELAYS[kind] * scale
            root = work / f"kill-{kind}" / "s"
            root.parent.mkdir(parents=True)
            rel.setup(root, rows)
            tally = rel.Tally(kind)
            t = time.perf_counter()
            for seed in range(trials):
                rel.trial(zygote, kind, root, tally, seed=seed, rows=rows, max_delay=delay)
            row = tally.row() | {"seconds": round(time.perf_counter() - t, 1)}
            print(row, flush=True)
            out.append(row)
    finally:
        zygote.close()
    return out


def concurrency(work: Path, writers: int, inserts: int) -> list[dict[str, Any]]:
    from featurestore import FeatureStore

    root = work / "concurrency" / "s"
    root.parent.mkdir(parents=True)
    rel.setup(root, 200)
    zygote = rel.Zygote()
    try:
        fg = FeatureStore(root).feature_group("item_embeddings", 1)
        before = fg.count()
        acks = [a for w in rel.run_together(zygote, "inserts", root, list(range(1, writers + 1)), inserts) for a in w]
        landed = [a for a in acks if "run_id" in a]
        history = {c.run_id: c.commit for c in fg.history()}
        rows = [{"kind": f"{writers} writers x {inserts} inserts", "trials": len(acks), "landed": len(landed),
                 "refused_typed": sum("refused" in a for a in acks),
                 "lost": sum(a["run_id"] not in history for a in landed),
                 "duplicate_commits": len(landed) - len({a["commit"] for a in landed}),
                 "rows_ok": fg.count() == before + 50 * len(landed)}]
        dates = list(range(2, 12))
        duplicates = 0
        for day in dates:
            rel.run_together(zygote, "run", root, [day, day], 1)
        store = FeatureStore(root)
        for name in ("item_embeddings", "user_embeddings"):
            cutoffs = [c.cutoff for c in store.feature_group(name, 1).history()
                       if c.metadata.get("pipeline") == "reliability"]
            duplicates += len(cutoffs) - len(set(cutoffs))
        rows.append({"kind": f"2 processes x {len(dates)} pipeline dates", "trials": 2 * len(dates),
                     "duplicate_commits": duplicates})
    finally:
        zygote.close()
    return rows


def disk_full(work: Path) -> list[dict[str, Any]]:
    from featurestore import FeatureStore

    root = work / "full" / "s"
    root.parent.mkdir(parents=True)
    rel.setup(root, 200)
    zygote = rel.Zygote()
    out = []
    try:
        for kind in ("insert", "materialize", "save"):
            for limit in (20_000, 200_000, 2_000_000):
                res = rel.run_disk_full(zygote, kind, root, limit=limit, rows=50_000)
                store = FeatureStore(root)
                problems = store.check()
                store.feature_group("item_embeddings", 1).insert(rel.item_rows(5, 80_000_000 + limit), cutoff=rel.T0)
                out.append({"kind": f"disk full: {kind}", "limit_bytes": limit,
                            "raised": res.get("type", "nothing"), "typed": res.get("module") == "featurestore.errors",
                            "problems_after": len(problems), "next_write": "ok"})
                store.close()
    finally:
        zygote.close()
    return out


def reload_latency(work: Path, rows: int, seconds: float) -> dict[str, Any]:
    """Per-second p99 of HTTP lookups before and during a hot reload of a ``rows``-row group."""
    import httpx

    from featurestore import FeatureGroupSpec, FeatureStore

    root = work / "reload" / "s"
    store = FeatureStore(root)
    store.apply([FeatureGroupSpec.from_dict({
        "name": "items", "version": 1, "entity_keys": [{"name": "id", "type": "string"}],
        "features": [{"name": "embedding", "type": "vector", "dim": 64, "metric": "cosine"}],
        "expectations": {"vectors": {"embedding": {"drift": False}}}, "online": {"index": "flat"}})])
    fg = store.feature_group("items", 1)
    keys = [f"k{i}" for i in range(rows)]

    def commit(seed: int) -> None:
        import pyarrow as pa

        v = np.random.default_rng(seed).standard_normal((rows, 64)).astype(np.float32)
        fg.insert(pa.table({"id": keys, "embedding": pa.FixedSizeListArray.from_arrays(pa.array(v.ravel()), 64)}),
                  cutoff=rel.T0)

    commit(1)
    store.online("items")
    store.close()
    port = 18000 + os.getpid() % 1000
    proc = subprocess.Popen([sys.executable, "-m", "featurestore", "serve", "--root", str(root), "--port", str(port),
                             "--reload-interval", "0.5", "--log-level", "warning"], cwd=HERE.parent)
    samples: list[tuple[float, float]] = []
    stop = threading.Event()

    def load(seed: int) -> None:
        rng = np.random.default_rng(seed)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as http:
            while not stop.is_set():
                body = {"keys": [keys[i] for i in rng.integers(0, rows, 10)]}
                t = time.perf_counter()
                r = http.post("/feature-groups/items/lookup", json=body)
                samples.append((time.monotonic(), time.perf_counter() - t))
                assert r.status_code == 200

    try:
        for _ in range(600):
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        threads = [threading.Thread(target=load, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        time.sleep(seconds)
        # the new commit is written by another process (as a pipeline would): this one only sends load
        script = work / "reload" / "commit.py"
        script.write_text(COMMIT_SCRIPT)
        subprocess.run([sys.executable, str(script), str(root), str(rows)], check=True, cwd=HERE.parent,
                       env={**os.environ, "PYTHONPATH": str(HERE.parent)})
        started = time.monotonic()  # the commit landed: the server sees it and reloads
        while httpx.get(f"http://127.0.0.1:{port}/health").json()["feature_groups"]["items"] != 2:
            time.sleep(0.1)
        done = time.monotonic()
        time.sleep(max(seconds, done - started))  # as many quiet seconds after it as it took
        stop.set()
        for t in threads:
            t.join()
    finally:
        proc.terminate()
        proc.wait(60)
    quiet = [(s, d) for s, d in samples if s < started - 1 or s > done + 1]
    during = [(s, d) for s, d in samples if started <= s <= done]

    def p99s(part: list[tuple[float, float]]) -> list[float]:
        by_second: dict[int, list[float]] = {}
        for s, d in part:
            by_second.setdefault(int(s), []).append(d)
        return [float(np.percentile(v, 99)) * 1000 for v in by_second.values() if len(v) >= 20]

    pq, pd = p99s(quiet), p99s(during)

    def fig(values: list[float], how: Any) -> float | None:
        return round(float(how(values)), 2) if values else None

    return {"kind": f"hot reload of {rows:,} rows under load", "reload_seconds": round(done - started, 1),
            "quiet_seconds": len(pq), "p99_ms_quiet_median": fig(pq, np.median), "p99_ms_quiet_max": fig(pq, max),
            "p99_ms_during_median": fig(pd, np.median), "p99_ms_during_max": fig(pd, max),
            "max_ms_quiet": fig([d * 1000 for _, d in quiet], max),
            "max_ms_during": fig([d * 1000 for _, d in during], max), "requests": len(samples)}


def reload_stalls(work: Path, rows: int, seconds: float = 3.0) -> dict[str, Any]:
    """The longest stretch the serving interpreter is unavailable during a reload, free of the machine's
    other load: a thread in the serving process sleeps 1 ms in a loop and records the gaps, while the
    registry polls, builds (in a child process), opens, checks and swaps in the next commit of the
    store :func:`reload_latency` left (and drops the old view)."""
    from featurestore import FeatureStore
    from featurestore.server.reload import Registry, ReloadPolicy

    root = work / "reload" / "s"
    store = FeatureStore(root)
    registry = Registry(store, [("items", 1)], ReloadPolicy(interval=0))
    subprocess.run([sys.executable, str(work / "reload" / "commit.py"), str(root), str(rows)], check=True,
                   cwd=HERE.parent, env={**os.environ, "PYTHONPATH": str(HERE.parent)})
    gaps: list[tuple[float, float]] = []
    stop = threading.Event()

    def probe() -> None:
        last = time.perf_counter()
        while not stop.is_set():
            time.sleep(0.001)
            now = time.perf_counter()
            gaps.append((now, now - last))
            last = now

    built: list[float] = []
    build = registry.build

    def timed_build(*args: Any) -> Any:
        out = build(*args)
        built.append(time.perf_counter())
        return out

    registry.build = timed_build  # type: ignore[method-assign]
    thread = threading.Thread(target=probe)
    thread.start()
    time.sleep(seconds)
    started = time.perf_counter()
    swapped = registry.poll()
    done = time.perf_counter()
    time.sleep(seconds)
    stop.set()
    thread.join()
    registry.stop()
    store.close()
    during = [g * 1000 for t, g in gaps if started <= t <= done + 0.1]  # and the old view's release
    in_process = [g * 1000 for t, g in gaps if built[0] <= t <= done + 0.1]  # open, check, swap, release
    quiet = [g * 1000 for t, g in gaps if t < started or t > done + 0.1]
    return {"kind": f"interpreter stalls in the serving process, reload of {rows:,} rows", "swapped": swapped,
            "reload_seconds": round(done - started, 1), "open_check_swap_seconds": round(done - built[0], 2),
            "stall_ms_quiet_max": round(max(quiet), 1), "stall_ms_during_max": round(max(during), 1),
            "stall_ms_open_check_swap_max": round(max(in_process), 1),
            "stalls_over_20ms_quiet": sum(g > 20 for g in quiet),
            "stalls_over_20ms_during": sum(g > 20 for g in during)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=200, help="kills per operation (default 200)")
    ap.add_argument("--rows", type=int, default=2000, help="rows per insert in the kill trials")
    ap.add_argument("--writers", type=int, default=4)
    ap.add_argument("--inserts", type=int, default=50)
    ap.add_argument("--reload-rows", type=int, default=200_000)
    ap.add_argument("--only", choices=["kills", "concurrency", "full", "reload"], default=None)
    ap.add_argument("--delay-scale", type=float, default=1.0,
                    help="multiply the longest wait before a kill (a slow machine needs more to reach later writes)")
    ap.add_argument("--kinds", default=",".join(DELAYS), help="operations killed (default: all four)")
    ap.add_argument("--workdir", default=None)
    args = ap.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="fs-reliability-"))
    rows: list[dict[str, Any]] = []
    try:
        if args.only in (None, "reload"):
            rows.append(reload_latency(work, args.reload_rows, 5.0))
            print(rows[-1], flush=True)
            rows.append(reload_stalls(work, args.reload_rows))
            print(rows[-1], flush=True)
        if args.only in (None, "concurrency"):
            rows += concurrency(work, args.writers, args.inserts)
        if args.only in (None, "full"):
            rows += disk_full(work)
        if args.only in (None, "kills"):
            rows += kills(work, args.trials, args.rows, args.kinds.split(","), args.delay_scale)
    finally:
        report("reliability", rows, vars(args))
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
