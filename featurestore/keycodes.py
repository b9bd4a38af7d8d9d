"""Integer codes for a batch's entity keys and its (keys..., event_time) combinations, computed once.

Two steps of an insert need them: :func:`featurestore.conform.conform` rejects a batch in which one
key appears twice for one event_time, and validation checks the same uniqueness (and non-null keys)
in great_expectations on numeric columns (strings and compound keys are far slower there). Dictionary
codes of 1M string keys cost about 0.1 s; :func:`key_codes` computes them once per conformed batch and
keeps them as long as that batch (the pyarrow Table object) lives, so validation reuses them.

Codes are exact, not hashes: two rows get equal codes exactly when their values are equal.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

_cache: dict[int, tuple[tuple[str, ...], KeyCodes]] = {}  # id(table) -> (columns, codes), while it lives


@dataclass(frozen=True)
class KeyCodes:
    """Per-row codes: ``columns[name]`` for each column, ``combined`` for the tuple of all of them.

    Every array is int64; ``-1`` marks a null (in ``combined``: a row with any null part).
    """

    columns: dict[str, np.ndarray]
    combined: np.ndarray

    def as_float(self, codes: np.ndarray) -> np.ndarray:
        """``codes`` as float64 with NaN for null (what great_expectations treats as missing)."""
        out = codes.astype(np.float64)
        out[codes < 0] = np.nan
        return out


def _column_codes(col: pa.ChunkedArray | pa.Array) -> np.ndarray:
    arr = col.chunk(0) if isinstance(col, pa.ChunkedArray) and col.num_chunks == 1 else \
        col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    if pa.types.is_dictionary(arr.type):
        arr = arr.cast(arr.type.value_type)
    if pa.types.is_timestamp(arr.type) or pa.types.is_date(arr.type):
        arr = arr.cast(pa.int64())
    idx = pc.dictionary_encode(arr).indices  # null stays null; codes < len(arr)
    return np.asarray(pc.fill_null(idx.cast(pa.int64()), -1).to_numpy(zero_copy_only=False), dtype=np.int64)


def _combine(parts: Sequence[np.ndarray], n: int) -> np.ndarray:
    """Mixed radix code = ((c0 * n1 + c1) * n2 + c2) ...; re-densified before it could overflow."""
    null = np.zeros(n, bool)
    code = np.zeros(n, np.int64)
    for c in parts:
        null |= c < 0
        c = np.where(c < 0, 0, c)
        width = int(c.max()) + 1 if n else 1
        if n and int(code.max()) > (2**62) // width:
            code = np.unique(code, return_inverse=True)[1].ravel().astype(np.int64)
        code = code * width + c
    code[null] = -1
    return code


def key_codes(table: pa.Table, columns: Sequence[str]) -> KeyCodes:
    """Codes of ``columns`` of ``table`` (computed once per live table object and column list)."""
    cols = tuple(columns)
    hit = _cache.get(id(table))
    if hit is not None and hit[0] == cols:
        return hit[1]
    per = {name: _column_codes(table[name]) for name in cols}
    codes = KeyCodes(per, _combine([per[c] for c in cols], table.num_rows))
    if id(table) not in _cache:
        weakref.finalize(table, _cache.pop, id(table), None)
    _cache[id(table)] = (cols, codes)
    return codes
