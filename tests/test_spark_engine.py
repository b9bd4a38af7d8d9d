"""The Spark engine: Spark DataFrames inserted as ordinary Delta commits (atomic, validated, checksummed,
read back by delta-rs and DuckDB), snapshots read by Spark at any commit, refusals that leave the store
as it was, a killed writer that leaves no commit, and the engine's settings. Real local Spark."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from featurestore import FeatureStore
from featurestore.engine import resolve
from featurestore.engine.spark import SparkEngine, SparkSettings
from featurestore.errors import BadVector, EngineError, NullKey, ValidationFailed

from .conftest import ROOT, T0, item_batch, tree_digest


def _frame(engine: SparkEngine, table: pa.Table):
    return engine.session.createDataFrame(table)


def _sorted(t: pa.Table) -> pa.Table:
    return t.sort_by([("item_id", "ascending"), ("event_time", "ascending")])


def _table_digest(store: FeatureStore) -> dict[str, str]:
    return tree_digest(Path(store.root.uri) / "feature_groups")


@pytest.mark.timeout(900)
def test_a_spark_insert_is_one_checksummed_commit_every_reader_sees(store, spark_engine):
    fg = store.feature_group("item_embeddings", 1)
    first = item_batch(40, seed=1, event_time=T0)
    c1 = fg.insert(_frame(spark_engine, first), metadata={"by": "spark"})
    c2 = fg.insert(_frame(spark_engine, item_batch(25, seed=1)), cutoff=T0 + timedelta(hours=1))
    assert (c1.commit, c2.commit, c1.row_count, c2.row_count) == (1, 2, 40, 25)
    info = fg.history()[-1]
    assert info.extra["validation_status"] == "passed" and info.metadata == {}
    assert fg.history()[1].metadata == {"by": "spark"}
    checksums = json.loads(info.extra["checksums"])
    assert checksums and all(v.startswith("xxh3:") and len(v) == 21 for v in checksums.values())
    assert not store.check(), "checksums and files verify"
    # delta-rs reads exactly what was given (vectors as the spec's fixed-size lists)
    got = _sorted(fg.read(1))
    assert got.equals(_sorted(first.select(got.column_names).cast(got.schema)))
    assert fg.count() == 65
    assert store.sql("SELECT count(*) FROM item_embeddings_v1").fetchall()[0][0] == 65
    # Spark reads any commit's snapshot (delta-rs resolves the files: time travel without delta-spark)
    old = spark_engine.read_frame(fg.spec, fg.files(1))
    assert old.count() == 40
    assert not os.path.exists(Path(fg.uri) / "_staging"), "the staging folder is gone"
    # the next DuckDB-path insert works on the same table
    fg.insert(item_batch(3, seed=3, event_time=T0 + timedelta(hours=2)))
    assert fg.count() == 68


@pytest.mark.parametrize("bad, error", [("null_key", NullKey), ("nan", BadVector), ("not_unit", ValidationFailed)])
def test_a_refused_spark_batch_leaves_the_table_as_it_was(items, spark_engine, bad, error):
    fg = items.feature_group("item_embeddings", 1)
    before = _table_digest(items)
    history = len(fg.history())
    t = item_batch(6, seed=1, event_time=T0 + timedelta(days=1))
    v = np.asarray(t["embedding"].combine_chunks().flatten()).reshape(6, 64).copy()
    if bad == "null_key":
        t = t.set_column(0, "item_id", pa.array(["a", None, "c", "d", "e", "f"]))
    elif bad == "nan":
        v[2, 5] = np.nan
        t = t.set_column(1, "embedding", pa.array(list(v), pa.list_(pa.float32())))
    else:
        t = t.set_column(1, "embedding", pa.array(list(v * 3), pa.list_(pa.float32())))
    with pytest.raises(error):
        fg.insert(_frame(spark_engine, t))
    assert len(fg.history()) == history
    assert _table_digest(items) == before


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_killed_spark_insert_leaves_no_commit_and_the_next_insert_cleans_up(store, spark_engine, tmp_path):
    fg = store.feature_group("item_embeddings", 1)
    fg.insert(item_batch(5, seed=1, event_time=T0))
    code = f"""
import os, signal, sys
sys.path.insert(0, {str(ROOT)!r})
from tests.conftest import item_batch, T0
from featurestore import FeatureStore
from featurestore.engine.spark import SparkEngine, SparkSettings
store = FeatureStore({store.root.uri!r})
fg = store.feature_group("item_embeddings", 1)
engine = SparkEngine(settings=SparkSettings.parse("local[1]", {{"spark.ui.enabled": "false",
    "spark.sql.shuffle.partitions": "1"}}))
fg.before_commit.append(lambda fg, frame: os.kill(os.getpid(), signal.SIGKILL))
fg.insert(engine.session.createDataFrame(item_batch(7, seed=9)), cutoff=T0)
"""
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert [c.commit for c in fg.history()] == [0, 1]
    assert fg.count() == 5
    staging = Path(fg.uri) / "_staging"
    assert any(staging.iterdir()), "the killed writer's staging folder is left behind"
    fg.insert(_frame(spark_engine, item_batch(4, seed=1)), cutoff=T0 + timedelta(hours=1))
    assert fg.count() == 9
    assert not staging.exists(), "the next Spark insert removed the dead writer's staging folder"


def test_spark_validation_reports_what_the_duckdb_path_reports(items, spark_engine):
    from featurestore.validation.frames import validate_frame

    fg = items.feature_group("item_embeddings", 1)
    batch = item_batch(60, seed=1, event_time=T0 + timedelta(days=2))
    local = fg.check(batch)
    spark = validate_frame(fg, _frame(spark_engine, batch), spark_engine, rows=60)
    assert [c.name for c in spark.checks] == [c.name for c in local.checks]
    assert [c.success for c in spark.checks] == [c.success for c in local.checks]
    assert [c.skipped for c in spark.checks] == [c.skipped for c in local.checks]
    by_name = {c.name: c for c in local.checks}
    for c in spark.checks:
        if c.expectation == "vector_norm_distribution":
            for k in ("min", "max", "mean"):
                assert c.observed[k] == pytest.approx(by_name[c.name].observed[k], abs=1e-6)
        if c.expectation in ("vector_duplicates_across_keys", "vector_dimension_and_dtype"):
            assert c.observed == by_name[c.name].observed


def test_engine_settings_and_choice():
    with pytest.raises(EngineError, match="spark"):
        SparkSettings.parse("local[1]", ["driver.memory=4g"])
    with pytest.raises(EngineError, match="key=value"):
        SparkSettings.parse(None, ["spark.driver.memory"])
    s = SparkSettings.parse("local[2]", ["spark.driver.memory=4g", "spark.sql.shuffle.partitions = 8"])
    assert s.conf == (("spark.driver.memory", "4g"), ("spark.sql.shuffle.partitions", "8"))
    with pytest.raises(EngineError, match="unknown engine"):
        resolve("flink", None)  # type: ignore[arg-type]


def test_cli_engine_flags(tmp_path):
    from featurestore.cli import main

    root = tmp_path / "s"
    assert main(["init", "--root", str(root)]) == 0
    code = main(["training-set", "--root", str(root), "--spine", str(tmp_path / "none.parquet"), "--feature", "x",
                 "--out", str(tmp_path / "o.parquet"), "--engine", "duckdb", "--master", "local[1]"])
    assert code == 2
