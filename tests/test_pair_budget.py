"""The co-occurrence pair budget (``DuckDBEngine(max_pairs=)``): below it the counts are exactly the
unbounded ones; above it the pairs are summed in DuckDB and each item keeps only its strongest pairs
(by row and by column), so what reaches Python is bounded by the budget, and a model fitted on the
pruned counts ranks about as well."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from featurestore.engine import Cooccurrence, DuckDBEngine, EventSource
from featurestore.engine.counting import per_item
from featurestore.errors import EventsError

T0 = datetime(2026, 1, 1, tzinfo=UTC)

# (user, item, minute)
event_lists = st.lists(st.tuples(st.integers(0, 8), st.integers(0, 11), st.integers(0, 300)),
                       min_size=2, max_size=80)


def _events(rows, chunk: int):
    df = pd.DataFrame(rows, columns=["user_id", "item_id", "minute"])
    df["user_id"] = "u" + df["user_id"].astype(str)
    df["item_id"] = "i" + df["item_id"].astype(str)
    df["event_type"] = "view"
    df["event_time"] = [T0 + timedelta(minutes=int(m)) for m in df["minute"]]
    return DuckDBEngine(chunk_events=chunk).read_events(EventSource(df.drop(columns="minute")))


def _strongest(full: np.ndarray, keep: int) -> np.ndarray:
    """Reference: entries among the ``keep`` largest of their row or of their column (ties: smaller
    index first), zero elsewhere."""
    n = full.shape[0]
    mask = np.zeros_like(full, dtype=bool)
    for i in range(n):
        for line, put in ((full[i, :], lambda j, i=i: (i, j)), (full[:, i], lambda j, i=i: (j, i))):
            nz = [j for j in range(n) if line[j] != 0]
            for j in sorted(nz, key=lambda j, line=line: (-line[j], j))[:keep]:
                mask[put(j)] = True
    return np.where(mask, full, 0.0)


@settings(max_examples=25, deadline=None)
@given(rows=event_lists, chunk=st.integers(1, 40), directed=st.booleans(), budget=st.integers(1, 60))
def test_below_the_budget_identical_above_it_each_items_strongest_pairs(rows, chunk, directed, budget):
    req = Cooccurrence(window=3, directed=directed)
    with _events(rows, chunk) as events:
        full = DuckDBEngine(max_pairs=None).cooccurrence(events, req)
        got = DuckDBEngine(max_pairs=budget).cooccurrence(events, req)
        upper = DuckDBEngine(max_pairs=None).cooccurrence(events, Cooccurrence(window=3, directed=True))
        keep = per_item(budget, events.n_items)
        assert got.dtype == np.float32 and got.shape == full.shape
        if upper.nnz * (1 if directed else 2) <= budget:  # within the budget: the very same matrix
            assert got.nnz == full.nnz and not (got != full).nnz
            return
        np.testing.assert_allclose(got.toarray(), _strongest(full.toarray(), keep), rtol=1e-5, atol=1e-6)
        assert got.nnz <= 2 * events.n_items * keep <= max(budget, 2 * events.n_items)
        assert directed or not (got != got.T).nnz


def test_under_the_budget_nothing_is_pruned_and_over_it_the_pairs_are_bounded():
    rng = np.random.default_rng(0)
    n = 4000
    rows = list(zip(rng.integers(0, 200, n), rng.integers(0, 60, n), rng.integers(0, 5000, n)))
    req = Cooccurrence(window=5, directed=True)
    with _events(rows, 500) as events:
        full = DuckDBEngine(max_pairs=None).cooccurrence(events, req)
        same = DuckDBEngine(max_pairs=full.nnz).cooccurrence(events, req)
        assert same.nnz == full.nnz and not (same != full).nnz  # bit for bit
        small = DuckDBEngine(max_pairs=full.nnz // 4).cooccurrence(events, req)
        keep = per_item(full.nnz // 4, events.n_items)
        assert 0 < small.nnz <= full.nnz // 4
        assert small.nnz <= 2 * events.n_items * keep
        # each row keeps its strongest pairs (at least min(keep, its pairs))
        assert (np.diff(small.indptr) >= np.minimum(keep, np.diff(full.indptr))).all()
        # every item keeps its strongest pair
        dense = full.toarray()
        best = dense.argmax(axis=1)
        rows_with = np.flatnonzero(dense.max(axis=1) > 0)
        np.testing.assert_allclose(small.toarray()[rows_with, best[rows_with]], dense[rows_with, best[rows_with]],
                                   rtol=1e-5)


def test_bad_budget_is_a_typed_error():
    with pytest.raises(EventsError, match="max_pairs"):
        DuckDBEngine(max_pairs=0)


def test_the_budget_is_set_on_the_store_and_the_command_line(tmp_path, capsys):
    from featurestore import FeatureStore
    from featurestore.cli import main
    from featurestore.engine.duckdb_pairs import MAX_PAIRS
    from featurestore.errors import QueryError

    assert FeatureStore(tmp_path / "a").engine.max_pairs == MAX_PAIRS
    assert FeatureStore(tmp_path / "b", max_pairs=1000).engine.max_pairs == 1000
    assert FeatureStore(tmp_path / "c", max_pairs=None).engine.max_pairs is None
    with pytest.raises(QueryError, match="max_pairs"):
        FeatureStore(tmp_path / "d", engine=DuckDBEngine(), max_pairs=10)
    assert main(["init", "--root", str(tmp_path / "e")]) == 0
    assert main(["run", "--root", str(tmp_path / "e"), "--max-pairs", "-1", "pipelines/purchase_embeddings.py",
                 "--cutoff", "2026-11-01"]) != 0
    assert "--max-pairs must be >= 0" in capsys.readouterr().err


def test_the_spill_appends_within_a_small_limit_and_sums_within_the_events_limit(tmp_path):
    import scipy.sparse as sp

    from featurestore.engine.duckdb_events import ReadSettings, size_bytes
    from featurestore.engine.duckdb_pairs import PairSpill

    spill = PairSpill.open(ReadSettings(memory_limit="1GB", temp_directory=str(tmp_path)), 3)

    def limit() -> float:
        return size_bytes(str(spill.con.sql("SELECT current_setting('memory_limit')").fetchall()[0][0]))

    try:
        assert limit() <= 600e6
        spill.add(sp.csr_matrix(np.array([[0, 1, 2], [0, 0, 3], [1, 0, 0]], np.float32)))
        spill.add(sp.csr_matrix(np.array([[0, 1, 0], [0, 0, 0], [0, 0, 0]], np.float32)))
        got = spill.pruned(1, directed=True)
        assert limit() > 900e6
        # sums [[0, 2, 2], [0, 0, 3], [1, 0, 0]]; (0, 2) is neither the top of row 0 (a tie: the smaller
        # column wins) nor of column 2
        np.testing.assert_array_equal(got.toarray(), [[0, 2, 0], [0, 0, 3], [1, 0, 0]])
    finally:
        spill.close()


@pytest.mark.timeout(600)
@pytest.mark.parametrize("directed", [True, False])
def test_spark_keeps_the_same_strongest_pairs_as_duckdb(spark_engine, directed):
    """The Spark engine applies the same budget: above it, the same pruned pairs come to the driver. (A
    window of 1 keeps the counts whole numbers, exact in any float order, so ties break alike.)"""
    from featurestore.engine.spark import SparkEngine

    rng = np.random.default_rng(1)
    n = 1500
    rows = list(zip(rng.integers(0, 60, n), rng.integers(0, 40, n), rng.integers(0, 3000, n)))
    df = pd.DataFrame(rows, columns=["user_id", "item_id", "minute"])
    df["user_id"] = "u" + df["user_id"].astype(str)
    df["item_id"] = "i" + df["item_id"].astype(str)
    df["event_type"] = "view"
    df["event_time"] = [T0 + timedelta(minutes=int(m)) for m in df.pop("minute")]
    req = Cooccurrence(window=1, directed=directed)
    with DuckDBEngine().read_events(EventSource(df)) as local:
        full = DuckDBEngine(max_pairs=None).cooccurrence(local, req)
        budget = full.nnz // 3
        want = DuckDBEngine(max_pairs=budget).cooccurrence(local, req)
    spark = SparkEngine(spark_engine.session, max_pairs=budget)
    with spark.read_events(EventSource(df)) as events:
        got = spark.cooccurrence(events, req)
        unbounded = SparkEngine(spark_engine.session, max_pairs=None).cooccurrence(events, req)
    assert 0 < want.nnz < full.nnz  # the budget did prune
    assert got.nnz == want.nnz and not (got.astype(bool) != want.astype(bool)).nnz  # the very same pairs
    np.testing.assert_allclose(got.toarray(), want.toarray(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(unbounded.toarray(), full.toarray(), rtol=1e-5, atol=1e-6)
    with pytest.raises(Exception, match="max_pairs"):
        SparkEngine(spark_engine.session, max_pairs=0)
