"""Reliability at a small size (``benchmarks/bench_reliability.py`` runs the same trials 200 times each):
kill -9 at random points during inserts, pipeline runs, materialize and training-set saves; concurrent
writers and two processes running the same pipeline date; a full disk (RLIMIT_FSIZE in the worker)
during insert, materialize and save. Workers are real processes forked from one that imported
featurestore (:mod:`benchmarks._reliability`)."""

from __future__ import annotations

import os
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
    for seed in range(3):
        rel.trial(zygote, kind, root, tally, seed=seed, rows=ROWS, max_delay=max_delay)
    assert tally.problems == [], tally.row()
    assert (tally.corrupt, tally.half_commits, tally.lost, tally.next_write_failed) == (0, 0, 0, 0)


def test_four_writers_land_every_commit_exactly_once(zygote, root):
    fg = FeatureStore(root).feature_group("item_embeddings", 1)
    rows_before = fg.count()
    acks = [a for worker in rel.run_together(zygote, "inserts", root, [1, 2, 3, 4], 6) for a in worker]
    assert len(acks) == 24 and not [a for a in acks if "run_id" not in a and "refused" not in a]
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
