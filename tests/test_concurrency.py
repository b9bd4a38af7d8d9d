"""Real processes: concurrent writers, and a writer killed with SIGKILL in the middle of an insert."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from datetime import timedelta
from pathlib import Path

import pyarrow as pa
import pytest

from featurestore import FeatureStore
from tests.conftest import ROOT, SCHEMAS, T0, item_batch

WRITER = textwrap.dedent("""
    import json, sys, time
    from pathlib import Path
    sys.path.insert(0, {root!r})
    from featurestore import FeatureStore, CommitConflict
    from tests.conftest import item_batch, T0
    store_path, go = sys.argv[1], sys.argv[5]
    start, n_batches, rows = (int(a) for a in sys.argv[2:5])
    fg = FeatureStore(store_path).feature_group("item_embeddings", version=1)
    fg.insert(item_batch(1, start=-1 - start), cutoff=T0)  # warm up: imports and the first write path
    print("ready", flush=True)
    while not Path(go).exists():
        time.sleep(0.001)
    out = []
    for b in range(n_batches):
        try:
            c = fg.insert(item_batch(rows, seed=start + b, start=start + b * rows), cutoff=T0)
            out.append({{"commit": c.commit, "rows": c.row_count, "run_id": c.run_id}})
        except CommitConflict as exc:
            out.append({{"conflict": str(exc)}})
        print("committed", b, flush=True)
    print(json.dumps(out), flush=True)
""").format(root=str(ROOT))


def _spawn(store_path: Path, start: int, n: int, rows: int, go: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", WRITER, str(store_path), str(start), str(n), str(rows), str(go)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
    )


def test_two_processes_insert_at_once_and_nothing_is_lost(tmp_path):
    store = FeatureStore(tmp_path / "s")
    store.apply(SCHEMAS)
    go = tmp_path / "go"
    procs = [_spawn(tmp_path / "s", start, 10, 300, go) for start in (0, 100_000)]
    for p in procs:  # both processes import and open the table, then start together
        assert p.stdout is not None and p.stdout.readline().strip() == "ready"
    go.touch()
    results = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        results.extend(json.loads(out.strip().splitlines()[-1]))
    # the two writers really overlapped: their commit numbers interleave
    first = [r["commit"] for r in results[:10] if "commit" in r]
    second = [r["commit"] for r in results[10:] if "commit" in r]
    assert min(second) < max(first) and min(first) < max(second)
    landed = [r for r in results if "commit" in r]
    conflicts = [r for r in results if "conflict" in r]
    assert len(landed) + len(conflicts) == 20
    assert all("retry" in c["conflict"] for c in conflicts)
    fg = store.feature_group("item_embeddings", version=1)
    # every landed commit is whole, under its own number, and nothing else is in the table
    assert len({r["commit"] for r in landed}) == len(landed)
    history = {c.run_id: c for c in fg.history() if c.run_id and c.row_count == 300}
    assert {r["run_id"] for r in landed} == set(history)
    assert all(history[r["run_id"]].commit == r["commit"] for r in landed)
    assert fg.read().num_rows == 300 * len(landed) + 2  # + the two warm-up rows
    assert len(fg.read().column("item_id").unique()) == 300 * len(landed) + 2
    assert len(landed) == 20  # appends do not conflict with each other in Delta
    # each writer wrote its files while validating, then committed them: none is left unreferenced
    on_disk = {p.name for p in (tmp_path / "s/feature_groups/item_embeddings/v1").glob("*.parquet")}
    assert on_disk == {Path(f).name for f in fg.files()}


@pytest.mark.slow
def test_sigkill_during_insert_leaves_previous_commit_readable(tmp_path):
    store = FeatureStore(tmp_path / "s")
    store.apply(SCHEMAS)
    fg = store.feature_group("item_embeddings", version=1)
    fg.insert(item_batch(10), cutoff=T0)
    go = tmp_path / "go"
    go.touch()
    rows = 150_000  # big enough that each insert takes a while: the kill lands inside one
    proc = _spawn(tmp_path / "s", 1_000_000, 50, rows, go)
    # wait for the first commit to land, then kill somewhere inside a later insert
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    line = proc.stdout.readline()
    assert line.startswith("committed"), proc.stderr.read() if proc.stderr else ""
    time.sleep(0.35)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=30)  # reaps it and closes the pipes
    assert proc.returncode == -signal.SIGKILL
    reopened = FeatureStore(tmp_path / "s").feature_group("item_embeddings", version=1)
    commits = reopened.history()
    table = reopened.read()
    big = [c for c in commits if c.row_count == rows]
    assert 1 <= len(big) < 50  # killed after its first big insert, before its last
    assert table.num_rows == sum(c.row_count for c in commits)  # every commit whole, nothing half-written
    assert table.num_rows == 10 + 1 + rows * len(big)
    # files the killed writer left behind are not part of any commit and the table still takes writes
    data_files = list((tmp_path / "s/feature_groups/item_embeddings/v1").glob("*.parquet"))
    assert len(data_files) >= len(reopened.files())
    reopened.insert(item_batch(5, start=5_000_000), cutoff=T0)
    assert reopened.read().num_rows == table.num_rows + 5
    assert FeatureStore(tmp_path / "s").sql("SELECT count(*) FROM item_embeddings").fetchall()[0][0] == \
        table.num_rows + 5


SAVER = r"""
import sys
from datetime import datetime, timedelta, UTC
import numpy as np, pyarrow as pa
from featurestore import FeatureStore
store = FeatureStore(sys.argv[1])
n = 200_000
rng = np.random.default_rng(0)
spine = pa.table({"item_id": [f"i{i}" for i in rng.integers(0, 2000, n)],
                  "ts": pa.array([datetime(2026, 11, 3, tzinfo=UTC)] * n, pa.timestamp("us", tz="UTC"))})
print("ready", flush=True)
for i in range(1000):
    store.save_training_set("ctr", spine, ["item_embeddings:1"], event_time="ts")
    print("saved", flush=True)
"""


@pytest.mark.slow
@pytest.mark.parametrize("delay", [0.05, 0.3, 0.8])
def test_sigkill_during_training_set_saves_leaves_only_whole_versions(tmp_path, delay):
    """A save killed at any point leaves no half version (every listed version verifies against its
    manifest), the next save removes its debris, and the saved sets stay reproducible."""
    from featurestore.training import list_training_sets

    root = tmp_path / "s"
    store = FeatureStore(root)
    store.apply(SCHEMAS)
    store.feature_group("item_embeddings", 1).insert(item_batch(2000), cutoff=T0)
    store.close()
    proc = subprocess.Popen([sys.executable, "-c", SAVER, str(root)], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    assert proc.stdout.readline().strip() == "saved", proc.stderr.read() if proc.stderr else ""
    time.sleep(delay)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=30)
    store = FeatureStore(root)
    saved = list_training_sets(store.catalog)
    assert len(saved) >= 1
    for s in saved:
        s.verify()  # whole: data.parquet matches its manifest
    spine = pa.table({"item_id": ["i1"], "ts": pa.array([T0 + timedelta(days=2)], pa.timestamp("us", tz="UTC"))})
    store.save_training_set("after", spine, ["item_embeddings:1"], event_time="ts")
    assert not (root / "training_sets" / ".staging").exists()  # the killed save's debris is gone
    store.close()
