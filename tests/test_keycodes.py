"""Key codes: equal codes exactly for equal (keys..., event_time) tuples, nulls marked, computed once."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from featurestore.keycodes import TextHashes, key_codes, key_codes_hashed

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


def _batches(values, times, cut):
    return [pa.table({"k": pa.array(values[i:i + cut], pa.string()),
                      "t": pa.array(times[i:i + cut], pa.timestamp("us", tz="UTC"))})
            for i in range(0, len(values), cut)]


@settings(max_examples=60, deadline=None)
@given(rows=st.lists(st.tuples(st.sampled_from(["a", "b", "é", "", "a\x00", "ab", "b\x00a"]),
                               st.sampled_from([datetime(2026, 11, d, tzinfo=UTC) for d in (1, 2, 3)])),
                     max_size=40),
       cut=st.integers(1, 7), bits=st.sampled_from([None, 0, 1, 2]))
def test_hashed_codes_equal_the_dictionary_codes(rows, cut, bits):
    """Codes built from per-batch hashes are exactly key_codes', also when hashes collide (``bits``:
    only that many low bits of each hash are kept, so different strings share hashes)."""
    values = [r[0] for r in rows]
    times = [r[1] for r in rows]
    batches = _batches(values, times, cut)
    hashes = TextHashes(["k", "t"])
    for b in batches:
        hashes.add(b)
    if bits is not None:
        hashes.parts["k"] = [p & np.uint64((1 << bits) - 1) for p in hashes.parts["k"]]
    table = pa.concat_tables(batches) if batches else pa.table(
        {"k": pa.array([], pa.string()), "t": pa.array([], pa.timestamp("us", tz="UTC"))})
    want = key_codes(pa.table({"k": table["k"], "t": table["t"]}), ["k", "t"])
    got = key_codes_hashed(table, ["k", "t"], hashes)
    assert np.array_equal(got.columns["k"], want.columns["k"])
    assert np.array_equal(got.columns["t"], want.columns["t"])
    assert np.array_equal(got.combined, want.combined)
    assert key_codes(table, ["k", "t"]) is got  # kept with the table: conform and validation reuse them


def test_hashed_codes_cover_every_batch_or_fall_back():
    """A batch that was not hashed (a null key) leaves the column to the dictionary: same codes."""
    batches = [pa.table({"k": ["x", "y"]}), pa.table({"k": pa.array([None, "x"], pa.string())})]
    hashes = TextHashes(["k"])
    for b in batches:
        hashes.add(b)
    assert hashes.of("k", 4) is None
    table = pa.concat_tables(batches)
    assert key_codes_hashed(table, ["k"], hashes).columns["k"].tolist() == [0, 1, -1, 0]
