"""An opened online view: point lookups and similarity search over one commit's latest rows.

Example::

    view = store.online("item_embeddings", version=1)
    hit = view.get(["i1", "i2", "nope"])        # vectors (NaN rows where missing), found mask, missing keys
    view["i1"]                                   # one vector; KeyNotFound (a KeyError) when absent
    view.nearest(key="i1", k=10, exclude=["i1"], filter={"n_events": {"ge": 5}})
    items.nearest(key="u7", query_view=users)    # a user's vector against the item view

Scores are **higher is better** for every metric: cosine similarity, inner product, or minus the
Euclidean distance (see :mod:`featurestore.online.index`). Views are immutable and safe to share
between threads; opening one memory-maps its files and takes milliseconds (:meth:`OnlineView.warm` then
reads an approximate index into memory for serving).
"""

from __future__ import annotations

import json
import math
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from featurestore.errors import InvalidQuery, KeyNotFound, StorageError
from featurestore.online import index as ix
from featurestore.online import integrity
from featurestore.online.filters import compile_mask
from featurestore.online.keys import KeyIndex

#: below this many matching rows a filtered query is answered by exact search over the matches
EXACT_SUBSET_MAX = 20_000
#: compiled filter masks kept per view
MASK_CACHE = 32


@dataclass(frozen=True)
class Lookup:
    """The answer to :meth:`OnlineView.get`: one row per key asked for, in order."""

    keys: list[Any]
    vectors: np.ndarray  # (len(keys), dim) float32; NaN rows where the key is missing
    found: np.ndarray  # bool mask
    missing: list[Any]
    rows: np.ndarray  # row numbers in the view, -1 where missing
    columns: dict[str, list[Any]] = field(default_factory=dict)  # requested scalar columns (None if missing)


@dataclass(frozen=True)
class Neighbors:
    """The answer to :meth:`OnlineView.nearest`: keys and scores (higher is better), best first."""

    keys: list[Any]
    scores: np.ndarray
    rows: np.ndarray
    exact: bool

    def __len__(self) -> int:
        return len(self.keys)


class OnlineView:
    """A materialised view of one commit (see :func:`open_view` and ``FeatureStore.online``)."""

    def __init__(self, path: str | Path, *, verify: bool = True):
        self.path = Path(path)
        try:
            self._open(verify)
        except StorageError:
            raise
        except (OSError, ValueError, KeyError, TypeError, pa.ArrowException, RuntimeError) as exc:
            # (faiss reports a damaged index file as a RuntimeError)
            raise StorageError(f"cannot open the online view at {self.path}: {exc!r}") from exc

    def _open(self, verify: bool) -> None:
        self.manifest: dict[str, Any] = json.loads((self.path / "manifest.json").read_text())
        m = self.manifest
        if verify:  # every file against its checksum: a damaged file is never served
            integrity.verify(self.path, m)
        self.matrix: np.ndarray = _mapped(self.path / "vectors.npy")
        keys = _mapped(self.path / "keys.npy")
        search = self.path / "search.npy"
        self.search_matrix: np.ndarray = _mapped(search) if search.exists() else self.matrix
        sq = self.path / "sqnorms.npy"
        self._sqnorms = _mapped(sq) if sq.exists() else None
        self.columns: pa.Table = pa.ipc.open_file(pa.memory_map(str(self.path / "columns.arrow"))).read_all()
        raw = self.columns[m["key"]].to_pylist() if m.get("key_hash_map") else None
        table = self.path / "keyhash.npy"
        self.keys = KeyIndex(keys, m["key_type"], raw_keys=raw, slots=_mapped(table) if table.exists() else None)
        self._raw_keys = raw is not None
        self.name: str = m["feature_group"]
        self.version: int = m["version"]
        self.commit: int = m["commit"]
        self.dim: int = m["dim"]
        self.metric: ix.Metric = m["metric"]
        self.rows: int = m["rows"]
        if self.matrix.shape != (self.rows, self.dim) or len(keys) != self.rows or self.columns.num_rows != self.rows:
            raise ValueError(f"files disagree with the manifest ({self.rows} rows x {self.dim})")
        self.index_config = ix.IndexConfig(**{k: v for k, v in m["index"].items()
                                              if k in ix.IndexConfig.__dataclass_fields__})
        self._breadth: int = m["index"].get("breadth", 0)
        self._index: Any = None
        self._searcher: ix.Searcher | None = None
        self._resident = False  # the index read into memory (see warm)
        if self.index_config.kind != "flat" and self.rows:
            self._index = ix.read(str(self.path / "index.faiss"))
            self._searcher = ix.Searcher(self._index, self.index_config, self._breadth, self.metric)
        self._scalar_names = list(self.columns.column_names)
        self._masks: OrderedDict[str, np.ndarray] = OrderedDict()  # recent filters -> row masks
        self._masks_lock = threading.Lock()

    def __repr__(self) -> str:
        return (f"OnlineView({self.name!r}, version={self.version}, commit={self.commit}, rows={self.rows}, "
                f"dim={self.dim}, metric={self.metric!r}, index={self.index_config.kind!r})")

    def __len__(self) -> int:
        return self.rows

    def __contains__(self, key: Any) -> bool:
        try:
            return self.keys.row(key) >= 0
        except InvalidQuery:
            return False

    def info(self) -> dict[str, Any]:
        """What this view serves: feature group, version, commit, rows, dim, metric, index, recall."""
        m = self.manifest
        return {k: m[k] for k in ("feature_group", "version", "commit", "commit_timestamp", "rows", "dim",
                                  "key", "key_type", "vector", "metric", "columns", "index", "built_at")}

    def warm(self) -> OnlineView:
        """Prepare for serving (a server warms every view before it answers from it): touch the pages,
        build a key dict for views older than the key hash table, import the search library, and read
        the approximate index into memory (memory-mapped, as opened, faiss searches IVF lists about 1.3x
        slower). Call it before the view is shared between threads."""
        self.keys.warm()
        ix.load()
        if self.rows:  # fault the pages in now rather than during the first requests
            for arr in (self.matrix, self.keys.keys, *self.keys.tables()):
                step = max(1, 4096 // max(1, arr.strides[0]))
                _ = arr[::step].tobytes()
        if self._searcher is not None and not self._resident:
            self._index = ix.read(str(self.path / "index.faiss"), resident=True)
            self._searcher = ix.Searcher(self._index, self.index_config, self._breadth, self.metric)
            self._resident = True
        return self

    # ---- point lookups ---------------------------------------------------------------------------
    def __getitem__(self, key: Any) -> np.ndarray:
        row = self.keys.row(key)
        if row < 0:
            raise KeyNotFound(f"{self.name} v{self.version} (commit {self.commit}) has no key {key!r}")
        return np.array(self.matrix[row])

    def get(self, keys: Sequence[Any], *, columns: Sequence[str] | None = None) -> Lookup:
        """Vectors of ``keys`` (a batch never raises for a missing key: see ``found`` and ``missing``).

        ``columns`` adds scalar columns (e.g. ``["n_events"]``) to the answer.
        """
        check_keys(keys)
        if columns is not None:
            check_columns(columns)
        rows = self.keys.rows(keys)
        found = rows >= 0
        all_found = bool(found.all())
        if not self.rows:
            vectors = np.full((len(rows), self.dim), np.nan, np.float32)
        else:
            vectors = np.take(self.matrix, rows if all_found else np.where(found, rows, 0), axis=0)
        missing: list[Any] = []
        if not all_found:
            vectors[~found] = np.nan
            missing = [keys[int(i)] for i in np.flatnonzero(~found)]
        cols = self.column_values(columns, rows) if columns else {}
        return Lookup(list(keys), vectors, found, missing, rows, cols)

    def column_values(self, columns: Sequence[str], rows: np.ndarray) -> dict[str, list[Any]]:
        """Scalar column values at ``rows`` (None where a row is -1)."""
        unknown = [c for c in columns if c not in self._scalar_names]
        if unknown:
            raise InvalidQuery(f"{self.name} has no scalar column(s) {', '.join(map(repr, unknown))}; "
                               f"columns: {', '.join(self._scalar_names)}")
        safe = pa.array(np.where(rows >= 0, rows, 0))
        out = {}
        for c in columns:
            values = self.columns[c].take(safe).to_pylist()
            out[c] = [v if r >= 0 else None for v, r in zip(values, rows)]
        return out

    # ---- similarity ------------------------------------------------------------------------------
    def query_vector(self, *, vector: Any = None, key: Any = None, query_view: OnlineView | None = None
                     ) -> np.ndarray:
        """The query vector (1-D float32) from exactly one of ``vector`` or ``key`` (in ``query_view``)."""
        if (vector is None) == (key is None):
            raise InvalidQuery("give exactly one of vector= or key=")
        if key is not None:
            source = query_view or self
            row = source.keys.row(key)
            if row < 0:
                raise KeyNotFound(f"{source.name} v{source.version} (commit {source.commit}) has no key {key!r}")
            vector = np.asarray(source.matrix[row])
        return self._checked(vector, single=True)

    def nearest(self, vector: Any = None, *, key: Any = None, query_view: OnlineView | None = None,
                k: int = 10, filter: Mapping[str, Any] | None = None, exclude: Sequence[Any] = (),
                exact: bool = False) -> Neighbors:
        """The ``k`` rows most similar to ``vector`` (or to the vector of ``key``, looked up in
        ``query_view`` when given, e.g. a user view against this item view).

        ``filter`` (see :mod:`featurestore.online.filters`) applies before ranking, so k results come
        back whenever k rows match; ``exclude`` drops those keys. ``exact=True`` forces exact search.
        """
        if key is not None or vector is None:
            vector = self.query_vector(vector=vector, key=key, query_view=query_view)
        if (self._searcher is not None and not filter and not exact and type(k) is int and 0 < k <= self.rows
                and (exclude is None or (type(exclude) in (list, tuple) and not exclude))):
            found = self._approx_one(vector, k)  # the common case, straight to the index
            if found is not None:
                return found
        q = self._checked(vector, single=True)
        return self.nearest_many(q[None, :], k=k, filter=filter, exclude=exclude, exact=exact)[0]

    def _approx_one(self, vector: Any, k: int) -> Neighbors | None:
        """One unfiltered approximate query with the least work around the index, or None for anything
        unusual (a bad or zero vector, a short answer): the general path then answers or raises."""
        try:
            q = np.asarray(vector, dtype=np.float32)
        except (TypeError, ValueError):
            return None
        if q.shape != (self.dim,):
            return None
        q64 = q.astype(np.float64)  # squares of float32 values never overflow in float64
        ss = float(np.dot(q64, q64))  # finite: every value is finite
        if not (ss > 0 and math.isfinite(ss)):
            return None
        if self.metric == "cosine":
            q = q * (1.0 / math.sqrt(ss))
        elif not q.flags.c_contiguous:
            q = np.ascontiguousarray(q)
        assert self._searcher is not None
        hit = self._searcher.one(q, k)
        if hit is None:
            return None
        return Neighbors(self._keys_of(hit[0]), hit[1], hit[0], False)

    def nearest_many(self, vectors: Any, *, k: int = 10, filter: Mapping[str, Any] | None = None,
                     exclude: Sequence[Any] = (), exact: bool = False) -> list[Neighbors]:
        """:meth:`nearest` for a batch of query vectors (n, dim): one :class:`Neighbors` per query."""
        if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
            raise InvalidQuery(f"k must be a positive integer; got {k!r}")
        q = self._queries(vectors)
        mask = self._mask(filter)
        excl = self._exclude_rows(exclude)
        if len(excl):
            mask = np.ones(self.rows, bool) if mask is None else mask.copy()
            mask[excl] = False
        n_match = self.rows if mask is None else int(mask.sum())
        want = min(int(k), n_match)
        if want == 0:
            empty = np.zeros(0, np.int64)
            return [Neighbors([], np.zeros(0, np.float32), empty, True) for _ in range(len(q))]
        use_exact = exact or self._index is None or n_match <= min(EXACT_SUBSET_MAX, self.rows // 2)
        if use_exact:
            ids, sc = self._exact(q, want, mask, n_match)
        else:
            ids, sc = self._approx(q, want, mask, n_match)
        return self._many_neighbors(ids, sc, use_exact)

    def _approx(self, q: np.ndarray, k: int, mask: np.ndarray | None, n_match: int
                ) -> tuple[np.ndarray, np.ndarray]:
        """Approximate search; queries whose probed part held fewer than k matches are searched again
        4x wider, and answered exactly as a last resort, so k results come back whenever k rows match."""
        searcher = self._searcher
        assert searcher is not None
        breadth = searcher.breadth
        ids, sc = searcher.many(q, k, mask)
        short = np.flatnonzero(ids[:, k - 1] < 0)  # results are best first: a short one ends in -1
        while len(short) and breadth < searcher.limit:
            breadth = min(searcher.limit, max(1, breadth * 4))
            ids[short], sc[short] = searcher.many(q[short], k, mask, breadth)
            short = short[ids[short, k - 1] < 0]
        if len(short):
            ids[short], sc[short] = self._exact(q[short], k, mask, n_match)
        return ids, sc

    def _mask(self, filter: Mapping[str, Any] | None) -> np.ndarray | None:
        """The row mask of a filter; the last :data:`MASK_CACHE` filters are kept (serving repeats them)."""
        if not filter:
            return compile_mask(filter, self.columns)
        try:
            key = json.dumps(filter, sort_keys=True, default=str)
        except (TypeError, ValueError):
            return compile_mask(filter, self.columns)
        with self._masks_lock:
            mask = self._masks.get(key)
            if mask is not None:
                self._masks.move_to_end(key)
                return mask
        mask = compile_mask(filter, self.columns)
        if mask is not None:
            mask.setflags(write=False)
            with self._masks_lock:
                self._masks[key] = mask
                while len(self._masks) > MASK_CACHE:
                    self._masks.popitem(last=False)
        return mask

    def _exact(self, q: np.ndarray, k: int, mask: np.ndarray | None, n_match: int) -> tuple[np.ndarray, np.ndarray]:
        if mask is not None and n_match <= self.rows // 8:
            return ix.exact_topk(self.search_matrix, q, k, self.metric, rows=np.flatnonzero(mask),
                                 sqnorms=self._sqnorms)
        return ix.exact_topk(self.search_matrix, q, k, self.metric, mask=mask, sqnorms=self._sqnorms)

    def _neighbors(self, ids: np.ndarray, scores: np.ndarray, exact: bool) -> Neighbors:
        if len(ids) and ids[-1] < 0:  # best first: only a short answer ends in -1
            ok = ids >= 0
            ids, scores = ids[ok], scores[ok]
        return Neighbors(self._keys_of(ids), scores.astype(np.float32, copy=False), ids, exact)

    def _keys_of(self, rows: np.ndarray) -> list[Any]:
        if self._raw_keys:
            return self.columns[self.manifest["key"]].take(pa.array(rows.ravel())).to_pylist()
        return self.keys.keys[rows].tolist()  # type: ignore[no-any-return]

    def _many_neighbors(self, ids: np.ndarray, scores: np.ndarray, exact: bool) -> list[Neighbors]:
        """One :class:`Neighbors` per row of (ids, scores), the keys looked up for the batch at once."""
        if len(ids) == 0 or (ids[:, -1] < 0).any():
            return [self._neighbors(i, s, exact) for i, s in zip(ids, scores)]
        keys = self._keys_of(ids)
        if self._raw_keys:
            k = ids.shape[1]
            keys = [keys[j:j + k] for j in range(0, len(keys), k)]
        scores = scores.astype(np.float32, copy=False)
        return [Neighbors(kk, s, i, exact) for kk, s, i in zip(keys, scores, ids)]

    def _checked(self, vectors: Any, *, single: bool) -> np.ndarray:
        """Query vector(s) as float32: one vector (dim,) or a batch (n, dim), finite, or InvalidQuery."""
        what = "the query vector" if single else "query vectors"
        try:
            q = np.asarray(vectors, dtype=np.float32) if single else np.array(vectors, dtype=np.float32, ndmin=2)
        except (TypeError, ValueError) as exc:
            raise InvalidQuery(f"{what} must be {self.dim} numbers each: {exc}") from exc
        if q.ndim != (1 if single else 2) or q.shape[-1] != self.dim:
            raise InvalidQuery(f"{what} must have {self.dim} numbers for {self.name}; got shape {tuple(q.shape)}")
        if not np.all(np.isfinite(q)):
            raise InvalidQuery(f"{what} hold{'s' if single else ''} NaN or infinity")
        return q

    def _queries(self, vectors: Any) -> np.ndarray:
        q = self._checked(vectors, single=False)
        if self.metric == "cosine":  # scaled as a single query is (see _approx_one)
            q64 = q.astype(np.float64)
            ss = np.einsum("ij,ij->i", q64, q64)
            if np.any(ss == 0):
                raise InvalidQuery("a zero query vector has no cosine similarity")
            q = q * (1.0 / np.sqrt(ss)).astype(np.float32)[:, None]
        return np.ascontiguousarray(q, dtype=np.float32)

    def _exclude_rows(self, exclude: Sequence[Any]) -> np.ndarray:
        if exclude is None or (hasattr(exclude, "__len__") and len(exclude) == 0):
            return np.zeros(0, np.int64)
        check_keys(exclude, "exclude")
        rows = self.keys.rows(list(exclude))
        return rows[rows >= 0]


def check_keys(keys: Any, what: str = "get") -> None:
    """A batch of keys is a sequence (a bare key is a mistake): :class:`InvalidQuery` otherwise.
    Shared with the HTTP client, so both transports refuse the same input with the same message."""
    if isinstance(keys, str | bytes | int | float) or not hasattr(keys, "__len__") or isinstance(keys, Mapping):
        raise InvalidQuery(f"{what} takes a sequence of keys; got {type(keys).__name__} {keys!r}"
                           + (" (use view[key] for one)" if what == "get" else ""))


def check_columns(columns: Any) -> None:
    """``columns`` is a sequence of column names: :class:`InvalidQuery` otherwise."""
    if isinstance(columns, str | bytes) or not hasattr(columns, "__iter__") or isinstance(columns, Mapping) \
            or not all(isinstance(c, str) for c in columns):
        raise InvalidQuery(f"columns takes a list of column names; got {columns!r}")


def _mapped(path: Path) -> np.ndarray:
    """A read-only memory map as a plain ndarray (results of np.take etc. are then plain arrays too)."""
    return np.load(path, mmap_mode="r").view(np.ndarray)


def open_view(path: str | Path) -> OnlineView:
    """Open a published view folder (memory-mapped)."""
    return OnlineView(path)
