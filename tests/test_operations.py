"""Upkeep: vacuum and compact are dry runs by default and never remove what a pin needs; check finds every
damaged file and repair rebuilds what is derived."""

from __future__ import annotations

import json
import os
import time
from datetime import timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from deltalake import CommitProperties, DeltaTable
from deltalake.transaction import AddAction

from featurestore import FeatureStore
from featurestore.cli import main
from featurestore.conform import conform
from featurestore.errors import CorruptData
from featurestore.online import build as views
from featurestore.storage.checksums import data_checksum
from featurestore.storage.staging import file_stats
from tests.conftest import SCHEMAS, T0, item_batch, tree_digest

HOUR = 3600


def _store(tmp_path: Path, commits: int = 3) -> FeatureStore:
    store = FeatureStore(tmp_path / "s")
    store.apply(SCHEMAS)
    fg = store.feature_group("item_embeddings", 1)
    for c in range(commits):
        fg.insert(item_batch(60, seed=c, start=100 * c), cutoff=T0 + timedelta(days=c))
    return store


def _age(path: Path, hours: float) -> None:
    """Make a file or folder look ``hours`` old."""
    then = time.time() - hours * HOUR
    for p in [path, *path.rglob("*")] if path.is_dir() else [path]:
        os.utime(p, (then, then))


def _orphan(store: FeatureStore) -> Path:
    """A data file a killed insert left: in the table folder, in no commit."""
    fg = store.feature_group("item_embeddings", 1)
    orphan = Path(fg.uri) / "part-00000-killed-c000.snappy.parquet"
    orphan.write_bytes(Path(fg.files()[0]).read_bytes())
    _age(orphan, 48)
    return orphan


def test_vacuum_is_a_dry_run_by_default_and_names_what_it_would_remove(tmp_path):
    store = _store(tmp_path)
    orphan = _orphan(store)
    before = tree_digest(tmp_path / "s")
    report = store.vacuum(retain=timedelta(hours=1))
    assert report.dry_run and str(orphan) in report.removed
    assert tree_digest(tmp_path / "s") == before
    done = store.vacuum(retain=timedelta(hours=1), dry_run=False)
    assert str(orphan) in done.removed and not orphan.exists()
    assert store.feature_group("item_embeddings", 1).count() == 180  # every commit's rows still read
    assert store.feature_group("item_embeddings", 1).count(commit=1) == 60


def test_vacuum_keeps_the_commits_a_saved_training_set_pins_and_the_views_a_server_serves(tmp_path):
    store = _store(tmp_path, commits=2)
    fg = store.feature_group("item_embeddings", 1)
    spine = pa.table({"item_id": ["i0", "i100"], "label_time": pa.array([T0 + timedelta(days=3)] * 2,
                                                                         pa.timestamp("us", tz="UTC"))})
    saved = store.save_training_set("ctr", spine, ["item_embeddings:1"], event_time="label_time")
    old_view = store.online("item_embeddings").path  # commit 2's view
    store.compact(dry_run=False)  # commit 3 rewrites the small files: commit 2's files are now old
    store.online("item_embeddings")  # the newest commit's view
    for p in Path(fg.uri).glob("*.parquet"):
        _age(p, 48)
    _age(old_view, 48)
    lease = views.lease(fg, {2})  # this process serves commit 2
    report = store.vacuum(retain=timedelta(0), dry_run=False)
    assert any("pinned by training set ctr v1" in k for k in report.kept)
    assert any("served by a running server" in k for k in report.kept) and old_view.exists()
    assert fg.count(commit=2) == 120  # the pinned commit still reads
    again = store.training_set(spine, ["item_embeddings:1"], event_time="label_time", pins=saved.pins).to_arrow()
    assert again.equals(saved.to_arrow())  # and still reproduces the saved set
    lease.unlink()
    store.vacuum(retain=timedelta(0), dry_run=False)
    assert not old_view.exists()


def test_compact_merges_small_files_in_one_commit_rows_unchanged(tmp_path):
    store = _store(tmp_path, commits=4)
    fg = store.feature_group("item_embeddings", 1)
    rows = fg.read().sort_by("item_id")
    assert "4 small file(s)" in str(store.compact().compacted)  # dry run
    assert len(fg.history()) == 5
    store.compact(dry_run=False)
    assert len(fg.files()) == 1 and len(fg.history()) == 6
    assert fg.read().sort_by("item_id").equals(rows)


def _flip(path: Path, at: float = 0.5) -> None:
    data = bytearray(path.read_bytes())
    i = int(len(data) * at)
    data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def test_check_finds_each_damaged_file_and_repair_rebuilds_the_derived_ones(tmp_path, capsys):
    store = _store(tmp_path, commits=2)
    view = store.online("item_embeddings").path
    spine = pa.table({"item_id": ["i0"],
                      "label_time": pa.array([T0 + timedelta(days=3)], pa.timestamp("us", tz="UTC"))})
    saved = store.save_training_set("ctr", spine, ["item_embeddings:1"], event_time="label_time")
    assert store.check() == []
    assert main(["check", "--root", str(tmp_path / "s")]) == 0
    _flip(view / "vectors.npy")
    data_file = Path(store.feature_group("item_embeddings", 1).files()[0])
    original = data_file.read_bytes()
    _flip(data_file, 0.4)
    _flip(Path(saved.path), 0.6)
    problems = store.check()
    where = {p.what: p.where for p in problems}
    assert set(where) == {"view", "table", "training set"}
    assert where["table"] == str(data_file) and where["view"] == str(view)
    with pytest.raises(CorruptData, match="data.parquet"):
        store.load_training_set("ctr").to_arrow()
    capsys.readouterr()
    code = main(["check", "--repair", "--root", str(tmp_path / "s")])
    out = capsys.readouterr().out
    assert code == 1 and "not rebuilt" in out and "(repaired)" not in out  # never a view of damaged data
    data_file.write_bytes(original)  # restored from a backup
    code = main(["check", "--repair", "--root", str(tmp_path / "s")])
    out = capsys.readouterr().out
    assert code == 1 and "(repaired)" in out  # the view is rebuilt; committed data is only reported
    assert {p.what for p in store.check()} == {"training set"}


def test_upkeep_commands_refuse_a_folder_that_is_not_a_store(tmp_path, capsys):
    for command in (["vacuum"], ["compact"], ["check"]):
        assert main([*command, "--root", str(tmp_path / "nowhere")]) == 2
        assert "is not a feature store" in capsys.readouterr().err


def test_check_reports_commits_whose_files_do_not_hold_the_rows_they_state(tmp_path, capsys):
    """Logs written before an insert's rows were checked at commit time: a commit that added no file for
    the rows it states (a Spark insert whose writer thread saw no file), and one whose file holds fewer.
    `check` names both commits; healthy commits (their files compared) and a compaction are not."""
    store = _store(tmp_path, commits=2)
    fg = store.feature_group("item_embeddings", 1)
    assert store.check() == []
    store.compact(dry_run=False, target_size=1 << 30)
    assert store.check() == []
    schema = fg._storage_table(conform(fg.spec, item_batch(1), cutoff=T0)).schema

    def old_commit(rows: int, table: pa.Table | None) -> None:
        actions, sums = [], {}
        if table is not None:
            name = f"part-00000-old{rows}-c000.snappy.parquet"
            pq.write_table(table, Path(fg.uri) / name)
            actions.append(AddAction(path=name, size=(Path(fg.uri) / name).stat().st_size, partition_values={},
                                     modification_time=int(time.time() * 1000), data_change=True,
                                     stats=json.dumps(file_stats(table))))
            sums[name] = data_checksum(str(Path(fg.uri) / name))
        DeltaTable(fg.uri).create_write_transaction(actions, mode="append", schema=schema, commit_properties=
            CommitProperties(custom_metadata={"featurestore.run_id": f"old{rows}", "featurestore.row_count": str(rows),
                                              "featurestore.checksums": json.dumps(sums)}))

    old_commit(39, None)
    short = fg._storage_table(conform(fg.spec, item_batch(20, start=500), cutoff=T0 + timedelta(days=10)))
    old_commit(25, short)
    version = fg.commit_of()
    assert [(p.what, p.where, p.detail) for p in store.check()] == [
        ("table", f"{fg.uri} commit {version - 1}", "the commit states 39 rows but added no data file: its rows "
                                                    "are not in the table"),
        ("table", f"{fg.uri} commit {version}", "the commit states 25 rows but its 1 data file(s) hold 20")]
    capsys.readouterr()
    assert main(["check", "--root", str(tmp_path / "s")]) == 1
    assert "states 39 rows but added no data file" in capsys.readouterr().out
