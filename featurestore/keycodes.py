"""Integer codes for a batch's entity keys and its (keys..., event_time) combinations, computed once.

Two steps of an insert need them: :func:`featurestore.conform.conform` rejects a batch in which one
key appears twice for one event_time, and validation checks the same uniqueness (and non-null keys)
in great_expectations on numeric columns (strings and compound keys are far slower there). Dictionary
codes of 1M string keys cost about 0.1 s; :func:`key_codes` computes them once per conformed batch and
keeps them as long as that batch (the pyarrow Table object) lives, so validation reuses them.

Codes are exact, not hashes: two rows get equal codes exactly when their values are equal.

A batched insert (:mod:`featurestore.validation.batches`) needs the codes of many batches' rows together.
A dictionary of every distinct string key costs about 150 bytes per row at its peak (the memo table, the
unique strings copied, the chunks combined); :class:`TextHashes` keeps 8 bytes per row of a text column
as its batches pass, and :func:`key_codes_hashed` turns those into the very codes :func:`key_codes` gives,
checking every pair of rows with equal hashes for equal values (a true hash collision falls back to the
dictionary), at a peak of about 40 bytes per row.
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
    return _keep(table, cols, KeyCodes(per, _combine([per[c] for c in cols], table.num_rows)))


def _keep(table: pa.Table, cols: tuple[str, ...], codes: KeyCodes) -> KeyCodes:
    if id(table) not in _cache:
        weakref.finalize(table, _cache.pop, id(table), None)
    _cache[id(table)] = (cols, codes)
    return codes


class TextHashes:
    """64-bit hashes of the text columns among ``columns``, kept batch by batch (8 bytes per row each):
    what :func:`key_codes_hashed` needs instead of a dictionary of all the rows' strings."""

    def __init__(self, columns: Sequence[str]):
        self.columns = tuple(columns)
        self.parts: dict[str, list[np.ndarray | None]] = {name: [] for name in self.columns}

    def add(self, batch: pa.Table) -> None:
        """Hash ``batch``'s text key columns (the others are coded exactly at the end, cheaply)."""
        from pandas.util import hash_array

        for name in self.columns:
            col = batch[name]
            hashed = None  # not a string, or nulls (conform refuses null keys): coded from the values
            if (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)) and not col.null_count:
                values = col.to_numpy() if isinstance(col, pa.ChunkedArray) else col.to_numpy(zero_copy_only=False)
                hashed = hash_array(values, categorize=False)
            self.parts[name].append(hashed)

    def of(self, name: str, rows: int) -> np.ndarray | None:
        """All of column ``name``'s hashes in row order, or None when some batch was not hashed."""
        parts = [p for p in self.parts.get(name, []) if p is not None]
        if not parts or len(parts) < len(self.parts[name]):
            return None
        out = np.concatenate(parts)
        return out if len(out) == rows else None


def key_codes_hashed(table: pa.Table, columns: Sequence[str], hashes: TextHashes, *,
                     combined_only: bool = False) -> KeyCodes:
    """:func:`key_codes` of ``table`` (the same codes), with its text columns coded from ``hashes``
    (the rows' hashes, in order) rather than a dictionary of their strings; cached like key_codes.
    ``combined_only``: keep only ``combined`` (8 bytes per row less per column), which is all that the
    uniqueness checks read (:func:`key_codes` returns these codes, ``columns`` empty)."""
    cols = tuple(columns)
    per = {}
    for name in cols:
        h = hashes.of(name, table.num_rows) if name in hashes.columns else None
        codes = _codes_from_hashes(table[name], h) if h is not None else None
        per[name] = codes if codes is not None else _column_codes(table[name])
        del h, codes
    combined = _combine([per[c] for c in cols], table.num_rows)
    return _keep(table, cols, KeyCodes({} if combined_only else per, combined))


_VERIFY_ROWS = 1 << 20  # hash-equal rows compared with their group's first row this many at a time


def _codes_from_hashes(col: pa.ChunkedArray, h: np.ndarray) -> np.ndarray | None:
    """The codes :func:`_column_codes` gives the null-free ``col`` (dense, in order of first appearance)
    from its rows' hashes ``h``; None if two different values share a hash (a true collision)."""
    n = len(h)
    if not n:
        return np.zeros(0, np.int64)
    order = np.argsort(h, kind="stable")  # within equal hashes, rows stay in table order
    sorted_h = h[order]
    starts = np.flatnonzero(np.concatenate(([True], sorted_h[1:] != sorted_h[:-1])))
    del sorted_h
    first = order[starts]  # each distinct hash's first row
    sizes = np.diff(np.append(starts, n))
    if len(starts) < n:  # rows sharing a hash: each must equal its group's first row
        group_first = np.repeat(first, sizes)
        later = np.flatnonzero(order != group_first)
        for lo in range(0, len(later), _VERIFY_ROWS):
            at = later[lo:lo + _VERIFY_ROWS]
            same = pc.equal(col.take(pa.array(order[at])), col.take(pa.array(group_first[at])))
            if not pc.all(same).as_py():
                return None
        del group_first, later
    rank = np.empty(len(starts), np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(len(starts), dtype=np.int64)
    codes = np.empty(n, np.int64)
    codes[order] = np.repeat(rank, sizes)
    return codes
