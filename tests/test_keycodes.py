"""Key codes: equal codes exactly for equal (keys..., event_time) tuples, nulls marked, computed once."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from featurestore.keycodes import key_codes

_key = st.one_of(st.none(), st.sampled_from(["a", "b", "é", "", "a\x00"]))
_num = st.one_of(st.none(), st.integers(-3, 3))
_time = st.one_of(st.none(), st.sampled_from([datetime(2026, 11, d, tzinfo=UTC) for d in (1, 2)]))


@settings(max_examples=80, deadline=None)
@given(rows=st.lists(st.tuples(_key, _num, _time), max_size=30), chunks=st.integers(1, 3))
def test_codes_match_a_plain_tuple_reference(rows, chunks):
    cols = list(zip(*rows)) if rows else [(), (), ()]
    cut = max(1, len(rows) // chunks)
    def chunked(values, typ):
        parts = [pa.array(list(values[i:i + cut]), typ) for i in range(0, len(values), cut)]
        return pa.chunked_array(parts, typ)
    table = pa.table({"k": chunked(cols[0], pa.string()), "n": chunked(cols[1], pa.int64()),
                      "t": chunked(cols[2], pa.timestamp("us", tz="UTC"))})
    codes = key_codes(table, ["k", "n", "t"])
    for i, a in enumerate(rows):
        assert (codes.combined[i] < 0) == (None in a)
        assert (codes.columns["k"][i] < 0) == (a[0] is None)
        for j, b in enumerate(rows):
            if None not in a and None not in b:
                assert (codes.combined[i] == codes.combined[j]) == (a == b)
            if a[0] is not None and b[0] is not None:
                assert (codes.columns["k"][i] == codes.columns["k"][j]) == (a[0] == b[0])
    f = codes.as_float(codes.combined)
    assert np.array_equal(np.isnan(f), codes.combined < 0)


def test_codes_are_computed_once_per_table_and_column_list():
    table = pa.table({"k": ["x", "y", "x"], "t": [1, 1, 2]})
    first = key_codes(table, ["k", "t"])
    assert key_codes(table, ["k", "t"]) is first
    other = key_codes(table, ["k"])
    assert other is not first and other.combined.tolist() == [0, 1, 0]
    copy = pa.table({"k": ["x", "y", "x"], "t": [1, 1, 2]})
    assert key_codes(copy, ["k", "t"]) is not first


def test_many_wide_columns_do_not_overflow():
    n = 5000
    rng = np.random.default_rng(0)
    cols = {f"c{i}": rng.integers(0, 5000, n) for i in range(6)}
    table = pa.table(cols)
    codes = key_codes(table, list(cols))
    ref = {}
    for i, row in enumerate(zip(*cols.values())):
        ref.setdefault(row, set()).add(int(codes.combined[i]))
    assert all(len(v) == 1 for v in ref.values())
    assert len(set(codes.combined.tolist())) == len(ref)
