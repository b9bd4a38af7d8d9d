"""Feature groups: insert -> one atomic commit, bit-exact reads, time travel, history, bad input."""

from __future__ import annotations

import dataclasses
import time
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from featurestore import (
    BadVector,
    CommitNotFound,
    DuplicateKey,
    FeatureStore,
    FeatureStoreError,
    InvalidData,
    NullKey,
    SchemaMismatch,
    StorageError,
    ValidationFailed,
    load_specs,
)
from tests.conftest import SCHEMAS, T0, item_batch, tree_digest, vectors

finite32 = st.floats(width=32, allow_nan=False, allow_infinity=False)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    data=st.data(),
    n=st.integers(min_value=1, max_value=30),
)
def test_insert_then_read_is_identical_and_bit_exact(tmp_path_factory, data, n):
    store = FeatureStore(tmp_path_factory.mktemp("rt"))
    # arbitrary floats are not unit vectors: validate, record, but commit (policy: warn)
    store.apply([dataclasses.replace(s, policy="warn") for s in load_specs(SCHEMAS)])
    fg = store.feature_group("item_embeddings", version=1)
    keys = data.draw(st.lists(st.text(min_size=1, max_size=8), min_size=n, max_size=n, unique=True))
    vecs = data.draw(hnp.arrays(np.float32, (n, 64), elements=finite32))
    counts = data.draw(st.lists(st.integers(-(2**63), 2**63 - 1) | st.none(), min_size=n, max_size=n))
    table = pa.table({
        "item_id": keys,
        "embedding": pa.FixedSizeListArray.from_arrays(pa.array(vecs.ravel()), 64),
        "n_events": pa.array(counts, pa.int64()),
        "last_event_time": pa.array([T0] * n, pa.timestamp("us", tz="UTC")),
    })
    commit = fg.insert(table, cutoff=T0)
    back = fg.read()
    assert back.schema == fg.spec.arrow_schema()
    assert back.column("item_id").to_pylist() == keys
    assert back.column("n_events").to_pylist() == counts
    got = back.column("embedding").combine_chunks().values.to_numpy()
    assert got.tobytes() == vecs.tobytes()  # bit-exact, -0.0 and subnormals included
    assert commit.row_count == n and commit.commit == 1
    store.close()


def test_insert_accepts_pandas_arrow_and_parquet(tmp_path, store):
    fg = store.feature_group("item_embeddings", version=1)
    t = item_batch(10)
    fg.insert(t, cutoff=T0)
    df = t.to_pandas()  # object column of numpy arrays
    fg.insert(df.assign(item_id=[f"p{i}" for i in range(10)]), cutoff=T0)
    path = tmp_path / "b.parquet"
    pq.write_table(item_batch(10, start=100), path)
    c = fg.insert(path, cutoff=T0)
    assert c.commit == 3
    assert fg.read().num_rows == 30


def test_float64_lists_are_stored_as_float32(store):
    fg = store.feature_group("item_embeddings", version=1)
    t = item_batch(4)
    as64 = pa.array([list(map(float, r)) for r in vectors(4).tolist()], pa.list_(pa.float64()))
    fg.insert(t.set_column(1, "embedding", as64), cutoff=T0)
    assert fg.read()["embedding"].type.value_type == pa.float32()


def test_time_travel_by_commit_and_by_timestamp(store):
    fg = store.feature_group("item_embeddings", version=1)
    stamps = []
    for d in range(3):
        fg.insert(item_batch(5, seed=d, event_time=T0 + timedelta(days=d)))
        stamps.append(datetime.now(UTC))
        time.sleep(0.01)
    assert [fg.read(commit=c).num_rows for c in range(4)] == [0, 5, 10, 15]
    assert fg.read(commit_time=stamps[0]).num_rows == 5
    assert fg.read(commit_time=stamps[1]).num_rows == 10
    assert fg.read(commit_time=stamps[2].replace(tzinfo=None)).num_rows == 15  # naive = UTC
    with pytest.raises(CommitNotFound):
        fg.read(commit_time=datetime(2000, 1, 1, tzinfo=UTC))
    with pytest.raises(CommitNotFound, match="no commit 9"):
        fg.read(commit=9)
    day1 = fg.read(commit=1)["embedding"].combine_chunks().values.to_numpy()
    assert day1.tobytes() == vectors(5, seed=0).tobytes()


def test_latest_takes_newest_event_time_and_later_commit_on_ties(store):
    fg = store.feature_group("item_embeddings", version=1)
    fg.insert(item_batch(3, seed=1, event_time=T0 + timedelta(days=1)))
    fg.insert(item_batch(3, seed=2, event_time=T0))  # older event time, later commit: loses
    fg.insert(item_batch(1, seed=3, event_time=T0 + timedelta(days=1)))  # same time, later commit: wins i0
    latest = fg.latest()
    assert latest["item_id"].to_pylist() == ["i0", "i1", "i2"]
    vec = latest["embedding"].combine_chunks().values.to_numpy().reshape(3, 64)
    assert vec[0].tobytes() == vectors(1, seed=3)[0].tobytes()
    assert vec[1].tobytes() == vectors(3, seed=1)[1].tobytes()


def test_history_carries_metadata(store):
    fg = store.feature_group("user_embeddings", version=1)
    t = item_batch(3).rename_columns(["user_id", "embedding", "n_events", "last_event_time"])
    c = fg.insert(t, cutoff=T0, metadata={"pipeline": "p", "params": {"window": 5}})
    hist = fg.history()
    assert [h.operation for h in hist] == ["create", "insert"]
    last = hist[-1]
    assert last == c
    assert last.cutoff == T0 and last.row_count == 3 and len(last.run_id) == 32
    assert dict(last.metadata) == {"pipeline": "p", "params": {"window": 5}}
    assert fg.commit(1) == c


# ---- bad input: a clear, typed error and the table unchanged byte-for-byte ---------------------
def _bad_batches():
    good = item_batch(6)
    v = vectors(6)
    nan = v.copy()
    nan[2, 5] = np.nan
    inf = v.copy()
    inf[4, 0] = np.inf
    short = pa.array([list(r) for r in v[:, :63]], pa.list_(pa.float32()))
    ragged = pa.array([list(r) if i != 3 else list(r[:10]) for i, r in enumerate(v)], pa.list_(pa.float32()))
    null_vec = pa.array([list(r) if i != 1 else None for i, r in enumerate(v)], pa.list_(pa.float32()))
    elem_null = pa.array([[*list(r[:63]), None] if i == 0 else list(r) for i, r in enumerate(v)],
                         pa.list_(pa.float32()))
    fsl = lambda a: pa.FixedSizeListArray.from_arrays(pa.array(a.ravel()), 64)
    dup = good.set_column(0, "item_id", pa.array(["a", "b", "a", "c", "d", "e"]))
    return {
        "wrong dim (fixed)": (good.set_column(1, "embedding", pa.FixedSizeListArray.from_arrays(
            pa.array(vectors(6, 32).ravel()), 32)), BadVector, "dimension 32"),
        "wrong dim (list)": (good.set_column(1, "embedding", short), BadVector, "dimension 64"),
        "ragged": (good.set_column(1, "embedding", ragged), BadVector, "rows [3]"),
        "NaN": (good.set_column(1, "embedding", fsl(nan)), BadVector, "rows [2]"),
        "inf": (good.set_column(1, "embedding", fsl(inf)), BadVector, "rows [4]"),
        "overflow": (good.set_column(1, "embedding", pa.array(
            [[1e300] * 64] * 6, pa.list_(pa.float64()))), BadVector, "overflow"),
        "null vector": (good.set_column(1, "embedding", null_vec), BadVector, "rows [1]"),
        "null element": (good.set_column(1, "embedding", elem_null), BadVector, "rows [0]"),
        "int vector": (good.set_column(1, "embedding", pa.array([[1] * 64] * 6)), SchemaMismatch, "floats"),
        "null key": (good.set_column(0, "item_id", pa.array(["a", None, "c", "d", "e", "f"])), NullKey, "item_id"),
        "duplicate key": (dup, DuplicateKey, "'item_id': 'a'"),
        "missing column": (good.drop_columns(["n_events"]), SchemaMismatch, "missing column(s) n_events"),
        "extra column": (good.append_column("colour", pa.array(["x"] * 6)), SchemaMismatch, "colour"),
        "wrong type": (good.set_column(2, "n_events", pa.array(["many"] * 6)), SchemaMismatch, "n_events"),
        "lossy int": (good.set_column(2, "n_events", pa.array([1.5] * 6)), SchemaMismatch, "n_events"),
        "numeric text": (good.set_column(2, "n_events", pa.array(["5000050"] * 6)), SchemaMismatch,
                         "never parsed"),
        "no event time": (good, SchemaMismatch, "pass cutoff"),
        "not a table": ([1, 2, 3], SchemaMismatch, "expected a pandas DataFrame"),
    }


BAD = _bad_batches()


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_batch_is_rejected_and_table_unchanged(tmp_path, store, case):
    fg = store.feature_group("item_embeddings", version=1)
    fg.insert(item_batch(4, seed=9), cutoff=T0)
    before = tree_digest(tmp_path / "store")
    data, error, message = BAD[case]
    with pytest.raises(error) as err:
        fg.insert(data, cutoff=None if case == "no event time" else T0)
    assert isinstance(err.value, FeatureStoreError)
    assert message in str(err.value)
    assert tree_digest(tmp_path / "store") == before
    assert fg.read().num_rows == 4


def test_duplicate_keys_at_different_times_are_fine(store):
    fg = store.feature_group("item_embeddings", version=1)
    t = pa.concat_tables([item_batch(2, event_time=T0), item_batch(2, event_time=T0 + timedelta(days=1))])
    assert fg.insert(t).row_count == 4


def test_naive_and_zoned_times_are_stored_as_utc(store):
    fg = store.feature_group("item_embeddings", version=1)
    df = item_batch(2).to_pandas()
    df["event_time"] = [pd.Timestamp("2026-11-01 12:00"), pd.Timestamp("2026-11-01 12:00", tz="Europe/Berlin")]
    df["item_id"] = ["a", "b"]
    fg.insert(df)
    got = fg.read()["event_time"].to_pylist()
    assert got == [datetime(2026, 11, 1, 12, tzinfo=UTC), datetime(2026, 11, 1, 11, tzinfo=UTC)]


def test_unserialisable_metadata_writes_nothing(tmp_path, store):
    fg = store.feature_group("item_embeddings", version=1)
    before = tree_digest(tmp_path / "store")
    with pytest.raises(InvalidData, match="JSON"):
        fg.insert(item_batch(2), cutoff=T0, metadata={"f": object()})
    assert tree_digest(tmp_path / "store") == before


def test_missing_parquet_path_is_a_storage_error(tmp_path, store):
    with pytest.raises(StorageError, match="cannot read Parquet"):
        store.feature_group("item_embeddings").insert(tmp_path / "none.parquet", cutoff=T0)


def test_backend_errors_are_translated(tmp_path, store):
    fg = store.feature_group("item_embeddings", version=1)
    fg.insert(item_batch(3), cutoff=T0)
    log = tmp_path / "store/feature_groups/item_embeddings/v1/_delta_log/00000000000000000001.json"
    log.write_text("{not json")
    with pytest.raises(StorageError) as err:
        FeatureStore(tmp_path / "store").feature_group("item_embeddings").read()
    assert err.value.__cause__ is not None  # raised from the deltalake error
    assert "item_embeddings" in str(err.value)


def test_an_empty_dataframe_is_judged_by_its_row_count_not_its_untyped_columns(store):
    fg = store.feature_group("item_embeddings", version=1)
    empty = pd.DataFrame({c: [] for c in fg.spec.columns})  # no rows: every column's type is unknown
    with pytest.raises(ValidationFailed, match="row count: observed 0") as err:
        fg.insert(empty, cutoff=T0)
    assert "null" not in str(err.value)
    assert fg.count() == 0
