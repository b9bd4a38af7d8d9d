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

import copy
import dataclasses
import json
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from featurestore.errors import InvalidQuery, KeyNotFound, StorageError
from featurestore.online import index as ix
from featurestore.online import integrity
from featurestore.online.filters import compile_mask
from featurestore.online.keys import CompositeKeyIndex, KeyIndex
from featurestore.storage import npy

#: below this many matching rows a filtered query is answered by exact search over the matches
EXACT_SUBSET_MAX = 20_000
#: compiled filter masks kept per view
MASK_CACHE = 32
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_F32 = np.dtype(np.float32)
#: sums of squares the one-query path scales in float32; others go through the general (float64) path
_SS_MIN, _SS_MAX = 1e-30, 1e30


@dataclass(frozen=True)
class Lookup:
    """The answer to :meth:`OnlineView.get`: one row per key asked for, in order."""

    keys: list[Any]
    vectors: np.ndarray  # (len(keys), dim) float32; NaN rows where the key is missing
    found: np.ndarray  # bool mask
    missing: list[Any]
    rows: np.ndarray  # row numbers in the view, -1 where missing
    columns: dict[str, list[Any]] = field(default_factory=dict)  # requested scalar columns (None if missing)
    # every requested feature: vectors as (len(keys), dim) float32 with NaN rows, scalars as lists with None
    features: dict[str, Any] = field(default_factory=dict)

    def __getitem__(self, feature: str) -> Any:
        """The values of one requested feature."""
        try:
            return self.features[feature]
        except KeyError:
            raise KeyError(f"{feature!r} was not requested; features: {', '.join(self.features)}") from None


@dataclass(frozen=True)
class VectorPart:
    """One vector feature of a view: its matrix, the searched copy, squared norms and index."""

    name: str
    matrix: np.ndarray
    search_matrix: np.ndarray
    sqnorms: np.ndarray | None
    index: Any
    index_config: ix.IndexConfig
    breadth: int
    dim: int
    metric: ix.Metric
    index_file: str
    searcher: ix.Searcher | None = None
    resident: bool = False  # the index read into memory (see warm)


@dataclass(frozen=True)
class Neighbors:
    """The answer to :meth:`OnlineView.nearest`: keys and scores (higher is better), best first."""

    keys: list[Any]
    scores: np.ndarray
    rows: np.ndarray
    exact: bool

    def __len__(self) -> int:
        return len(self.keys)


_new = object.__new__


def _lookup(keys: list[Any], vectors: np.ndarray, found: np.ndarray, missing: list[Any], rows: np.ndarray,
            columns: dict[str, list[Any]], features: dict[str, Any]) -> Lookup:
    """A :class:`Lookup` built as :func:`_neighbors` builds its answer (without seven ``__setattr__`` calls)."""
    n = _new(Lookup)
    n.__dict__.update(keys=keys, vectors=vectors, found=found, missing=missing, rows=rows, columns=columns,
                      features=features)
    return n


def _neighbors(keys: list[Any], scores: np.ndarray, rows: np.ndarray, exact: bool) -> Neighbors:
    """A :class:`Neighbors` built without the frozen dataclass's ``__init__`` (four ``object.__setattr__``
    calls, a microsecond: a tenth of a fast query); the same fields, still frozen."""
    n = _new(Neighbors)
    d = n.__dict__
    d["keys"], d["scores"], d["rows"], d["exact"] = keys, scores, rows, exact
    return n


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
        m = json.loads((self.path / "manifest.json").read_text())
        if verify:  # every file against its checksum: a damaged file is never served
            integrity.verify(self.path, m)
        self.manifest: dict[str, Any] = _upgraded(m)
        m = self.manifest
        keys = _mapped(self.path / "keys.npy")
        self.columns: pa.Table = pa.ipc.open_file(pa.memory_map(str(self.path / "columns.arrow"))).read_all()
        self.name: str = m["feature_group"]
        self.version: int = m["version"]
        self.commit: int = m["commit"]
        self.rows: int = m["rows"]
        self.key_names: list[str] = list(m["keys"])
        table = self.path / "keyhash.npy"
        slots = _mapped(table) if table.exists() else None
        raw = self.columns[self.key_names[0]].to_pylist() if m.get("key_hash_map") else None
        if len(self.key_names) > 1:
            self.keys: KeyIndex = CompositeKeyIndex(keys, self.key_names, m["key_types"], slots=slots)
        else:
            self.keys = KeyIndex(keys, m["key_type"], raw_keys=raw, slots=slots)
        self._raw_keys = raw is not None
        if len(keys) != self.rows or self.columns.num_rows != self.rows:
            raise ValueError(f"files disagree with the manifest ({self.rows} rows)")
        self.features: list[str] = list(m.get("features") or [*m["vectors"], *self._scalar_features()])
        self.vectors: dict[str, VectorPart] = {name: self._vector_part(name, v) for name, v in m["vectors"].items()}
        self.vector_name: str | None = m.get("vector")
        self._bind(self.vectors[self.vector_name] if self.vector_name else None)
        self._scalar_names = list(self.columns.column_names)
        self._masks: OrderedDict[str, np.ndarray] = OrderedDict()  # recent filters -> row masks
        self._masks_lock = threading.Lock()
        self._numeric: dict[str, np.ndarray | None] = {}  # scalar columns numpy can hold (no nulls)

    def _scalar_features(self) -> list[str]:
        skip = {*self.manifest["keys"], self.manifest.get("event_time")}
        return [c for c in self.columns.column_names[len(self.manifest["keys"]) + 1:] if c not in skip]

    def _vector_part(self, name: str, v: dict[str, Any]) -> VectorPart:
        sfx = v.get("suffix", "")
        matrix = _mapped(self.path / f"vectors{sfx}.npy")
        search = self.path / f"search{sfx}.npy"
        sq = self.path / f"sqnorms{sfx}.npy"
        cfg = ix.IndexConfig(**{k: val for k, val in v["index"].items() if k in ix.IndexConfig.__dataclass_fields__})
        breadth = int(v["index"].get("breadth", 0))
        index: Any = None
        searcher = None
        if cfg.kind != "flat" and self.rows:
            index = ix.read(str(self.path / f"index{sfx}.faiss"))
            searcher = ix.Searcher(index, cfg, breadth, v["metric"])
        if matrix.shape != (self.rows, v["dim"]):
            raise ValueError(f"{name}: files disagree with the manifest ({self.rows} rows x {v['dim']})")
        return VectorPart(name, matrix, _mapped(search) if search.exists() else matrix,
                          _mapped(sq) if sq.exists() else None, index, cfg, breadth, int(v["dim"]), v["metric"],
                          f"index{sfx}.faiss", searcher)

    def _bind(self, part: VectorPart | None) -> None:
        """Make ``part`` the vector feature that lookups' ``vectors`` and similarity search use."""
        self.part = part
        if part is None:  # a group of scalars: point lookups only
            self.matrix: np.ndarray = np.zeros((self.rows, 0), np.float32)
            self.search_matrix: np.ndarray = self.matrix
            self._sqnorms: np.ndarray | None = None
            self.index_config = ix.IndexConfig("flat")
            self._index: Any = None
            self._searcher: ix.Searcher | None = None
            self._resident = False
            self._breadth: int = 0
            self.dim: int = 0
            self.metric: ix.Metric = "cosine"
            return
        self.matrix, self.search_matrix, self._sqnorms = part.matrix, part.search_matrix, part.sqnorms
        self.index_config, self._index, self._breadth = part.index_config, part.index, part.breadth
        self._searcher, self._resident = part.searcher, part.resident
        self.dim, self.metric = part.dim, part.metric

    def using(self, feature: str | None) -> OnlineView:
        """This view with ``feature`` (a vector feature) as the one searched and returned as ``vectors``;
        ``None`` is the default vector feature. Shares every file and cache with this view."""
        if feature is None or (self.part is not None and feature == self.part.name):
            return self
        part = self.vectors.get(feature)
        if part is None:
            raise InvalidQuery(f"{self.name} v{self.version} has no vector feature {feature!r}; vector features: "
                               f"{', '.join(self.vectors) or 'none (a group of scalars serves point lookups only)'}")
        other = copy.copy(self)
        other._bind(part)
        return other

    def __repr__(self) -> str:
        return (f"OnlineView({self.name!r}, version={self.version}, commit={self.commit}, rows={self.rows}, "
                f"vectors={list(self.vectors)}, features={len(self.features)})")

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
        out = {k: m[k] for k in ("feature_group", "version", "commit", "commit_timestamp", "rows", "dim",
                                 "key", "key_type", "keys", "key_types", "vector", "metric", "columns",
                                 "index", "built_at")}
        out["features"] = list(self.features)  # (derived at open for format-2 views)
        out["vectors"] = {n: {"dim": v["dim"], "metric": v["metric"], "index": v["index"]}
                          for n, v in m["vectors"].items()}
        return out

    def warm(self) -> OnlineView:
        """Prepare for serving (a server warms every view before it answers from it): touch the pages,
        build a key dict for views older than the key hash table, import the search library, and read
        the approximate index into memory (memory-mapped, as opened, faiss searches IVF lists about 1.3x
        slower). Call it before the view is shared between threads."""
        self.keys.warm()
        ix.load()
        if self.rows:  # fault the pages in now rather than during the first requests
            for arr in (self.keys.keys, *self.keys.tables(), *(p.matrix for p in self.vectors.values())):
                step = max(1, 4096 // max(1, arr.strides[0]))
                _ = arr[::step].tobytes()
        for name, part in list(self.vectors.items()):  # approximate indexes read into memory
            if part.searcher is not None and not part.resident:
                index = ix.read(str(self.path / part.index_file), resident=True)
                searcher = ix.Searcher(index, part.index_config, part.breadth, part.metric)
                self.vectors[name] = dataclasses.replace(part, index=index, searcher=searcher, resident=True)
        if self.part is not None:
            self._bind(self.vectors[self.part.name])
        return self

    # ---- point lookups ---------------------------------------------------------------------------
    def __getitem__(self, key: Any) -> np.ndarray:
        row = self.keys.row(key)
        if row < 0:
            raise KeyNotFound(f"{self.name} v{self.version} (commit {self.commit}) has no key {key!r}")
        return np.array(self.matrix[row])

    def get(self, keys: Sequence[Any], *, features: Sequence[str] | None = None,
            columns: Sequence[str] | None = None) -> Lookup:
        """Every feature of ``keys`` (``features`` names a subset; a batch never raises for a missing key:
        see ``found`` and ``missing``). ``vectors`` holds the default vector feature; ``columns`` adds
        stored columns (entity keys, event time, scalar features) under ``columns``.
        """
        check_keys(keys)
        if columns is not None:
            check_columns(columns)
        wanted = self._wanted(features)
        if len(keys) == 1 and type(keys) in (list, tuple):
            return self._get_one(keys[0], wanted, columns)
        rows = self.keys.rows(keys)
        found = rows >= 0
        all_found = bool(found.all())
        safe = rows if all_found else np.where(found, rows, 0)
        vectors = self._take(self.matrix, safe, found, all_found)
        missing: list[Any] = []
        if not all_found:
            missing = [keys[int(i)] for i in np.flatnonzero(~found)]
        cols = self.column_values(columns, rows) if columns else {}
        out: dict[str, Any] = {}
        scalars = [f for f in wanted if f not in self.vectors]
        values = self.column_values(scalars, rows) if scalars else {}
        for f in wanted:
            if f in self.vectors:
                same = self.part is not None and f == self.part.name
                out[f] = vectors if same else self._take(self.vectors[f].matrix, safe, found, all_found)
            else:
                out[f] = values[f]
        return _lookup(list(keys), vectors, found, missing, rows, cols, out)

    def _get_one(self, key: Any, wanted: list[str], columns: Sequence[str] | None) -> Lookup:
        """:meth:`get` of one key (what online inference asks most): the same answer, built from one row
        number instead of batch arrays to probe, mask and gather."""
        row = self.keys.row(key)
        rows = np.array([row], np.int64)
        vectors = self._row(self.matrix, row)
        cols = self.column_values(columns, rows) if columns else {}
        scalars = [f for f in wanted if f not in self.vectors]
        values = self.column_values(scalars, rows) if scalars else {}
        out: dict[str, Any] = {}
        for f in wanted:
            if f in self.vectors:
                same = self.part is not None and f == self.part.name
                out[f] = vectors if same else self._row(self.vectors[f].matrix, row)
            else:
                out[f] = values[f]
        return _lookup([key], vectors, np.array([row >= 0]), [] if row >= 0 else [key], rows, cols, out)

    def _row(self, matrix: np.ndarray, row: int) -> np.ndarray:
        """One row of ``matrix`` as a (1, dim) copy; a NaN row for -1."""
        if not matrix.shape[1]:  # a group of scalars: no values to fill
            return np.empty((1, 0), np.float32)
        if row < 0:
            return np.full((1, matrix.shape[1]), np.nan, np.float32)
        return np.array(matrix[row:row + 1])

    def _wanted(self, features: Sequence[str] | None) -> list[str]:
        if features is None:
            return self.features
        check_columns(features, "features")
        unknown = [f for f in features if f not in self.features]
        if unknown:
            raise InvalidQuery(f"{self.name} v{self.version} has no feature(s) {', '.join(map(repr, unknown))}; "
                               f"features: {', '.join(self.features)}")
        return list(features)

    def _take(self, matrix: np.ndarray, safe: np.ndarray, found: np.ndarray, all_found: bool) -> np.ndarray:
        if not self.rows or not matrix.shape[1]:
            return np.full((len(safe), matrix.shape[1]), np.nan, np.float32)
        out = np.take(matrix, safe, axis=0)
        if not all_found:
            out[~found] = np.nan
        return out

    def column_values(self, columns: Sequence[str], rows: np.ndarray) -> dict[str, list[Any]]:
        """Scalar column values at ``rows`` (None where a row is -1)."""
        unknown = [c for c in columns if c not in self._scalar_names]
        if unknown:
            raise InvalidQuery(f"{self.name} has no scalar column(s) {', '.join(map(repr, unknown))}; "
                               f"columns: {', '.join(self._scalar_names)}")
        if not self.rows:
            return {c: [None] * len(rows) for c in columns}
        if len(rows) == 1:
            r = int(rows[0])
            return {c: [self._value(c, r) if r >= 0 else None] for c in columns}
        ok = rows >= 0
        safe = np.where(ok, rows, 0)
        arrow_rows = None
        out = {}
        for c in columns:
            numeric = self._numeric_column(c)
            if numeric is not None:
                values = numeric[safe].tolist()
                if numeric.dtype.kind == "M":  # timestamps: exact, and in UTC as Arrow gives them
                    values = [_EPOCH + timedelta(microseconds=v) for v in numeric[safe].view(np.int64).tolist()]
            elif len(safe) <= 16:  # a few rows: scalar access beats building a take
                col = self.columns[c]
                values = [col[r].as_py() for r in safe.tolist()]
            else:
                arrow_rows = pa.array(safe) if arrow_rows is None else arrow_rows
                values = self.columns[c].take(arrow_rows).to_pylist()
            out[c] = values if ok.all() else [v if r >= 0 else None for v, r in zip(values, rows)]
        return out

    def _value(self, column: str, row: int) -> Any:
        """The value of one scalar column at one row, as :meth:`column_values` gives it."""
        numeric = self._numeric_column(column)
        if numeric is None:
            return self.columns[column][row].as_py()
        if numeric.dtype.kind == "M":
            return _EPOCH + timedelta(microseconds=int(numeric[row:row + 1].view(np.int64)[0]))
        return numeric[row].item()

    def _numeric_column(self, name: str) -> np.ndarray | None:
        """A null-free integer, float, bool or UTC microsecond timestamp column as a (zero-copy) numpy array:
        much cheaper to index for a few rows than an Arrow ``take``. Others (strings, nulls) stay Arrow."""
        if name not in self._numeric:
            col = self.columns[name]
            typ = col.type
            plain = pa.types.is_integer(typ) or pa.types.is_floating(typ) or pa.types.is_boolean(typ) or (
                pa.types.is_timestamp(typ) and typ.unit == "us" and typ.tz in ("UTC", "+00:00"))
            arr = None
            if plain and col.null_count == 0:
                arr = np.asarray(col.to_numpy()) if col.num_chunks == 1 else np.asarray(col.combine_chunks()
                                                                                        .to_numpy())
            self._numeric[name] = arr
        return self._numeric[name]

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
                exact: bool = False, feature: str | None = None) -> Neighbors:
        """The ``k`` rows most similar to ``vector`` (or to the vector of ``key``, looked up in
        ``query_view`` when given, e.g. a user view against this item view).

        ``filter`` (see :mod:`featurestore.online.filters`) applies before ranking, so k results come
        back whenever k rows match; ``exclude`` drops those keys. ``exact=True`` forces exact search.
        ``feature`` names the vector feature searched (default: the spec's ``online.vector``, else the first).
        """
        fast = (feature is None and self._searcher is not None and not filter and not exact and type(k) is int
                and 0 < k <= self.rows and (exclude is None or (type(exclude) in (list, tuple) and not exclude)))
        if fast and key is None and vector is not None:
            found = self._approx_one(vector, k)  # the common case, straight to the index
            if found is not None:
                return found
        if feature is not None or self.part is None:
            return self._searched(feature).nearest(vector, key=key, query_view=query_view, k=k, filter=filter,
                                                   exclude=exclude, exact=exact)
        if key is not None or vector is None:
            vector = self.query_vector(vector=vector, key=key, query_view=query_view)
            found = self._approx_one(vector, k) if fast else None
            if found is not None:
                return found
        q = self._checked(vector, single=True)
        return self.nearest_many(q[None, :], k=k, filter=filter, exclude=exclude, exact=exact)[0]

    def _approx_one(self, vector: Any, k: int) -> Neighbors | None:
        """One unfiltered approximate query with the least work around the index, or None for anything
        unusual (a bad, zero, tiny or huge vector, a short answer): the general path then answers or raises.
        The sum of squares is faiss's, in float32: NaN or infinity there (a bad value, or an overflow)
        sends the query to the general path, which checks and scales it in float64."""
        q = vector
        if type(q) is not np.ndarray or q.dtype != _F32 or q.shape != (self.dim,) or not q.flags.c_contiguous:
            try:
                q = np.ascontiguousarray(vector, dtype=np.float32)
            except (TypeError, ValueError):
                return None
            if q.shape != (self.dim,):
                return None
        searcher = self._searcher
        assert searcher is not None
        ss = searcher.sqnorm(q)
        if not _SS_MIN <= ss <= _SS_MAX:  # also False for NaN
            return None
        hit = searcher.one(searcher.unit(q) if self.metric == "cosine" else q, k)
        if hit is None:
            return None
        return _neighbors(self._keys_of(hit[0]), hit[1], hit[0], False)

    def nearest_many(self, vectors: Any, *, k: int = 10, filter: Mapping[str, Any] | None = None,
                     exclude: Sequence[Any] = (), exact: bool = False, feature: str | None = None
                     ) -> list[Neighbors]:
        """:meth:`nearest` for a batch of query vectors (n, dim): one :class:`Neighbors` per query."""
        if feature is not None or self.part is None:
            return self._searched(feature).nearest_many(vectors, k=k, filter=filter, exclude=exclude, exact=exact)
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

    def _searched(self, feature: str | None) -> OnlineView:
        """The view bound to the vector feature a search names, or InvalidQuery for a group of scalars."""
        if feature is None and self.part is None:
            raise InvalidQuery(f"{self.name} v{self.version} has no vector feature: a group of scalars serves "
                               f"point lookups only")
        view = self.using(feature)
        if view.part is None:  # pragma: no cover - using() names the feature or raises
            raise InvalidQuery(f"{self.name} has no vector feature {feature!r}")
        return view

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
        return _neighbors(self._keys_of(ids), scores.astype(np.float32, copy=False), ids, exact)

    def keys_at(self, rows: Any) -> list[Any]:
        """The entity keys of some row numbers (tuples for a composite key), in order."""
        rows = np.asarray(rows, np.int64)
        return self._keys_of(rows) if len(rows) else []

    def _keys_of(self, rows: np.ndarray) -> list[Any]:
        if self._raw_keys:
            return self.columns[self.key_names[0]].take(pa.array(rows.ravel())).to_pylist()
        keys = self.keys.keys[rows].tolist()
        if isinstance(self.keys, CompositeKeyIndex):  # stored encoded: give them back as tuples
            return [self.keys.public(k) for k in keys] if rows.ndim == 2 else self.keys.public(keys)
        return keys  # type: ignore[no-any-return]

    def _many_neighbors(self, ids: np.ndarray, scores: np.ndarray, exact: bool) -> list[Neighbors]:
        """One :class:`Neighbors` per row of (ids, scores), the keys looked up for the batch at once."""
        if len(ids) == 0 or (ids[:, -1] < 0).any():
            return [self._neighbors(i, s, exact) for i, s in zip(ids, scores)]
        keys = self._keys_of(ids)
        if self._raw_keys:
            k = ids.shape[1]
            keys = [keys[j:j + k] for j in range(0, len(keys), k)]
        scores = scores.astype(np.float32, copy=False)
        return [_neighbors(kk, s, i, exact) for kk, s, i in zip(keys, scores, ids)]

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
    if type(keys) is list or type(keys) is tuple:
        return  # the common case, checked first
    if isinstance(keys, str | bytes | int | float) or not hasattr(keys, "__len__") or isinstance(keys, Mapping):
        raise InvalidQuery(f"{what} takes a sequence of keys; got {type(keys).__name__} {keys!r}"
                           + (" (use view[key] for one)" if what == "get" else ""))


def check_columns(columns: Any, what: str = "columns") -> None:
    """``columns`` is a sequence of column (or feature) names: :class:`InvalidQuery` otherwise."""
    if type(columns) is list and all(type(c) is str for c in columns):
        return  # the common case, checked first
    if isinstance(columns, str | bytes) or not hasattr(columns, "__iter__") or isinstance(columns, Mapping) \
            or not all(isinstance(c, str) for c in columns):
        raise InvalidQuery(f"{what} takes a list of {what[:-1]} names; got {columns!r}")


def _upgraded(m: dict[str, Any]) -> dict[str, Any]:
    """A format-2 manifest (one vector feature, one key) in the form of format 3, so such a view still opens."""
    if "vectors" in m:
        return m
    m = dict(m)
    m["vectors"] = {m["vector"]: {"dim": m["dim"], "metric": m["metric"], "suffix": "", "index": m["index"]}}
    m["keys"], m["key_types"] = [m["key"]], [m["key_type"]]
    return m


def _mapped(path: Path) -> np.ndarray:
    """A read-only memory map as a plain ndarray (results of np.take etc. are then plain arrays too)."""
    return npy.mapped(path).view(np.ndarray)


def open_view(path: str | Path) -> OnlineView:
    """Open a published view folder (memory-mapped)."""
    return OnlineView(path)
