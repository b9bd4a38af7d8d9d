"""Reliability at a small size (``benchmarks/bench_reliability.py`` runs the same trials 200 times each):
kill -9 at random points during inserts, pipeline runs, materialize and training-set saves; concurrent
writers and two processes running the same pipeline date; a full disk (RLIMIT_FSIZE in the worker)
during insert, materialize and save. Workers are real processes forked from one that imported
featurestore (:mod:`benchmarks._reliability`)."""

from __future__ import annotations

import contextlib
import os
import subprocess
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from benchmarks import _reliability as rel
from featurestore import FeatureStore
from featurestore.online import build as views

ROWS = 200


@pytest.fixture(scope="module")
def zygote() -> Any:
    z = rel.Zygote()
    yield z
    z.close()


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("reliability") / "s"
    rel.setup(path, ROWS)
    return path


@pytest.mark.slow
@pytest.mark.parametrize(("kind", "max_delay"), [("insert", 1.0), ("pipeline", 2.5), ("materialize", 1.5),
                                                 ("save", 1.5)])
def test_kill_9_at_random_points_loses_and_damages_nothing(zygote, root, kind, max_delay):
    tally = rel.Tally(kind)
    for seed in range(2):
        rel.trial(zygote, kind, root, tally, seed=seed, rows=ROWS, max_delay=max_delay)
    assert tally.problems == [], tally.row()
    assert (tally.corrupt, tally.half_commits, tally.lost, tally.next_write_failed) == (0, 0, 0, 0)


def test_four_writers_land_every_commit_exactly_once(zygote, root):
    fg = FeatureStore(root).feature_group("item_embeddings", 1)
    rows_before = fg.count()
    acks = [a for worker in rel.run_together(zygote, "inserts", root, [1, 2, 3, 4], 5) for a in worker]
    assert len(acks) == 20 and not [a for a in acks if "run_id" not in a and "refused" not in a]
    landed = [a for a in acks if "run_id" in a]
    refused = [a for a in acks if "refused" in a]
    assert all(r["refused"].startswith("CommitConflict") for r in refused), refused
    history = {c.run_id: c for c in fg.history()}
    assert all(history[a["run_id"]].commit == a["commit"] for a in landed)
    assert len({a["commit"] for a in landed}) == len(landed)  # one commit each
    assert fg.count() == rows_before + 50 * len(landed)


def test_two_processes_running_one_pipeline_date_commit_it_once(zygote, root):
    day = 5
    first, second = rel.run_together(zygote, "run", root, [day, day], 1)
    statuses = sorted(a.get("status", a.get("refused")) for a in first + second)
    assert statuses == ["skipped", "written"], statuses
    store = FeatureStore(root)
    cutoff = rel.T0 + timedelta(days=day)
    for name in ("item_embeddings", "user_embeddings"):
        runs = [c for c in store.feature_group(name, 1).history()
                if c.metadata.get("pipeline") == "reliability" and c.cutoff == cutoff]
        assert len(runs) == 1, runs  # the date is committed once


@pytest.mark.parametrize("kind", ["insert", "materialize", "save"])
def test_a_full_disk_is_a_typed_error_and_the_store_stays_usable(zygote, root, kind):
    store = FeatureStore(root)
    fg = store.feature_group("item_embeddings", 1)
    commits = len(fg.history())
    listed = views.list_views(fg)
    result = rel.run_disk_full(zygote, kind, root, limit=60_000, rows=20_000)
    assert result.get("module") == "featurestore.errors" and result["type"] == "StorageError", result
    store = FeatureStore(root)
    fg = store.feature_group("item_embeddings", 1)
    assert len(fg.history()) == commits + (kind == "materialize")  # the insert before the build landed
    assert views.list_views(fg) == listed  # no half view
    assert not [p for p in views.views_dir(fg).iterdir() if p.name.startswith(".build-")]
    staging = root / "training_sets" / ".staging"
    assert not staging.exists() or not os.listdir(staging)
    assert store.check() == []
    fg.insert(rel.item_rows(10, 70_000_000 + commits, 1), cutoff=rel.T0)  # usable after
    store.online("item_embeddings")
    store.save_training_set("ctr", rel.spine(ROWS), ["item_embeddings:1"], event_time="t")


@contextlib.contextmanager
def _read_only(src: Path, dst: Path) -> Any:
    """``src`` seen read-only at ``dst`` (a read-only bind mount: even root cannot write through it)."""
    dst.mkdir()
    done = subprocess.run(["mount", "--bind", str(src), str(dst)], capture_output=True, text=True)
    if done.returncode:
        pytest.skip(f"cannot bind-mount here (needs root): {done.stderr.strip()}")
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(dst)], check=True, capture_output=True)
        yield dst
    finally:
        subprocess.run(["umount", str(dst)], check=True)


def test_a_read_only_store_serves_its_views_and_refuses_builds_with_a_typed_error(tmp_path, capsys):
    from featurestore.cli import main
    from featurestore.errors import StorageError

    store = FeatureStore(tmp_path / "s")
    store.apply(rel.ROOT / "schemas")
    fg = store.feature_group("item_embeddings", 1)
    fg.insert(rel.item_rows(30, 0), cutoff=rel.T0)
    store.online("item_embeddings")
    with _read_only(tmp_path / "s", tmp_path / "ro") as ro:
        reader = FeatureStore(ro)
        assert reader.online("item_embeddings").get(["r1"]).found.all()  # the view of the newest commit
        assert main(["nearest", "item_embeddings", "--key", "r1", "--k", "3", "--root", str(ro)]) == 0
        fg.insert(rel.item_rows(30, 100), cutoff=rel.T0)  # a new commit, no view of it yet
        with pytest.raises(StorageError, match=r"cannot write the online view of item_embeddings:1 commit 2.*"
                                               r"Views built already: commit\(s\) 1"):
            reader.online("item_embeddings")
        assert reader.online("item_embeddings", commit=1).get(["r1"]).found.all()
        capsys.readouterr()
        for command in (["lookup", "item_embeddings", "r1"], ["nearest", "item_embeddings", "--key", "r1"],
                        ["materialize", "item_embeddings"]):
            assert main([*command, "--root", str(ro)]) != 0
            err = capsys.readouterr().err
            assert "Read-only file system" in err and "Traceback" not in err, err
        assert reader.feature_group("item_embeddings", 1).count() == 60  # reads work
        reader.close()
