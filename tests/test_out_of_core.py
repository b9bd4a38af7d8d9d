"""Out of core: events kept in DuckDB and streamed in chunks give the same counts and entity sums as the
in-memory kernels; chunks hold whole entities; the handle cleans up after itself; memory settings."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from featurestore import FeatureStore
from featurestore.embed import Aggregation, aggregate
from featurestore.embed.base import ItemModel
from featurestore.engine import Cooccurrence, DuckDBEngine, Events, EventSource
from featurestore.engine.duckdb_events import DuckDBEvents
from featurestore.errors import EventsError, QueryError
from featurestore.pipeline import Pipeline
from featurestore.synthetic import purchase_histories
from tests.test_directed_counting import _reference

T0 = datetime(2026, 1, 1, tzinfo=UTC)
W = {"view": 1.0, "add_to_cart": 2.0, "purchase": 4.0}

# (user, item, type, minute): minutes up to 200 so some pauses pass 30 minutes; ties in time happen
event_lists = st.lists(st.tuples(st.integers(0, 6), st.integers(0, 7), st.sampled_from(list(W)),
                                 st.integers(0, 200)), min_size=2, max_size=60)


def _frame(rows) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=["user_id", "item_id", "event_type", "minute"])
    df["user_id"] = "u" + df["user_id"].astype(str)
    df["item_id"] = "i" + df["item_id"].astype(str)
    df["event_time"] = [T0 + timedelta(minutes=int(m)) for m in df["minute"]]
    return df.drop(columns="minute")


def _both(rows, chunk: int) -> tuple[Events, DuckDBEvents]:
    df = _frame(rows)
    small = DuckDBEngine().read_events(EventSource(df), weights=W)
    big = DuckDBEngine(chunk_events=chunk).read_events(EventSource(df), weights=W)
    assert isinstance(small, Events)
    if len(small) <= chunk:  # at or under the threshold it is read whole
        big.close()
        big = DuckDBEngine(chunk_events=max(1, len(small) - 1)).read_events(EventSource(df), weights=W)
    assert isinstance(big, DuckDBEvents)
    return small, big


@settings(max_examples=20, deadline=None)
@given(rows=event_lists, chunk=st.integers(1, 12), window=st.integers(1, 4), directed=st.booleans(),
       min_count=st.sampled_from([1, 3]), gap=st.sampled_from([None, 30]))
def test_chunked_counts_equal_the_in_memory_kernel(rows, chunk, window, directed, min_count, gap):
    small, big = _both(rows, chunk)
    with big:
        req = Cooccurrence(window=window, min_count=min_count, directed=directed, cross_session=0.5,
                           session_gap=timedelta(minutes=gap) if gap else None)
        engine = DuckDBEngine()
        want = engine.cooccurrence(small, req).toarray()
        got = engine.cooccurrence(big, req).toarray()
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
        assert directed or np.allclose(got, got.T)
        if min_count == 1:  # and both equal the plain-loop reference
            ref = _reference(small, window, timedelta(minutes=gap) if gap else None, 0.5, directed)
            np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)


@settings(max_examples=20, deadline=None)
@given(rows=event_lists, chunk=st.integers(1, 12), seed=st.integers(0, 3),
       half_life=st.sampled_from([None, 1, 3, timedelta(minutes=20)]), max_events=st.sampled_from([None, 2]),
       since=st.sampled_from([None, 100]), missing=st.booleans())
def test_chunked_entity_vectors_equal_the_in_memory_ones(rows, chunk, seed, half_life, max_events, since, missing):
    small, big = _both(rows, chunk)
    rng = np.random.default_rng(seed)
    ids = small.item_ids[1:] if missing and small.n_items > 1 else small.item_ids  # an item without a vector
    model = ItemModel(ids, rng.standard_normal((len(ids), 6)).astype(np.float32))
    agg = Aggregation(half_life=half_life, max_events=max_events)
    since_us = int((T0 + timedelta(minutes=since)).timestamp() * 1e6) if since is not None else None
    with big:
        want = aggregate(small, model, agg, since=since_us)
        got = aggregate(big, model, agg, since=since_us)
    for name in ("entity_ids", "vectors", "n_events", "last_event_time"):  # the same bytes
        assert np.array_equal(getattr(got, name), getattr(want, name)), name
    assert got.skipped == want.skipped
    assert list(got.entity_ids) == sorted(got.entity_ids)


def test_chunks_hold_whole_entities_and_load_gives_the_in_memory_events():
    table = purchase_histories(n_users=40, n_items=30, n_events=3000, days=3, seed=5).events
    small = DuckDBEngine().read_events(EventSource(table), weights=W)
    with DuckDBEngine(chunk_events=200).read_events(EventSource(table), weights=W) as big:
        assert isinstance(big, DuckDBEvents)
        assert (len(big), big.n_entities, big.newest) == (len(small), small.n_entities, small.newest)
        chunks = list(big.chunks(ids=True))
        assert len(chunks) > 5
        assert sum(len(c) for c in chunks) == len(small)
        ids = np.concatenate([c.entity_ids for c in chunks])
        assert np.array_equal(ids, small.entity_ids)  # each entity in exactly one chunk, in order
        loaded = big.load()
        for name in ("entity", "item", "weight", "time", "entity_ids", "entity_count", "entity_last", "item_ids"):
            assert np.array_equal(getattr(loaded, name), getattr(small, name)), name
    assert big.closed
    with pytest.raises(EventsError, match="closed"):
        list(big.chunks())


def test_a_callers_connection_is_left_as_it_was():
    con = duckdb.connect()
    con.register("my_events", _frame([(u, i, "view", m) for u in range(5) for i, m in zip(range(6), range(0, 60, 10))]))
    before = set(con.sql("SELECT table_name FROM duckdb_tables()").fetchall())
    events = DuckDBEngine(chunk_events=4).read_events(EventSource(query="SELECT * FROM my_events", connection=con),
                                                      weights=W)
    assert isinstance(events, DuckDBEvents)
    assert DuckDBEngine().cooccurrence(events, Cooccurrence()).nnz > 0
    events.close()
    assert set(con.sql("SELECT table_name FROM duckdb_tables()").fetchall()) == before
    assert con.sql("SELECT count(*) FROM my_events").fetchall() == [(30,)]


def test_a_pipeline_run_out_of_core_writes_the_in_memory_vectors(tmp_path):
    table = purchase_histories(n_users=120, n_items=80, n_events=6000, days=5, seed=2).events
    cutoff = datetime(2026, 10, 5, tzinfo=UTC)
    out = {}
    for name, chunk in (("memory", 10**9), ("chunked", 500)):
        store = FeatureStore(tmp_path / name, engine=DuckDBEngine(chunk_events=chunk))
        store.apply("schemas")
        Pipeline("p", EventSource(table), weights=W).run(store, cutoff, quiet=True)
        out[name] = {g: store.feature_group(g, 1).read().sort_by(k)
                     for g, k in (("item_embeddings", "item_id"), ("user_embeddings", "user_id"))}
        store.close()
    for g in out["memory"]:
        a, b = out["memory"][g], out["chunked"][g]
        assert a.num_rows == b.num_rows > 0
        assert a.column(0).equals(b.column(0))
        va = np.stack(a["embedding"].to_numpy(zero_copy_only=False))
        vb = np.stack(b["embedding"].to_numpy(zero_copy_only=False))
        np.testing.assert_allclose(va, vb, atol=2e-4)  # counts summed per chunk: float32 rounding apart


def test_memory_settings_reach_duckdb(tmp_path):
    store = FeatureStore(tmp_path / "s", memory_limit="1GB", temp_directory=str(tmp_path / "spill"))
    limit, temp = store.duck.con.sql(
        "SELECT current_setting('memory_limit'), current_setting('temp_directory')").fetchall()[0]
    assert limit in ("953.6 MiB", "1000.0 MB", "1.0 GB") and temp == str(tmp_path / "spill")
    store.close()
    with pytest.raises(QueryError, match="memory_limit"):
        FeatureStore(tmp_path / "t", memory_limit="lots")
    with pytest.raises(QueryError, match="engine you pass"):
        FeatureStore(tmp_path / "u", engine=DuckDBEngine(), memory_limit="1GB")
    with pytest.raises(EventsError, match="memory_limit"):
        DuckDBEngine(memory_limit="lots").read_events(EventSource(pa.table({"user_id": ["u"], "item_id": ["i"],
                                                                             "event_type": ["view"],
                                                                             "event_time": [T0]})))
