"""Inserts write their data files while the batch is validated and commit them only if it passes."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable
from hypothesis import given, settings
from hypothesis import strategies as st

from featurestore import CommitConflict, ValidationFailed
from featurestore.conform import conform
from featurestore.errors import StorageError
from featurestore.feature_group import FRAME_STAGING, storage_schema
from featurestore.storage import staging
from featurestore.storage.staging import file_stats
from tests.conftest import T0, item_batch, tree_digest
from tests.test_validation_insert import off_norm


def _parquet(fg) -> set[str]:
    return {p.name for p in Path(fg.uri).glob("*.parquet")}


def _log_add_stats(fg) -> dict[str, dict]:
    out = {}
    for log in sorted((Path(fg.uri) / "_delta_log").glob("*.json")):
        for line in log.read_text().splitlines():
            entry = json.loads(line)
            if "add" in entry:
                out[entry["add"]["path"]] = json.loads(entry["add"]["stats"])
    return out


def test_staged_files_are_deleted_on_a_strict_failure_and_committed_on_a_pass(store):
    fg = store.feature_group("item_embeddings", 1)
    fg.insert(item_batch(60), cutoff=T0)
    before_files = _parquet(fg)
    table_dir = Path(store.root.base) / store.table_path("item_embeddings", 1)
    before = tree_digest(table_dir)
    with pytest.raises(ValidationFailed):
        fg.insert(off_norm(60, start=100), cutoff=T0 + timedelta(days=1))
    assert tree_digest(table_dir) == before and _parquet(fg) == before_files
    # a passing insert commits exactly the files it wrote
    commit = fg.insert(item_batch(60, start=200), cutoff=T0 + timedelta(days=2))
    new = set(fg.files(commit.commit)) - set(fg.files(commit.commit - 1))
    assert {Path(f).name for f in new} == _parquet(fg) - before_files
    assert fg.count() == 120


def test_files_are_written_before_the_batch_is_checked_to_the_end(store):
    fg = store.feature_group("item_embeddings", 1)
    fg.insert(item_batch(60), cutoff=T0)
    files = _parquet(fg)
    seen: list[set[str]] = []

    def wait_for_files(group, batch):  # a hook runs before validation; the files appear meanwhile
        deadline = time.monotonic() + 60
        while not (_parquet(group) - files) and time.monotonic() < deadline:
            time.sleep(0.005)
        seen.append(_parquet(group) - files)

    fg.before_commit.append(wait_for_files)
    commit = fg.insert(item_batch(60, start=100), cutoff=T0 + timedelta(days=1))
    assert seen[0] and seen[0] == {Path(f).name for f in fg.files(commit.commit)} - files
    assert fg.commit_of() == commit.commit == 2


def test_an_error_in_the_commit_deletes_the_staged_files(store):
    fg = store.feature_group("item_embeddings", 1)
    fg.insert(item_batch(60), cutoff=T0)
    files = _parquet(fg)

    def change_metadata(group, batch):  # another writer changes the table's metadata meanwhile: a real conflict
        # the insert reads the table's version in its writer thread, then writes its files: once one of
        # them exists, the version it read is fixed and the change below lands after it
        deadline = time.monotonic() + 30
        while not _parquet(group) - files and time.monotonic() < deadline:
            time.sleep(0.005)
        DeltaTable(group.uri).alter.set_table_properties({"delta.logRetentionDuration": "interval 31 days"})

    fg.before_commit.append(change_metadata)
    with pytest.raises(CommitConflict, match="retry"):
        fg.insert(item_batch(60, start=100), cutoff=T0 + timedelta(days=1))
    assert _parquet(fg) == files  # the staged files are gone
    assert fg.commit_of() == 2 and fg.count() == 60  # the metadata commit landed, the insert did not
    fg.before_commit.clear()
    assert fg.insert(item_batch(60, start=100), cutoff=T0 + timedelta(days=1)).row_count == 60
    assert fg.count() == 120


def test_a_commit_that_lands_before_an_error_keeps_its_files(store):
    fg = store.feature_group("item_embeddings", 1)
    fg.insert(item_batch(60), cutoff=T0)
    DeltaTable(fg.uri).alter.set_table_properties({"delta.checkpointInterval": "1"})  # commit 2
    # the checkpoint after commit 3 cannot be written: deltalake raises after the commit landed
    (Path(fg.uri) / "_delta_log" / f"{3:020d}.checkpoint.parquet").mkdir()
    with pytest.warns(RuntimeWarning, match="the commit landed"):
        commit = fg.insert(item_batch(60, start=100), cutoff=T0 + timedelta(days=1))
    assert commit.commit == 3 and fg.count() == 120  # its files were kept: the table reads whole
    assert {Path(f).name for f in fg.files()} == _parquet(fg)


def test_an_error_in_a_hook_deletes_the_staged_files(store):
    fg = store.feature_group("item_embeddings", 1)
    fg.insert(item_batch(60), cutoff=T0)
    files = _parquet(fg)

    def refuse(group, batch):
        raise RuntimeError("refused by a hook")

    fg.before_commit.append(refuse)
    with pytest.raises(RuntimeError, match="refused"):
        fg.insert(item_batch(60, start=100), cutoff=T0 + timedelta(days=1))
    assert _parquet(fg) == files and fg.commit_of() == 1


def test_written_files_read_the_same_everywhere_with_one_row_group_each(store, monkeypatch):
    fg = store.feature_group("item_embeddings", 1)
    monkeypatch.setattr(staging, "TARGET_FILE_BYTES", 100 * 330)  # about 100 rows per file: several files
    data = item_batch(450)
    started = datetime.now(UTC)
    commit = fg.insert(data, cutoff=T0)
    files = fg.files(commit.commit)
    assert len(files) >= 4
    stats = _log_add_stats(fg)
    expected = fg.read().sort_by("item_id")
    for f in files:
        pf = pq.ParquetFile(f)
        assert pf.metadata.num_row_groups == 1
        assert pf.schema_arrow.field("embedding").type == pa.list_(pa.field("element", pa.float32()))
        s = stats[Path(f).name]
        assert s["numRecords"] == pf.metadata.num_rows
        et = pf.metadata.row_group(0).column(pf.schema_arrow.names.index("event_time")).statistics
        assert et.has_min_max and et.min == et.max == T0
    assert sum(s["numRecords"] for s in stats.values()) == 450
    via_pyarrow = pa.concat_tables(pq.read_table(f) for f in files)
    via_duckdb = duckdb.sql(f"SELECT * FROM read_parquet({files!r})").to_arrow_table()
    via_delta = DeltaTable(fg.uri).to_pyarrow_table()
    for t in (via_pyarrow, via_duckdb, via_delta):
        assert t.num_rows == 450
        got = t.select(expected.column_names).sort_by("item_id").cast(expected.schema)
        assert got.equals(expected)
    ingested = via_delta["_ingested_at"]
    assert pc.min(ingested).as_py() >= started.replace(microsecond=0) and \
        pc.max(ingested).as_py() <= commit.timestamp + timedelta(milliseconds=1)
    assert len(pc.unique(ingested)) == 1  # one clock reading per commit


def test_training_sets_read_event_time_ranges_from_the_footers(store):
    from featurestore.engine.pit_sql import _file_layout

    fg = store.feature_group("item_embeddings", 1)
    fg.insert(item_batch(300), cutoff=T0)
    fg.insert(item_batch(200), cutoff=T0 + timedelta(days=1))
    offsets, disjoint = _file_layout(fg.files(), "event_time")
    assert sorted(np.diff(offsets).tolist()) == [200, 300]
    assert disjoint  # each file's row group has event_time statistics, and the two commits do not overlap


_ts = st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2200, 1, 1)).map(lambda d: d.replace(tzinfo=UTC))


@settings(max_examples=60, deadline=None)
@given(ints=st.lists(st.one_of(st.none(), st.integers(-2**62, 2**62)), min_size=1, max_size=20),
       strs=st.lists(st.one_of(st.none(), st.text(max_size=40)), min_size=1, max_size=20),
       times=st.lists(st.one_of(st.none(), _ts), min_size=1, max_size=20),
       floats=st.lists(st.one_of(st.none(), st.floats(allow_nan=True, width=32)), min_size=1, max_size=20))
def test_file_stats_bound_every_value_like_a_plain_reference(ints, strs, times, floats):
    n = min(len(ints), len(strs), len(times), len(floats))
    t = pa.table({"i": pa.array(ints[:n], pa.int64()), "s": pa.array(strs[:n], pa.string()),
                  "t": pa.array(times[:n], pa.timestamp("us", tz="UTC")), "f": pa.array(floats[:n], pa.float32()),
                  "v": pa.array([[1.0]] * n, pa.list_(pa.float32()))})
    s = file_stats(t)
    assert s["numRecords"] == n and "v" not in s["minValues"]
    for name, values in (("i", ints[:n]), ("s", strs[:n]), ("t", times[:n]), ("f", floats[:n])):
        present = [v for v in values if v is not None]
        if name == "f":
            if any(np.isnan(v) or np.isinf(v) for v in present):
                assert name not in s["minValues"]
                continue
            present = [float(np.float32(v)) for v in present]
        if not present:
            assert name not in s["minValues"] and name not in s["maxValues"]
            continue
        assert s["nullCount"][name] == len(values) - len(present)
        lo, hi = s["minValues"][name], s["maxValues"].get(name)
        if name == "t":
            lo = datetime.fromisoformat(lo.replace("Z", "+00:00"))
            hi = datetime.fromisoformat(hi.replace("Z", "+00:00"))
            assert lo <= min(present) <= lo + timedelta(milliseconds=1)
            assert hi - timedelta(milliseconds=1) <= max(present) <= hi
        elif name == "s":
            assert lo == min(present)[:32]
            assert hi == (max(present) if len(max(present)) <= 32 else None)
        else:
            assert (lo, hi) == (min(present), max(present))


def test_vector_columns_are_written_without_a_dictionary(store):
    fg = store.feature_group("item_embeddings", version=1)
    fg.insert(item_batch(50, seed=3), cutoff=T0)
    meta = pq.ParquetFile(fg.files()[0]).metadata
    encodings = {meta.row_group(0).column(i).path_in_schema: meta.row_group(0).column(i).encodings
                 for i in range(meta.num_columns)}
    vector = [p for p in encodings if p.startswith("embedding.")]
    assert vector and not any("DICTIONARY" in e for p in vector for e in encodings[p])
    assert any("DICTIONARY" in e for e in encodings["item_id"])


def test_an_empty_append_commits_no_file(store):
    fg = store.feature_group("item_embeddings", 1)
    fg.insert(item_batch(60), cutoff=T0)
    empty = fg._storage_table(conform(fg.spec, item_batch(60), cutoff=T0).slice(0, 0))
    info = staging.append(store.root, fg.rel, empty, {"featurestore.run_id": "empty"})
    assert info["version"] == 2 and fg.count() == 60 and len(fg.files()) == 1 == len(_parquet(fg))


def test_the_conformed_batch_shares_no_vector_memory_with_the_caller(store):
    """Background writers (data files, vector cache) read the batch after insert may have returned: it
    must not alias the caller's buffers, which the caller is free to change then."""
    from featurestore.conform import conform

    fg = store.feature_group("item_embeddings", 1)
    data = item_batch(50)
    mine = np.frombuffer(data["embedding"].chunk(0).values.buffers()[1], np.float32)
    batch = conform(fg.spec, data, cutoff=T0)
    theirs = np.frombuffer(batch["embedding"].chunk(0).values.buffers()[1], np.float32)
    assert not np.shares_memory(mine, theirs)
    assert np.array_equal(mine[:50 * 64], theirs[:50 * 64])


def _stored_rows(fg, n: int, start: int = 0) -> pa.Table:
    return fg._storage_table(conform(fg.spec, item_batch(n, start=start), cutoff=T0))


def test_adopted_files_are_all_committed_even_when_the_writer_thread_runs_first(store, monkeypatch):
    """Files another writer made (a Spark job's) are moved into the table and committed: every one,
    whatever the threads' order. The writer thread is made to finish before the constructor goes on,
    the order in which it once saw no file and landed an empty commit (a run's rows went missing)."""
    fg = store.feature_group("item_embeddings", 1)
    fg.insert(item_batch(10), cutoff=T0 - timedelta(days=1))
    staged_dir = Path(fg.uri) / FRAME_STAGING / "spark-job"
    staged_dir.mkdir(parents=True)
    written = []
    for i, (n, start) in enumerate([(30, 100), (20, 200)]):
        path = staged_dir / f"part-{i:05d}-job-c000.snappy.parquet"
        pq.write_table(_stored_rows(fg, n, start), path)
        written.append(str(path))
    base_init = staging.StagedAppend.__init__

    def writer_first(self, *args, **kwargs):
        base_init(self, *args, **kwargs)
        self._future.exception()  # the writer thread has run to its end before the subclass goes on

    monkeypatch.setattr(staging.StagedAppend, "__init__", writer_first)
    adopted = staging.AdoptedFiles(store.root, fg.rel, written, storage_schema(fg.spec))
    adopted.commit({"featurestore.run_id": "adopted", "featurestore.row_count": "50"})
    assert fg.count() == 60 and len(fg.files()) == 3
    assert sorted(pc.unique(fg.read()["item_id"]).to_pylist()) == sorted(
        [f"i{i}" for i in range(10)] + [f"i{i}" for i in range(100, 130)] + [f"i{i}" for i in range(200, 220)])


def test_an_append_whose_files_miss_rows_is_refused_and_the_table_is_unchanged(store):
    """The rows the commit states are the rows its files hold, or nothing lands (a StorageError naming
    both counts) and the files written for it are removed."""
    fg = store.feature_group("item_embeddings", 1)
    fg.insert(item_batch(10), cutoff=T0 - timedelta(days=1))
    table_dir = Path(store.root.base) / store.table_path("item_embeddings", 1)
    before, files = tree_digest(table_dir), _parquet(fg)
    staged = staging.StagedAppend(store.root, fg.rel, lambda: _stored_rows(fg, 40, 100))
    with pytest.raises(StorageError, match=r"hold 40 rows, but 41 were staged"):
        staged.commit({"featurestore.run_id": "short", "featurestore.row_count": "41"})
    assert tree_digest(table_dir) == before and _parquet(fg) == files and fg.count() == 10
    # the same append stating its rows lands
    staging.StagedAppend(store.root, fg.rel, lambda: _stored_rows(fg, 40, 100)).commit(
        {"featurestore.run_id": "whole", "featurestore.row_count": "40"})
    assert fg.count() == 50
