"""Key -> row resolution for online views: a sorted key array (memory-mapped, so opening is instant)
searched with ``numpy.searchsorted``, plus an optional hash map for string keys (``warm()``), which is
3-5x faster for batches but takes about half a second per million keys to build.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import repeat
from typing import Any, Literal

import numpy as np

from featurestore.errors import InvalidQuery

KeyKind = Literal["int64", "string"]
_INT64 = (np.iinfo(np.int64).min, np.iinfo(np.int64).max)


def sort_keys(values: Sequence[Any] | np.ndarray, kind: KeyKind) -> tuple[np.ndarray, np.ndarray]:
    """Return (sorted key array to store, permutation that sorts the rows)."""
    if kind == "int64":
        arr = np.asarray(values, dtype=np.int64)
    else:
        arr = np.asarray(list(values), dtype=str) if len(values) else np.zeros(0, dtype="<U1")
    order = np.argsort(arr, kind="stable")
    return np.ascontiguousarray(arr[order]), order


def needs_hash_map(values: Sequence[Any]) -> bool:
    """numpy's fixed-width strings drop trailing NULs: such keys can only be found through a dict."""
    return any(isinstance(k, str) and k.endswith("\x00") for k in values)


class KeyIndex:
    """Find the rows of entity keys in a view. Rows are in key order, so ``searchsorted`` finds them."""

    def __init__(self, sorted_keys: np.ndarray, kind: KeyKind, *, raw_keys: list[Any] | None = None):
        self.keys = sorted_keys
        self.kind = kind
        self.n = len(sorted_keys)
        self._map: dict[Any, int] | None = None
        if raw_keys is not None:  # keys numpy cannot represent exactly
            self._map = {k: i for i, k in enumerate(raw_keys)}

    def warm(self) -> None:
        """Build the hash map (string keys only; int keys are fast with ``searchsorted``)."""
        if self._map is None and self.kind == "string":
            self._map = {k: i for i, k in enumerate(self.keys.tolist())}

    def check(self, key: Any) -> Any:
        """One key in this view's key type, or :class:`InvalidQuery`."""
        if self.kind == "int64":
            if isinstance(key, bool) or not isinstance(key, int | np.integer):
                raise InvalidQuery(f"keys of this view are integers; got {key!r} ({type(key).__name__})")
            if not _INT64[0] <= int(key) <= _INT64[1]:
                raise InvalidQuery(f"key {key!r} is out of the int64 range")
            return int(key)
        if not isinstance(key, str | np.str_):
            raise InvalidQuery(f"keys of this view are strings; got {key!r} ({type(key).__name__})")
        return str(key)

    def row(self, key: Any) -> int:
        """The row of one key, or -1."""
        key = self.check(key)
        if self._map is not None:
            return self._map.get(key, -1)
        if not self.n:
            return -1
        if self.kind == "string" and key.endswith("\x00"):
            return -1  # numpy would drop the NUL and match a different key
        i = int(np.searchsorted(self.keys, key))
        return i if i < self.n and self.keys[i] == key else -1

    def rows(self, keys: Sequence[Any]) -> np.ndarray:
        """Rows of many keys (int64, -1 where missing). Raises :class:`InvalidQuery` on a wrong key type."""
        n = len(keys)
        if self._map is not None:
            try:
                out = np.fromiter(map(self._map.get, keys, repeat(-1, n)), np.int64, n)
            except TypeError as exc:  # unhashable key
                raise InvalidQuery(f"keys must be {self._type_name()}: {exc}") from exc
            for i in np.flatnonzero(out < 0):  # a found key has the right type; check only the others
                self.check(keys[int(i)])
            return out
        if not n:
            return np.zeros(0, np.int64)
        q = self._as_array(keys)
        if not self.n:
            return np.full(n, -1, np.int64)
        idx = np.searchsorted(self.keys, q)
        idx[idx >= self.n] = self.n - 1
        hit = self.keys[idx] == q
        if self.kind == "string" and not isinstance(keys, np.ndarray):
            for j, k in enumerate(keys):
                if k.endswith("\x00"):
                    hit[j] = False  # numpy dropped the NUL: that key is not in the view
        return np.where(hit, idx, -1).astype(np.int64, copy=False)

    def _type_name(self) -> str:
        return "integers" if self.kind == "int64" else "strings"

    def _as_array(self, keys: Sequence[Any]) -> np.ndarray:
        if isinstance(keys, np.ndarray):
            ok = keys.dtype.kind in "iu" if self.kind == "int64" else keys.dtype.kind == "U"
            if ok:
                return keys.astype(np.int64, copy=False) if self.kind == "int64" else keys
        if self.kind == "int64":
            if any(isinstance(k, bool) or not isinstance(k, int | np.integer) for k in keys):
                bad = next(k for k in keys if isinstance(k, bool) or not isinstance(k, int | np.integer))
                self.check(bad)
            try:
                return np.asarray(keys, dtype=np.int64)
            except OverflowError as exc:
                raise InvalidQuery(f"a key is out of the int64 range: {exc}") from exc
        for k in keys:
            if not isinstance(k, str | np.str_):
                self.check(k)
        return np.asarray(keys, dtype=str)
