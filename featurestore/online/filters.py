"""Filters on an online view's scalar columns, evaluated to a row mask before similarity ranking.

A filter is a mapping of column -> condition, all conditions combined with AND::

    {"category": "shoes"}                      # equality
    {"n_events": {"ge": 5, "lt": 100}}         # operators: eq ne lt le gt ge in not_in
    {"brand": ["a", "b"]}                      # a list means "in"
    {"last_event_time": {"ge": "2026-11-01T00:00:00Z"}}

Nulls never match (as in SQL). Unknown columns, operators and values that do not fit the column's
type raise :class:`~featurestore.errors.InvalidQuery`.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from featurestore.errors import InvalidQuery

OPERATORS = ("eq", "ne", "lt", "le", "gt", "ge", "in", "not_in")
_PC = {"eq": pc.equal, "ne": pc.not_equal, "lt": pc.less, "le": pc.less_equal,
       "gt": pc.greater, "ge": pc.greater_equal}
MAX_IN = 100_000


def _scalar(value: Any, typ: pa.DataType, column: str) -> pa.Scalar:
    if value is None:
        raise InvalidQuery(f"filter on {column!r}: null never matches; compare with a value")
    if isinstance(value, list | tuple | Mapping):
        raise InvalidQuery(f"filter on {column!r}: expected one value, got {type(value).__name__}")
    try:
        if pa.types.is_timestamp(typ) and isinstance(value, str):
            value = datetime.fromisoformat(value.replace("Z", "+00:00"))
        if pa.types.is_boolean(typ) and not isinstance(value, bool | np.bool_):
            raise TypeError("expected true or false")
        if (pa.types.is_integer(typ) or pa.types.is_floating(typ)) and isinstance(value, bool | str):
            raise TypeError("expected a number")
        if pa.types.is_integer(typ) and isinstance(value, float) and not value.is_integer():
            return pa.scalar(value, pa.float64())  # 3 < 3.5 compares fine against floats
        if pa.types.is_string(typ) and not isinstance(value, str):
            raise TypeError("expected a string")
        return pa.scalar(value, typ)
    except (TypeError, ValueError, pa.ArrowException) as exc:
        raise InvalidQuery(f"filter on {column!r} ({typ}): {value!r} does not fit: {exc}") from exc


def _values(value: Any, typ: pa.DataType, column: str) -> pa.Array:
    if not isinstance(value, list | tuple):
        raise InvalidQuery(f"filter on {column!r}: 'in' takes a list of values")
    if len(value) > MAX_IN:
        raise InvalidQuery(f"filter on {column!r}: at most {MAX_IN} values in a list")
    return pa.array([_scalar(v, typ, column).as_py() for v in value], typ)


def compile_mask(filter: Mapping[str, Any] | None, table: pa.Table) -> np.ndarray | None:
    """The boolean row mask of ``filter`` over ``table`` (None when there is no filter)."""
    if filter is None:
        return None
    if not isinstance(filter, Mapping):
        raise InvalidQuery(f"a filter is a mapping of column to condition; got {type(filter).__name__}")
    if not filter:
        return None
    mask: Any = None
    for column, cond in filter.items():
        if column not in table.column_names:
            raise InvalidQuery(f"filter: no column {column!r}; filterable columns: "
                               f"{', '.join(table.column_names)}")
        col = table[column]
        typ = col.type
        conds = cond if isinstance(cond, Mapping) else ({"in": cond} if isinstance(cond, list | tuple)
                                                        else {"eq": cond})
        if not conds:
            raise InvalidQuery(f"filter on {column!r}: empty condition")
        for op, value in conds.items():
            if op in _PC:
                m = _PC[op](col, _scalar(value, typ, column))
            elif op in ("in", "not_in"):
                m = pc.is_in(col, value_set=_values(value, typ, column))
                if op == "not_in":
                    m = pc.and_kleene(pc.invert(m), pc.is_valid(col))
            else:
                raise InvalidQuery(f"filter on {column!r}: unknown operator {op!r}; use one of "
                                   f"{', '.join(OPERATORS)}")
            mask = m if mask is None else pc.and_kleene(mask, m)
    out = pc.fill_null(mask, False)
    if isinstance(out, pa.ChunkedArray):
        out = out.combine_chunks()
    return np.asarray(out.to_numpy(zero_copy_only=False), dtype=bool)
