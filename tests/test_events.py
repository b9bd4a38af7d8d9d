"""Event sources: every input kind gives the same coded events; bad input raises EventsError."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from featurestore.engine import read_events
from featurestore.engine.events import Columns, EventSource
from featurestore.errors import EventsError, FeatureStoreError
from featurestore.synthetic import purchase_histories

T0 = datetime(2026, 10, 1, tzinfo=UTC)
W = {"view": 1.0, "add_to_cart": 2.0, "purchase": 4.0}


@pytest.fixture(scope="module")
def table() -> pa.Table:
    return purchase_histories(n_users=50, n_items=40, n_events=2000, days=5, seed=3).events


def _same(a, b) -> None:
    for name in ("entity", "item", "weight", "time", "entity_ids", "item_ids", "item_count", "entity_count"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name


def test_every_source_kind_reads_the_same_events(table, tmp_path):
    ref = read_events(EventSource(table), weights=W)
    assert len(ref) == table.num_rows
    path = tmp_path / "e.parquet"
    pq.write_table(table, path)
    pq.write_table(table.slice(0, 700), tmp_path / "part-0.parquet")
    pq.write_table(table.slice(700), tmp_path / "part-1.parquet")
    _same(ref, read_events(EventSource(table.to_pandas()), weights=W))
    _same(ref, read_events(EventSource(str(path)), weights=W))
    _same(ref, read_events(EventSource(str(tmp_path / "part-*.parquet")), weights=W))
    _same(ref, read_events(EventSource(query=f"SELECT * FROM read_parquet('{path}')"), weights=W))
    con = duckdb.connect()
    con.register("my_events", table)
    _same(ref, read_events(EventSource(query="SELECT * FROM my_events", connection=con), weights=W))


def test_codes_do_not_depend_on_input_order(table):
    shuffled = table.take(np.random.default_rng(0).permutation(table.num_rows))
    _same(read_events(EventSource(table), weights=W), read_events(EventSource(shuffled), weights=W))


def test_events_are_ordered_by_entity_then_time(table):
    ev = read_events(EventSource(table), weights=W)
    key = ev.entity.astype(np.int64) * 10**17 + ev.time
    assert np.all(np.diff(key) >= 0)
    assert ev.entity_starts()[-1] == len(ev)
    assert set(ev.weight.tolist()) <= {1.0, 2.0, 4.0}


def test_only_events_strictly_before_the_cutoff(table):
    cut = T0 + timedelta(days=2)
    ev = read_events(EventSource(table), before=cut, weights=W)
    n = pa.compute.sum(pa.compute.less(table["event_time"], pa.scalar(cut, pa.timestamp("us", tz="UTC")))).as_py()
    assert len(ev) == n
    assert ev.time.max() < int(cut.timestamp() * 1e6)
    exact = table.slice(0, 10).set_column(3, "event_time", pa.array([cut] * 10, pa.timestamp("us", tz="UTC")))
    assert len(read_events(EventSource(exact), before=cut, weights=W)) == 0


def test_configurable_columns_and_no_type_column():
    df = pd.DataFrame({"cust": [1, 1, 2], "sku": ["a", "b", "a"],
                       "ts": pd.to_datetime(["2026-01-01", "2026-01-02", "2026-01-03"])})
    ev = read_events(EventSource(df, columns=Columns(entity="cust", item="sku", type=None, time="ts")))
    assert ev.entity_ids.tolist() == ["1", "2"] and ev.item_ids.tolist() == ["a", "b"]
    assert ev.weight.tolist() == [1.0, 1.0, 1.0]
    assert Columns.parse("entity=cust,item=sku,type=,time=ts") == Columns("cust", "sku", None, "ts")


def test_value_column_scales_weights():
    df = pd.DataFrame({"user_id": ["u", "u"], "item_id": ["a", "b"], "event_type": ["purchase", "view"],
                       "event_time": pd.to_datetime(["2026-01-01", "2026-01-02"], utc=True), "qty": [3, 1]})
    ev = read_events(EventSource(df, columns=Columns(value="qty")), weights=W)
    assert ev.weight.tolist() == [12.0, 1.0]


def _df(**over):
    base = {"user_id": ["u1", "u2"], "item_id": ["a", "b"], "event_type": ["view", "purchase"],
            "event_time": ["2026-01-01T00:00:00+00:00", "2026-01-02T00:00:00+00:00"]}
    base.update(over)
    return pd.DataFrame(base)


@pytest.mark.parametrize("df, columns, match", [
    (_df(), Columns(entity="customer"), "no column.*'customer'"),
    (_df(user_id=["u1", None]), None, "'user_id' has 1 null id"),
    (_df(item_id=[None, "b"]), None, "'item_id' has 1 null id"),
    (_df(event_type=["view", "teleport"]), None, "unknown event type.*'teleport'"),
    (_df(event_time=["2026-01-01", "yesterday"]), None, "unparseable time.*'yesterday'"),
    (_df(event_time=["2026-01-01T00:00:00+02:00", "yesterday"]), None, "unparseable time.*'yesterday'"),
    (_df(event_time=["2026-01-01T00:00:00+02:00", "2026-01-02T00:00:00"]), None, "mixes times with and without"),
    (_df(event_time=[1, 2]), None, "must hold timestamps"),
])
def test_bad_events_raise_clear_errors(df, columns, match):
    with pytest.raises(EventsError, match=match) as info:
        read_events(EventSource(df, columns=columns), weights=W)
    assert isinstance(info.value, FeatureStoreError) and isinstance(info.value, ValueError)


def test_string_times_with_offsets_are_converted_to_utc():
    ev = read_events(EventSource(_df(event_time=["2026-01-01T02:00:00+02:00", "2026-01-01T00:30:00Z"])), weights=W)
    assert sorted(ev.time.tolist()) == [int(datetime(2026, 1, 1, tzinfo=UTC).timestamp() * 1e6),
                                        int(datetime(2026, 1, 1, 0, 30, tzinfo=UTC).timestamp() * 1e6)]


def test_missing_file_and_bad_input_kind():
    with pytest.raises(EventsError, match="no events file"):
        read_events(EventSource("/nonexistent/*.parquet"))
    with pytest.raises(EventsError, match="must be a DataFrame"):
        read_events(EventSource([1, 2, 3]))
    with pytest.raises(EventsError, match="either data"):
        EventSource()
    with pytest.raises(EventsError, match="role=column"):
        Columns.parse("user=x")
