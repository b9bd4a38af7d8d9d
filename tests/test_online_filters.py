"""Filters on scalar columns: the compiled row mask against a plain Python evaluation."""

from __future__ import annotations

import operator
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from featurestore.errors import InvalidQuery
from featurestore.online.filters import compile_mask

T = datetime(2026, 11, 1, tzinfo=UTC)
OPS = {"eq": operator.eq, "ne": operator.ne, "lt": operator.lt, "le": operator.le, "gt": operator.gt,
       "ge": operator.ge}


def _table(ints: list[int | None], cats: list[str | None]) -> pa.Table:
    n = len(ints)
    return pa.table({
        "n": pa.array(ints, pa.int64()),
        "cat": pa.array(cats, pa.string()),
        "t": pa.array([T + timedelta(hours=i) for i in range(n)], pa.timestamp("us", tz="UTC")),
        "ok": pa.array([i % 3 == 0 for i in range(n)]),
    })


def _reference(table: pa.Table, flt: dict[str, Any]) -> list[bool]:
    rows = table.to_pylist()
    out = []
    for r in rows:
        keep = True
        for col, cond in flt.items():
            v = r[col]
            conds = cond if isinstance(cond, dict) else ({"in": cond} if isinstance(cond, list) else {"eq": cond})
            for op, x in conds.items():
                if v is None:
                    keep = False  # nulls never match
                elif op == "in":
                    keep &= v in x
                elif op == "not_in":
                    keep &= v not in x
                else:
                    keep &= OPS[op](v, x)
        out.append(keep)
    return out


_cond_int = st.one_of(
    st.integers(-5, 5),
    st.lists(st.integers(-5, 5), max_size=4),
    st.dictionaries(st.sampled_from([*OPS, "in", "not_in"]), st.integers(-5, 5), min_size=1, max_size=2).map(
        lambda d: {k: ([v] if k in ("in", "not_in") else v) for k, v in d.items()}),
)
_cond_cat = st.one_of(st.sampled_from(["a", "b", "c"]), st.lists(st.sampled_from(["a", "b", "z"]), max_size=3),
                      st.fixed_dictionaries({"ne": st.sampled_from(["a", "b"])}))


@settings(max_examples=150, deadline=None)
@given(ints=st.lists(st.none() | st.integers(-5, 5), min_size=1, max_size=30), data=st.data())
def test_mask_equals_a_plain_evaluation(ints: list[int | None], data: st.DataObject) -> None:
    cats = data.draw(st.lists(st.none() | st.sampled_from(["a", "b", "c"]), min_size=len(ints), max_size=len(ints)))
    table = _table(ints, cats)
    flt: dict[str, Any] = {}
    if data.draw(st.booleans()):
        flt["n"] = data.draw(_cond_int)
    if data.draw(st.booleans()):
        flt["cat"] = data.draw(_cond_cat)
    mask = compile_mask(flt, table)
    if not flt:
        assert mask is None
    else:
        assert mask is not None and mask.tolist() == _reference(table, flt)


def test_timestamps_booleans_and_errors() -> None:
    table = _table([1, 2, 3, 4], ["a", "b", None, "a"])
    got = compile_mask({"t": {"ge": "2026-11-01T01:00:00Z", "lt": (T + timedelta(hours=3)).isoformat()}}, table)
    assert got is not None and got.tolist() == [False, True, True, False]
    ok = compile_mask({"ok": True}, table)
    assert ok is not None and ok.tolist() == [True, False, False, True]
    n = compile_mask({"n": {"gt": 1.5}}, table)  # a float bound against an int column
    assert n is not None and n.tolist() == [False, True, True, True]
    for bad, says in [({"nope": 1}, "no column"), ({"n": {"approx": 1}}, "unknown operator"),
                      ({"n": "x"}, "does not fit"), ({"cat": 3}, "does not fit"), ({"ok": 1}, "does not fit"),
                      ({"n": None}, "null never matches"), ({"n": {"in": 3}}, "list"), ({"n": {}}, "empty"),
                      ({"t": {"ge": "yesterday"}}, "does not fit"), ({"n": [[1]]}, "one value")]:
        with pytest.raises(InvalidQuery, match=says):
            compile_mask(bad, table)
    with pytest.raises(InvalidQuery, match="mapping"):
        compile_mask(["n"], table)  # type: ignore[arg-type]
    assert compile_mask({}, table) is None
    assert np.asarray(compile_mask({"cat": {"not_in": ["a"]}}, table)).tolist() == [False, True, False, False]
