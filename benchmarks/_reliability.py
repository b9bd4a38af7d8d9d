"""Kill -9 trials, shared by ``benchmarks/bench_reliability.py`` (200 kills per operation) and
``tests/test_reliability.py`` (a few): a worker process repeats one operation (insert, pipeline run,
materialize, training-set save) on a store and records each one it finished (its acknowledgement) in a
file; it is killed with SIGKILL at a random moment; then the store is checked:

* corrupt: ``store.check()`` finds a damaged table, view, cache or saved training set;
* half commits: a table's rows differ from the sum of its commits' row counts;
* lost: an acknowledged commit, view or saved version is not in the store;
* next write: an insert (and the operation itself) succeeds afterwards.

Workers are forked from one "zygote" process that imported featurestore once, so a trial costs the
operation, not an interpreter start (the zygote touches no store: nothing is shared with a child).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
T0 = datetime(2026, 10, 1, tzinfo=UTC)
KINDS = ("insert", "pipeline", "materialize", "save")



def setup(root: Path, rows: int) -> None:
    """A store with the repository's schemas, one commit in each group, a view and a saved training set,
    and the events a pipeline reads (``<root>.events.parquet``)."""
    import pyarrow.parquet as pq

    from featurestore import FeatureStore
    from featurestore.synthetic import purchase_histories

    store = FeatureStore(root)
    store.apply(ROOT / "schemas")
    store.feature_group("item_embeddings", 1).insert(item_rows(rows, 0), cutoff=T0)
    store.online("item_embeddings")
    store.save_training_set("ctr", spine(rows), ["item_embeddings:1"], event_time="t")
    store.close()
    events = purchase_histories(n_users=300, n_items=150, n_events=15_000, n_categories=6, days=12, start=T0,
                                seed=3)
    pq.write_table(events.events, f"{root}.events.parquet")


def item_rows(n: int, start: int, seed: int = 0) -> Any:
    import numpy as np
    import pyarrow as pa

    v = np.random.default_rng(seed).standard_normal((n, 64)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return pa.table({"item_id": [f"r{start + i}" for i in range(n)],
                     "embedding": pa.FixedSizeListArray.from_arrays(pa.array(v.ravel()), 64),
                     "n_events": pa.array(np.arange(n, dtype=np.int64)),
                     "last_event_time": pa.array([T0] * n, pa.timestamp("us", tz="UTC"))})


def spine(rows: int) -> Any:
    import pyarrow as pa

    n = max(1000, rows * 4)
    return pa.table({"item_id": [f"r{i % rows}" for i in range(n)],
                     "t": pa.array([T0 + timedelta(days=30)] * n, pa.timestamp("us", tz="UTC"))})


def disk_full(kind: str, root: str, out: str, limit: int, rows: int) -> None:
    """Try ``kind`` (insert, materialize, save) once with files limited to ``limit`` bytes (RLIMIT_FSIZE:
    a write past it fails with EFBIG, as on a full disk); write what happened to ``out`` as JSON."""
    import resource

    from featurestore import FeatureStore

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails instead of killing us
    store = FeatureStore(root)
    fg = store.feature_group("item_embeddings", 1)
    batch = item_rows(rows, 30_000_000, 7)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
    try:
        if kind == "insert":
            fg.insert(batch, cutoff=T0)
        elif kind == "materialize":
            resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
            fg.insert(batch, cutoff=T0)  # a new commit to build a view of
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
            store.online("item_embeddings")
        else:
            store.save_training_set("ctr", spine(rows * 4), ["item_embeddings:1"], event_time="t")
        result = {"ok": True}
    except Exception as exc:
        result = {"type": type(exc).__name__, "module": type(exc).__module__, "message": str(exc)}
    resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    with open(out, "w") as f:
        f.write(json.dumps(result))


def finite(kind: str, root: str, acks: str, seed: int, count: int) -> None:
    """Work that ends by itself, for the concurrency trials: ``inserts`` (``count`` inserts of 50 rows,
    each acknowledged with its run id, or the typed error it raised) or ``run`` (the reliability pipeline
    once at day ``seed``, without --force: its status)."""
    from featurestore import FeatureStore
    from featurestore.engine.events import EventSource
    from featurestore.errors import FeatureStoreError
    from featurestore.pipeline import Pipeline

    store = FeatureStore(root)
    with open(acks, "a", buffering=1) as out:
        for i in range(count if kind == "inserts" else 1):
            try:
                if kind == "inserts":
                    c = store.feature_group("item_embeddings", 1).insert(
                        item_rows(50, 40_000_000 + seed * 100_000 + i * 50, i), cutoff=T0)
                    ack = {"group": "item_embeddings", "run_id": c.run_id, "commit": c.commit}
                else:
                    result = Pipeline("reliability", EventSource(f"{root}.events.parquet")).run(
                        store, T0 + timedelta(days=seed), quiet=True)
                    ack = {"status": result.status, "runs": [[c.feature_group, c.run_id] for c in result.commits]}
            except FeatureStoreError as exc:
                ack = {"refused": f"{type(exc).__name__}: {exc}"}
            out.write(json.dumps(ack) + "\n")


def work(kind: str, root: str, acks: str, seed: int, rows: int) -> None:
    """Repeat ``kind`` on the store at ``root`` forever, appending a JSON line to ``acks`` after each."""
    from featurestore import FeatureStore
    from featurestore.engine.events import EventSource
    from featurestore.pipeline import Pipeline

    store = FeatureStore(root)
    with open(acks, "a", buffering=1) as out:
        for i in range(1_000_000):
            if kind == "insert":
                c = store.feature_group("item_embeddings", 1).insert(
                    item_rows(rows, 10_000_000 * (seed + 1) + i * rows, seed * 1000 + i), cutoff=T0)
                ack = {"group": "item_embeddings", "run_id": c.run_id}
            elif kind == "pipeline":
                # one date run again and again (--force): every run commits anew, from the same events
                result = Pipeline("reliability", EventSource(f"{root}.events.parquet")).run(
                    store, T0 + timedelta(days=8), quiet=True, force=True)
                ack = {"runs": [[c.feature_group, c.run_id] for c in result.commits]}
            elif kind == "materialize":
                fg = store.feature_group("item_embeddings", 1)
                if i % 2 == 0:
                    fg.insert(item_rows(rows, 20_000_000 * (seed + 1) + i * rows, i), cutoff=T0)
                path = store.online("item_embeddings").path
                ack = {"view": str(path)}
            else:
                saved = store.save_training_set("ctr", spine(rows), ["item_embeddings:1"], event_time="t")
                ack = {"saved": saved.version}
            out.write(json.dumps(ack) + "\n")


class Zygote:
    """The process that forks workers."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, __file__], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        if line != "ready":
            raise RuntimeError(f"the worker zygote did not start: {line!r}")

    def fork(self, kind: str, root: Path, acks: Path, seed: int, rows: int) -> int:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(f"{kind} {root} {acks} {seed} {rows}\n")
        self.proc.stdin.flush()
        return int(self.proc.stdout.readline())

    def close(self) -> None:
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                stream.close()
        self.proc.wait(30)


@dataclass
class Tally:
    """What the trials of one kind found."""

    kind: str
    trials: int = 0
    acks: int = 0
    corrupt: int = 0
    half_commits: int = 0
    lost: int = 0
    next_write_failed: int = 0
    problems: list[str] = field(default_factory=list)

    def row(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "problems"} | {"problems": self.problems[:5]}


def run_disk_full(zygote: Zygote, kind: str, root: Path, *, limit: int, rows: int) -> dict[str, Any]:
    """Run ``kind`` once in a worker whose files may not grow past ``limit`` bytes; what it raised."""
    out = root.parent / f"full-{kind}-{time.monotonic_ns()}.json"
    pid = zygote.fork(f"full-{kind}", root, out, limit, rows)
    _gone(pid, timeout=300)
    return dict(json.loads(out.read_text()))


def run_together(zygote: Zygote, kind: str, root: Path, seeds: list[int], count: int) -> list[list[dict[str, Any]]]:
    """Start one ``finite`` worker per seed at once; wait for all; each one's acknowledgements."""
    outs = [root.parent / f"{kind}-{seed}-{time.monotonic_ns()}.jsonl" for seed in seeds]
    pids = [zygote.fork(kind, root, out, seed, count) for seed, out in zip(seeds, outs)]
    for pid in pids:
        _gone(pid, timeout=600)
    return [[json.loads(x) for x in out.read_text().splitlines()] if out.exists() else [] for out in outs]


def _gone(pid: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.01)


def trial(zygote: Zygote, kind: str, root: Path, tally: Tally, *, seed: int, rows: int, max_delay: float) -> None:
    """Fork a worker doing ``kind``, kill it after a random delay, then check the store."""
    acks = root.parent / f"acks-{kind}-{seed}.jsonl"
    pid = zygote.fork(kind, root, acks, seed, rows)
    time.sleep(random.Random(seed).uniform(0.0, max_delay))
    with contextlib.suppress(ProcessLookupError):  # ended by itself: an error, written to its acknowledgements
        os.kill(pid, signal.SIGKILL)
    _gone(pid)
    tally.trials += 1
    lines = acks.read_text().splitlines() if acks.exists() else []
    tally.acks += len(lines)
    verify(kind, root, [json.loads(x) for x in lines], tally, seed=seed, rows=rows)


def verify(kind: str, root: Path, acks: list[dict[str, Any]], tally: Tally, *, seed: int, rows: int) -> None:
    from featurestore import FeatureStore
    from featurestore.errors import FeatureStoreError
    from featurestore.training import list_training_sets

    store = FeatureStore(root)
    try:
        problems = [p for p in store.check() if p.what != "cache"]  # a cache is only a speed-up
        tally.corrupt += len(problems)
        tally.problems += [str(p) for p in problems]
        runs: dict[str, set[str]] = {}
        for spec in store.specs():
            fg = store.feature_group(spec.name, spec.version)
            history = fg.history()
            runs[spec.name] = {c.run_id for c in history if c.run_id}
            if fg.count() != sum(c.row_count for c in history):
                tally.half_commits += 1
                tally.problems.append(f"{spec.key}: rows differ from its commits' row counts")
        saved = {s.version for s in list_training_sets(store.catalog) if s.name == "ctr"}
        for ack in acks:
            if "error" in ack:
                tally.problems.append(f"the worker failed: {ack['error']}")
                tally.next_write_failed += 1
                continue
            wanted = [(ack["group"], ack["run_id"])] if "run_id" in ack else [tuple(r) for r in ack.get("runs", [])]
            lost = [w for w in wanted if w[1] not in runs.get(w[0], set())]
            lost += [ack["view"]] if "view" in ack and not Path(ack["view"], "manifest.json").exists() else []
            lost += [ack["saved"]] if "saved" in ack and ack["saved"] not in saved else []
            tally.lost += len(lost)
            tally.problems += [f"lost {x}" for x in lost]
        try:
            store.feature_group("item_embeddings", 1).insert(item_rows(5, 90_000_000 + seed * 10, seed), cutoff=T0)
            if kind == "materialize":
                store.online("item_embeddings")
            elif kind == "save":
                store.save_training_set("ctr", spine(rows), ["item_embeddings:1"], event_time="t")
        except FeatureStoreError as exc:
            tally.next_write_failed += 1
            tally.problems.append(f"next write failed: {exc}")
    finally:
        store.close()


def _zygote() -> None:
    """Import what the workers use (great_expectations' adapter too), then fork one worker per line read."""
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped by the kernel
    import featurestore.online
    import featurestore.pipeline
    import featurestore.training  # noqa: F401
    from featurestore.validation import gx

    gx.load()
    print("ready", flush=True)
    for line in sys.stdin:
        kind, root, acks, seed, rows = line.split()
        pid = os.fork()
        if pid == 0:
            try:
                if kind.startswith("full-"):
                    disk_full(kind.removeprefix("full-"), root, acks, int(seed), int(rows))
                elif kind in ("inserts", "run"):
                    finite(kind, root, acks, int(seed), int(rows))
                else:
                    work(kind, root, acks, int(seed), int(rows))
            except BaseException as exc:  # reported as a failed trial: a worker must run until killed
                with open(acks, "a") as out:
                    out.write(json.dumps({"error": f"{type(exc).__name__}: {exc}"}) + "\n")
            finally:
                os._exit(0)
        print(pid, flush=True)


if __name__ == "__main__":  # the zygote (run as a script: great_expectations' imports misbehave under -c)
    _zygote()
