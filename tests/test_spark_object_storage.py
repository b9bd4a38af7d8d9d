"""Spark over a store on object storage (a real S3-compatible server on 127.0.0.1, moto's server mode, and
a real local Spark session): the executors read the objects themselves, each checked against its
commit's checksum, and write new ones that the driver commits, with the same answers as the DuckDB
engine and no data file passing through the driver."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from featurestore import FeatureStore
from featurestore.engine.events import EventSource
from featurestore.errors import CorruptData, DuplicateKey
from featurestore.pipeline import Pipeline
from tests.conftest import SCHEMAS, T0, item_batch
from tests.s3_server import S3Server, serving

BUCKET = "featurestore-spark"


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    yield from serving(BUCKET)


@pytest.fixture
def uri(s3: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh prefix; the AWS variables set in this process only (Spark's workers, started with the
    session, never see them: the store's settings reach them with the task)."""
    s3.use_in(monkeypatch, FEATURESTORE_CACHE=str(tmp_path / "cache"))
    return f"s3://{BUCKET}/{uuid.uuid4().hex[:10]}"


def _downloaded(tmp_path: Path) -> list[str]:
    return sorted(p.name for p in (tmp_path / "cache").rglob("*.parquet"))


def _sorted(t: pa.Table, *keys: str) -> pa.Table:
    return t.sort_by([(k, "ascending") for k in keys])


def test_spark_reads_an_object_store_on_its_executors(spark_engine, uri: str, tmp_path: Path) -> None:
    """A training set (to_spark and to_arrow) over two commits and a pinned one, and a stored commit
    re-validated, on Spark: the same rows as DuckDB, and to_spark() downloads no data file here."""
    with FeatureStore(uri, engine=spark_engine) as store:
        store.apply(SCHEMAS)
        fg = store.feature_group("item_embeddings", 1)
        fg.insert(item_batch(40, seed=1, event_time=T0))
        fg.insert(item_batch(30, seed=1, event_time=T0 + timedelta(hours=2)))  # drift passes: same vectors
        ids = [f"i{i}" for i in range(0, 45, 3)]
        spine = pa.table({"item_id": ids * 2, "event_time": [T0 + timedelta(hours=1)] * len(ids) +
                          [T0 + timedelta(hours=3)] * len(ids), "label": list(range(2 * len(ids)))})
        for cache in tmp_path.joinpath("cache").rglob("*"):  # what the inserts left behind locally
            if cache.is_file():
                cache.unlink()
        ts = store.training_set(spine, ["item_embeddings"], engine=spark_engine)
        frame = ts.to_spark()
        got = frame.toArrow()
        assert _downloaded(tmp_path) == []  # the executors read the objects: nothing came to this machine
        want = store.training_set(spine, ["item_embeddings"], engine="duckdb").to_arrow()
        assert got.num_rows == want.num_rows == spine.num_rows
        got, want = _sorted(got, "label"), _sorted(want, "label")
        for column in want.column_names:
            a, b = got[column].to_pylist(), want[column].to_pylist()
            if column.endswith("embedding"):
                assert all((x is None and y is None) or np.allclose(x, y) for x, y in zip(a, b)), column
            elif column.endswith("time"):
                assert [x and x.timestamp() for x in a] == [y and y.timestamp() for y in b], column
            else:
                assert a == b, column
        pinned = store.training_set(spine, ["item_embeddings"], pins={"item_embeddings:1": 1}, engine=spark_engine)
        assert pinned.to_arrow().equals(
            store.training_set(spine, ["item_embeddings"], pins={"item_embeddings:1": 1}, engine="duckdb").to_arrow())
        report = fg.validate(2, save=False)  # the previous commit's rows scanned by Spark (drift)
        drift = next(c for c in report.checks if "drift (mean cosine)" in c.name)
        assert report.success and not drift.skipped and drift.observed["mean_cosine"] > 0.99


def test_a_damaged_object_read_by_spark_is_corrupt_data(spark_engine, uri: str) -> None:
    with FeatureStore(uri, engine=spark_engine) as store:
        store.apply(SCHEMAS)
        fg = store.feature_group("item_embeddings", 1)
        fg.insert(item_batch(20, seed=2, event_time=T0))
        spine = pa.table({"item_id": ["i1", "i2"], "event_time": [T0 + timedelta(hours=1)] * 2})
        def rows() -> int:  # every column read (a count alone lets Spark skip the group's rows)
            return store.training_set(spine, ["item_embeddings"], engine=spark_engine).to_spark().toArrow().num_rows

        assert rows() == 2
        (obj,) = fg.file_uris()
        rel = store.root.rel_of(obj)
        good = store.root.read_bytes(rel)
        damaged = bytearray(good)
        damaged[len(damaged) // 2] ^= 0x5A
        store.root.write_bytes(rel, bytes(damaged))
        try:
            with pytest.raises(CorruptData, match=obj):  # a job this library runs: our typed error
                store.training_set(spine, ["item_embeddings"], engine=spark_engine).to_arrow()
            with pytest.raises(Exception, match=r"\[featurestore:CorruptData\] data file s3://") as caught:
                rows()  # the caller's own Spark action: Spark's exception, carrying ours
            assert obj in str(caught.value)
            store.root.write_bytes(rel, good[: len(good) // 2])  # truncated: even its footer is gone
            with pytest.raises(CorruptData, match=obj):  # found while planning (the footers give the layout)
                store.training_set(spine, ["item_embeddings"], engine=spark_engine)
        finally:
            store.root.write_bytes(rel, good)
        assert rows() == 2


def _objects(store: FeatureStore, rel: str) -> list[tuple[str, int]]:
    return sorted((i.path, i.size) for i in store.root.walk(rel) if i.path.endswith(".parquet"))


def test_spark_writes_a_commit_to_an_object_store_from_its_executors(spark_engine, uri: str, tmp_path: Path) -> None:
    """insert(spark_frame) on an s3:// store: the executors write the objects, the driver commits them
    (checksums recorded, `check` clean, a training set reads them); a refused frame leaves the bucket and
    the log as they were."""
    with FeatureStore(uri, engine=spark_engine) as store:
        store.apply(SCHEMAS)
        fg = store.feature_group("item_embeddings", 1)
        rel = fg.rel
        batch = item_batch(60, seed=4, event_time=T0)
        commit = fg.insert(spark_engine.session.createDataFrame(batch))
        assert (commit.commit, commit.row_count) == (1, 60)
        assert _downloaded(tmp_path) == []  # written by the executors, not through this machine's cache
        got = _sorted(fg.read(), "item_id")
        assert got["item_id"].equals(_sorted(batch, "item_id")["item_id"])
        assert np.allclose(np.asarray(got["embedding"].to_pylist()),
                           np.asarray(_sorted(batch, "item_id")["embedding"].to_pylist()))
        assert fg.history()[-1].extra["validation_status"] == "passed"
        assert store.check() == []  # every object matches the checksum its commit recorded
        before, log = _objects(store, rel), len(fg.history())
        dup = pa.concat_tables([batch.slice(0, 5), batch.slice(0, 5)])
        with pytest.raises(DuplicateKey):
            fg.insert(spark_engine.session.createDataFrame(dup))
        assert _objects(store, rel) == before and len(fg.history()) == log


def test_a_spark_pipeline_on_an_object_store_commits_entity_vectors_from_the_executors(
        spark_engine, uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A pipeline on Spark over an s3:// store makes, writes and commits its entity vectors on the
    executors (bringing the sums to the driver is refused here), committing what DuckDB commits on a
    local store."""
    from featurestore.engine.spark.engine import SparkEngine
    from tests.test_spark_same_answers import CUT1, W, _assert_same_vectors, _events

    events = _events(5, [(2, 3, 1, 45)])
    pipe = Pipeline("objects", EventSource(events), weights=W)
    with FeatureStore(tmp_path / "local") as duck:
        duck.apply(SCHEMAS)
        local = pipe.run(duck, CUT1, quiet=True, engine="duckdb")
        want = duck.feature_group("user_embeddings", 1).read()

    def refuse(*_a, **_k):
        raise AssertionError("entity sums were brought to the driver")

    monkeypatch.setattr(SparkEngine, "entity_sums", refuse)
    with FeatureStore(uri, engine=spark_engine) as store:
        store.apply(SCHEMAS)
        remote = pipe.run(store, CUT1, quiet=True)
        assert (remote.status, remote.events, remote.entities) == (local.status, local.events, local.entities)
        _assert_same_vectors(want, store.feature_group("user_embeddings", 1).read())
