"""Training-set assembly: point-in-time joins of a spine against two feature groups, side by side with
Feast's ``get_historical_features`` (offline stores ``duckdb`` and the default ``file``/dask) on the
same Parquet data, in the same run; every side is checked against a reference join (pandas merge_asof).

    python benchmarks/bench_training.py            # 1M and 10M spines, 2 groups x 30 commits x 100k keys x 64-d
    python benchmarks/bench_training.py --quick    # a small run
    python benchmarks/bench_training.py --spines 1000000 --feast-stores duckdb   # the 1M spine, Feast duckdb only

Each side runs in its own child process: wall time of the call (not the interpreter start) and the
child's peak RSS (VmHWM polled from /proc every 50 ms). On the first spine our Arrow side runs
``--repeat`` times (default 3) with no join cache (each the first training set over the commits: it
leaves the index behind, deleted again before the next), then ``--repeat`` times with it, then once
with the whole training-set cache deleted; Feast's
duckdb store runs ``--repeat`` times. Each run is a fresh process; the median is reported.
Feast runs with the interpreter from $FEATURESTORE_PEERS_PYTHON, else .venv-peers/bin/python
(``make peers``).
Results: a table on stdout, JSON in benchmarks/results/.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

HERE = Path(__file__).resolve().parent
T0 = datetime(2026, 10, 1, tzinfo=UTC)
DAY_US = 86_400_000_000
DIM = 64
TTL = timedelta(days=2)
GROUPS = (("bench_users", "user_id", "users"), ("bench_items", "item_id", "items"))


def peers_python() -> str | None:
    exe = os.environ.get("FEATURESTORE_PEERS_PYTHON") or str(HERE.parent / ".venv-peers" / "bin" / "python")
    return exe if os.path.exists(exe) else None


def spec(name: str, key: str) -> dict:
    return {"name": name, "version": 1, "description": "benchmark", "entity_keys": [{"name": key, "type": "int64"}],
            "event_time": "event_time", "policy": "warn",
            "features": [{"name": "embedding", "type": "vector", "dim": DIM, "metric": "dot"}]}


def commit_vectors(group: int, commit: int, keys: int) -> np.ndarray:
    return np.random.default_rng(1000 * group + commit).standard_normal((keys, DIM), dtype=np.float32)


def generate(work: Path, keys: int, commits: int) -> dict:
    """Our feature groups (one commit per day, every key) and the same rows as Feast Parquet files.
    Returns per group the row checksums (sum of each vector) in (commit, key) order."""
    from featurestore import FeatureStore
    from featurestore.schema import FeatureGroupSpec

    store = FeatureStore(work / "store")
    store.apply([FeatureGroupSpec.from_dict(spec(n, k)) for n, k, _ in GROUPS])
    sums = {}
    for g, (name, key, feast_name) in enumerate(GROUPS):
        fg = store.feature_group(name, 1)
        writer = None
        sums[name] = np.empty(commits * keys, np.float32)
        for c in range(commits):
            v = commit_vectors(g, c, keys)
            sums[name][c * keys:(c + 1) * keys] = v.sum(axis=1)
            et = T0 + timedelta(days=c)
            emb = pa.FixedSizeListArray.from_arrays(pa.array(v.ravel()), DIM)
            ids = pa.array(np.arange(keys, dtype=np.int64))
            fg.insert(pa.table({key: ids, "event_time": pa.array([et] * keys, pa.timestamp("us", tz="UTC")),
                                "embedding": emb}))
            created = pa.array([T0 + timedelta(days=c, hours=1)] * keys, pa.timestamp("us", tz="UTC"))
            batch = pa.table({key: ids, "event_timestamp": pa.array([et] * keys, pa.timestamp("us", tz="UTC")),
                              "created": created,
                              "embedding": pa.ListArray.from_arrays(
                                  pa.array(np.arange(0, keys * DIM + 1, DIM, dtype=np.int32)), pa.array(v.ravel()))})
            if writer is None:
                writer = pq.ParquetWriter(work / f"feast_{feast_name}.parquet", batch.schema)
            writer.write_table(batch)
        writer.close()
    store.close()
    return sums


def make_spine(path: Path, n: int, keys: int, commits: int, seed: int = 7) -> None:
    """Random (user, item, time, label) rows: 10% of keys absent from the groups, 10% of times exactly on
    a commit's event_time, times before the first and after the last commit (empty TTL windows), and
    1% duplicated rows."""
    rng = np.random.default_rng(seed)
    us = rng.integers(-DAY_US, (commits + 3) * DAY_US, n)
    snap = rng.random(n) < 0.1
    us[snap] = (us[snap] // DAY_US) * DAY_US
    dup = rng.random(n) < 0.01
    src = np.nonzero(dup)[0]
    users = rng.integers(0, int(keys * 1.1), n)
    items = rng.integers(0, int(keys * 1.1), n)
    users[src[1:]] = users[src[:-1]]
    items[src[1:]] = items[src[:-1]]
    us[src[1:]] = us[src[:-1]]
    t0 = int(T0.timestamp() * 1_000_000)
    table = pa.table({
        "row_id": np.arange(n, dtype=np.int64),
        "user_id": users, "item_id": items,
        "label_time": pa.array(us + t0, pa.timestamp("us", tz="UTC")),
        "label": rng.integers(0, 2, n).astype(np.int8),
    })
    pq.write_table(table, path, row_group_size=1 << 20)


def reference(spine_path: Path, keys: int, commits: int) -> dict[str, np.ndarray]:
    """The reference join (pandas merge_asof, backward, exact matches allowed, then the TTL): per group,
    the matched feature row (commit * keys + key) for each spine row, -1 when none."""
    import pandas as pd

    spine = pq.read_table(spine_path, columns=["row_id", "user_id", "item_id", "label_time"]).to_pandas()
    out = {}
    for name, key, _ in GROUPS:
        ids = np.tile(np.arange(keys, dtype=np.int64), commits)
        feat = pd.DataFrame({key: ids, "ft": pd.to_datetime(
            np.repeat(np.arange(commits), keys) * DAY_US + int(T0.timestamp() * 1e6), unit="us", utc=True),
            "row": np.arange(commits * keys)}).sort_values("ft", kind="stable")
        left = spine[["row_id", key, "label_time"]].sort_values("label_time", kind="stable")
        m = pd.merge_asof(left, feat, left_on="label_time", right_on="ft", by=key, direction="backward",
                          allow_exact_matches=True)
        ok = m["ft"].notna() & (m["ft"] >= m["label_time"] - TTL)
        row = np.where(ok, m["row"].fillna(-1), -1).astype(np.int64)
        res = np.full(len(spine), -1, np.int64)
        res[m["row_id"].to_numpy()] = row
        out[name] = res
    return out


def check(result: Path, ref: dict[str, np.ndarray], sums: dict[str, np.ndarray], columns: dict[str, str]) -> dict:
    """Compare a result file with the reference join (row_id aligned): rows returned, rows missing,
    rows whose vectors differ (wrong row joined, or a value where the reference has none, or none where
    it has one)."""
    n = len(next(iter(ref.values())))
    seen = np.zeros(n, bool)
    wrong = 0
    rows = 0
    f = pq.ParquetFile(result)
    for batch in f.iter_batches(batch_size=1 << 18, columns=["row_id", *columns.values()]):
        rid = batch.column("row_id").to_numpy()
        rows += len(rid)
        seen[rid] = True
        bad = np.zeros(len(rid), bool)
        for name, col in columns.items():
            arr = batch.column(col)
            valid = ~np.asarray(arr.is_null().to_numpy(zero_copy_only=False))
            expect = ref[name][rid]
            bad |= valid != (expect >= 0)
            both = valid & (expect >= 0)
            if both.any():
                flat = arr.filter(pa.array(both)).flatten().to_numpy().astype(np.float32).reshape(-1, DIM)
                bad[np.nonzero(both)[0]] |= flat.sum(axis=1) != sums[name][expect[both]]
        wrong += int(bad.sum())
    return {"rows": rows, "missing": int(n - seen.sum()), "wrong": wrong}


def _vm_hwm_mb(pid: int) -> float:
    """The process's peak resident set so far (Linux /proc), in MB; 0 when unavailable."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def run_child(cmd: list[str], timeout: float | None) -> dict:
    """Run a child; return its JSON line plus its peak RSS (MB), or a timeout/failure record."""
    t = time.perf_counter()
    with tempfile.TemporaryFile(mode="w+") as errfile:  # a pipe could fill up and block a chatty child
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=errfile, text=True)
        deadline = None if timeout is None else time.monotonic() + timeout
        hwm = 0.0
        while True:
            hwm = max(hwm, _vm_hwm_mb(proc.pid))
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if deadline is not None and time.monotonic() > deadline:
                proc.kill()
                _, status, usage = os.wait4(proc.pid, 0)
                return {"status": f"timeout after {timeout:.0f} s", "rss_mb": hwm or usage.ru_maxrss / 1024}
            time.sleep(0.05)
        errfile.seek(0)
        out, err = proc.stdout.read(), errfile.read()
    # VmHWM of the child's own (post-exec) memory: ru_maxrss would include the parent's RSS at fork
    rss = hwm or usage.ru_maxrss / 1024
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        return {"status": f"failed ({code}): {err.strip().splitlines()[-1] if err.strip() else ''}",
                "rss_mb": rss, "wall": time.perf_counter() - t}
    doc = json.loads(out.strip().splitlines()[-1])
    doc.update(status="ok", rss_mb=rss)
    return doc


def repeated(cmd: list[str], timeout: float | None, times: int, before: Callable[[], None] | None = None) -> dict:
    """:func:`run_child` ``times`` times (calling ``before`` ahead of each); the run with the median
    time, with every time in ``runs`` and the largest peak RSS (a failed run is returned as it is)."""
    results = []
    for _ in range(max(1, times)):
        if before is not None:
            before()
        r = run_child(cmd, timeout)
        if r["status"] != "ok":
            return r
        results.append(r)
    results.sort(key=lambda r: r["seconds"])
    mid = dict(results[len(results) // 2])
    mid["runs"] = [round(r["seconds"], 3) for r in results]
    mid["rss_mb"] = max(r["rss_mb"] for r in results)
    return mid


def child_ours(work: str, spine: str, out: str, mode: str) -> None:
    """Our side: spine Parquet in, Arrow table out (``arrow``) or streamed to Parquet (``parquet``)."""
    from featurestore import FeatureStore

    store = FeatureStore(Path(work) / "store")
    t = time.perf_counter()
    ts = store.training_set(spine, ["bench_users:1", "bench_items:1"], event_time="label_time", ttl=TTL)
    if mode.startswith("arrow"):
        table = ts.to_arrow()
        seconds = time.perf_counter() - t
        rows = table.num_rows
        pq.write_table(table, out)
    else:
        rows = ts.to_parquet(out)
        seconds = time.perf_counter() - t
    print(json.dumps({"seconds": seconds, "rows": rows, "pins": ts.pins}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small run: 10k keys x 5 commits, 100k spine")
    ap.add_argument("--workdir", default=None, help="where to write the data (default: a temporary folder)")
    ap.add_argument("--feast-timeout", type=float, default=600, help="cap per Feast run, seconds (default 600)")
    ap.add_argument("--file-store-spine", type=int, default=None,
                    help="spine rows for Feast's file store (default: the smallest spine)")
    ap.add_argument("--spines", default=None,
                    help="comma-separated spine sizes (default: 1000000,10000000; --quick: 100000)")
    ap.add_argument("--feast-stores", default="duckdb,file",
                    help="Feast offline stores to run, comma-separated (default: duckdb,file)")
    ap.add_argument("--repeat", type=int, default=3,
                    help="runs of our Arrow side and of Feast's duckdb store on the first spine; the median "
                         "is reported (default 3)")
    ap.add_argument("--child", nargs=4, metavar=("WORK", "SPINE", "OUT", "MODE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child_ours(*args.child)
        return
    keys, commits = (10_000, 5) if args.quick else (100_000, 30)
    spines = [100_000] if args.quick else [1_000_000, 10_000_000]
    if args.spines:
        spines = [int(x) for x in args.spines.split(",")]
    feast_stores = [x.strip() for x in args.feast_stores.split(",") if x.strip()]
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        work = Path(tmp)
        t = time.perf_counter()
        sums = generate(work, keys, commits)
        gen_s = time.perf_counter() - t
        print(f"generated 2 groups x {commits} commits x {keys:,} keys x {DIM}-d in {gen_s:.1f} s", flush=True)
        rows, peers = [], peers_python()
        cols = {"bench_users": "bench_users__embedding", "bench_items": "bench_items__embedding"}
        fcols = {"bench_users": "users__embedding", "bench_items": "items__embedding"}
        for n in spines:
            spine = work / f"spine_{n}.parquet"
            make_spine(spine, n, keys, commits)
            ref = reference(spine, keys, commits)
            os.sync()  # the GBs just written go to disk now, not during the first timed run
            # "arrow-first": the first training set after the inserts (they cached each file's vectors;
            # it reads the Parquet files and leaves a join cache behind); "arrow": later ones (they map it);
            # "arrow-cold": the whole cache deleted, so every vector is decoded from Parquet again
            modes = ["arrow-first", "arrow", "arrow-cold", "parquet"] if n == spines[0] else ["parquet"]
            for mode in modes:
                out = work / f"ours_{n}_{mode}.parquet"
                if mode == "arrow-cold":  # no decoded vectors or join cache on disk: rebuild them all
                    shutil.rmtree(work / "store" / "_cache", ignore_errors=True)
                cmd = [sys.executable, __file__, "--child", str(work), str(spine), str(out),
                       mode.removesuffix("-first")]
                forget = functools.partial(shutil.rmtree, work / "store" / "_cache" / "joins", ignore_errors=True)
                r = repeated(cmd, None, args.repeat if mode in ("arrow", "arrow-first") else 1,
                             before=forget if mode == "arrow-first" else None)
                if r["status"] == "ok":
                    r.update(check(out, ref, sums, cols))
                    out.unlink()
                label = {"arrow-first": "Arrow, first training set", "arrow-cold": "Arrow, cache deleted",
                         "arrow": "Arrow", "parquet": "to_parquet"}[mode]
                rows.append({"side": f"featurestore ({label})",
                             "spine": n, **r})
                print(rows[-1], flush=True)
            if peers is None or n > 1_000_000:
                continue
            stores = [("duckdb", n)] if "duckdb" in feast_stores else []
            file_n = args.file_store_spine or min(spines)
            if file_n == n and "file" in feast_stores:
                stores.append(("file", n))
            for store_type, _ in stores:
                out = work / f"feast_{store_type}_{n}.parquet"
                cmd = [peers, str(HERE / "_feast_training.py"), str(work), str(spine), str(out), store_type,
                       str(TTL.total_seconds())]
                r = repeated(cmd, args.feast_timeout, args.repeat if store_type == "duckdb" else 1)
                if r["status"] == "ok":
                    r.update(check(out, ref, sums, fcols))
                rows.append({"side": f"Feast 0.67 ({store_type} offline store)", "spine": n, **r})
                print(rows[-1], flush=True)
    report(rows, keys, commits, gen_s, peers is not None)


def report(rows: list[dict], keys: int, commits: int, gen_s: float, with_peers: bool) -> None:
    print(f"\nTraining set: spine x 2 feature groups ({commits} commits x {keys:,} keys x {DIM}-d each), "
          f"TTL {TTL.days} d")
    head = f"{'side':34} {'spine':>11} {'seconds':>8} {'rows/s':>11} {'peak RSS MB':>11} {'rows':>11} " \
           f"{'missing':>8} {'wrong':>8}  status"
    print(head)
    print("-" * len(head))
    ours = {r["spine"]: r["seconds"] for r in rows if r["side"].endswith("(Arrow)") and r["status"] == "ok"}
    cold = {r["spine"]: r["seconds"] for r in rows if r["side"].endswith("(Arrow, cache deleted)")
            and r["status"] == "ok"}
    first = {r["spine"]: r["seconds"] for r in rows if r["side"].endswith("(Arrow, first training set)")
             and r["status"] == "ok"}
    for r in rows:
        s = r.get("seconds")
        print(f"{r['side']:34} {r['spine']:>11,} {s if s is None else round(s, 2)!s:>8} "
              f"{(r['spine'] / s if s else 0):>11,.0f} {r['rss_mb']:>11,.0f} {r.get('rows', '-')!s:>11} "
              f"{r.get('missing', '-')!s:>8} {r.get('wrong', '-')!s:>8}  {r['status']}")
        if "Feast" in r["side"] and r["spine"] in ours:
            capped = r["status"].startswith("timeout")
            feast_s = float(r["status"].split()[2]) if capped else s
            if feast_s:
                r["speedup"] = feast_s / ours[r["spine"]]
                r["speedup_cache_deleted"] = feast_s / cold[r["spine"]] if r["spine"] in cold else None
                r["speedup_first"] = feast_s / first[r["spine"]] if r["spine"] in first else None
                more = ">= " if capped else ""
                print(f"{'':34} featurestore is {more}{r['speedup']:.1f}x faster, {more}"
                      f"{r['speedup_first'] or 0:.1f}x on its first training set, {more}"
                      f"{r['speedup_cache_deleted'] or 0:.1f}x with its cache deleted"
                      f"{' (Feast capped)' if capped else ''}")
    if not with_peers:
        print("Feast not run: set FEATURESTORE_PEERS_PYTHON or run `make peers`")
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    path = out / f"training_{datetime.now(UTC):%Y%m%dT%H%M%S}.json"
    path.write_text(json.dumps({"keys": keys, "commits": commits, "dim": DIM, "ttl_days": TTL.days,
                                "generate_seconds": gen_s, "rows": rows}, indent=2, default=str))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
