"""Similarity search over an online view's matrix: exact (numpy, blocked) and approximate (faiss IVF or
HNSW), with the same score for every metric: **higher is better**.

- ``cosine``: cosine similarity in [-1, 1] (vectors and query normalised, then inner product)
- ``dot``: the inner product
- ``l2``: minus the Euclidean distance (0 is an exact match)

``auto`` picks exact search up to :data:`AUTO_FLAT_MAX` rows and IVF above. IVF and HNSW tune their
search breadth (``nprobe`` / ``efSearch``) at build time until recall@k on a sample of the view's
own rows (each query's own row left out) reaches ``recall_target``; the measured recall is stored.
faiss is imported only here, only when an approximate index is built or opened.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np

from featurestore.errors import SpecError

Metric = Literal["cosine", "dot", "l2"]
Kind = Literal["flat", "ivf", "hnsw"]
AUTO_FLAT_MAX = 50_000
_PARAMS = {"nlist", "nprobe", "m", "ef_construction", "ef_search", "recall_target", "train_size"}


@dataclass(frozen=True)
class IndexConfig:
    """The resolved similarity-index settings of one view (from the spec's ``online`` section)."""

    kind: Kind
    nlist: int = 0
    nprobe: int = 0  # 0 = tune at build time
    m: int = 32
    ef_construction: int = 80
    ef_search: int = 0  # 0 = tune at build time
    recall_target: float = 0.95
    train_size: int = 0  # IVF k-means sample; 0 = 64 x nlist (at most 256k)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def resolve(kind: str, params: Mapping[str, Any], n: int, *, source: str | None = None) -> IndexConfig:
    """Turn ``online: {index, params}`` into an :class:`IndexConfig` for a view of ``n`` rows."""
    unknown = sorted(set(params) - _PARAMS)
    if unknown:
        raise SpecError(f"unknown index parameter(s) {unknown}; allowed: {sorted(_PARAMS)}",
                        path=source, field="online.params")
    for name, value in params.items():
        ok = isinstance(value, int | float) and not isinstance(value, bool) and value > 0
        if name != "recall_target" and not (ok and float(value).is_integer()):
            raise SpecError(f"must be a positive integer; got {value!r}", path=source,
                            field=f"online.params.{name}")
        if name == "recall_target" and not (ok and value <= 1):
            raise SpecError(f"must be in (0, 1]; got {value!r}", path=source, field="online.params.recall_target")
    p: dict[str, Any] = {k: (float(v) if k == "recall_target" else int(v)) for k, v in params.items()}
    if kind == "auto":
        kind = "flat" if n <= AUTO_FLAT_MAX else "ivf"
    if kind == "ivf":
        p.setdefault("nlist", max(1, min(4096, int(2 * math.sqrt(max(n, 1))))))
        return IndexConfig("ivf", **p)
    if kind not in ("flat", "hnsw"):
        raise SpecError(f"unknown index kind {kind!r}", path=source, field="online.index")
    return IndexConfig(kind, **p)  # type: ignore[arg-type]


# ---- exact -------------------------------------------------------------------------------------
def scores_to_public(raw: np.ndarray, metric: Metric) -> np.ndarray:
    """faiss/numpy raw values -> public scores (higher is better); raw L2 values are squared distances."""
    if metric == "l2":
        return -np.sqrt(np.maximum(raw, 0.0, dtype=np.float32))
    return raw


def exact_topk(matrix: np.ndarray, queries: np.ndarray, k: int, metric: Metric, *,
               rows: np.ndarray | None = None, mask: np.ndarray | None = None,
               sqnorms: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k rows of ``matrix`` per query: (row ids (nq, k), public scores (nq, k)), best first.

    ``rows`` restricts the search to those rows (gathered once); ``mask`` removes rows (boolean, False =
    excluded) without copying the matrix. Fewer than k candidates leave ``-1`` ids and ``-inf`` scores.
    faiss's brute-force kernels do the work (SIMD, a heap per query, the mask applied inside), on this
    thread alone for a few queries.
    """
    nq = queries.shape[0]
    ids_out = np.full((nq, k), -1, np.int64)
    sc_out = np.full((nq, k), -np.inf, np.float32)
    n = matrix.shape[0]
    if k == 0 or n == 0 or nq == 0:
        return ids_out, sc_out
    if rows is not None:
        sub = np.take(matrix, rows, axis=0)
        sub_norms = sqnorms[rows] if sqnorms is not None else None
        ids, sc = exact_topk(sub, queries, k, metric, sqnorms=sub_norms)
        return np.where(ids >= 0, rows[np.maximum(ids, 0)], -1), sc
    faiss = _faiss()
    ptr = faiss.swig_ptr
    x = np.ascontiguousarray(queries, dtype=np.float32)
    y = np.ascontiguousarray(matrix, dtype=np.float32)  # the views' matrices already are: no copy
    kk = min(k, n)
    dist = np.empty((nq, kk), np.float32)
    ids = np.empty((nq, kk), np.int64)
    bitmap = sel = None
    if mask is not None:
        bitmap = np.packbits(mask, bitorder="little")
        sel = faiss.IDSelectorBitmap(len(mask), ptr(bitmap))
    faiss.omp_set_num_threads(1 if nq < 8 else _THREADS)
    d = x.shape[1]
    if metric == "l2":
        norms = None if sqnorms is None else np.ascontiguousarray(sqnorms, dtype=np.float32)  # alive: a name
        faiss.knn_L2sqr(ptr(x), ptr(y), d, nq, n, kk, ptr(dist), ptr(ids), None if norms is None else ptr(norms), sel)
    else:
        faiss.knn_inner_product(ptr(x), ptr(y), d, nq, n, kk, ptr(dist), ptr(ids), sel)
    del bitmap, sel  # kept alive until the search returned
    valid = ids >= 0
    ids_out[:, :kk] = np.where(valid, ids, -1)
    sc_out[:, :kk] = np.where(valid, scores_to_public(dist, metric), -np.inf)
    return ids_out, sc_out


# ---- approximate -------------------------------------------------------------------------------
_THREADS = 0


def _faiss() -> Any:
    global _THREADS
    import faiss

    if not _THREADS:
        _THREADS = faiss.omp_get_max_threads()
    return faiss


def load() -> None:
    """Import faiss now (a server warming its views), not in the first query."""
    _faiss()


def _faiss_metric(metric: Metric) -> int:
    f = _faiss()
    return f.METRIC_L2 if metric == "l2" else f.METRIC_INNER_PRODUCT


def build(matrix: np.ndarray, metric: Metric, cfg: IndexConfig, *,
          log: Callable[[str], None] = lambda _m: None, seed: int = 0) -> Any:
    """Build an IVF or HNSW faiss index over ``matrix`` (the search matrix: normalised for cosine)."""
    faiss = _faiss()
    n, dim = matrix.shape
    x = np.ascontiguousarray(matrix, dtype=np.float32)
    if cfg.kind == "ivf":
        nlist = max(1, min(cfg.nlist, n))
        quantizer = faiss.IndexFlat(dim, _faiss_metric(metric))
        index = faiss.IndexIVFFlat(quantizer, dim, nlist, _faiss_metric(metric))
        index.cp.seed = seed
        index.cp.max_points_per_centroid = 256
        size = cfg.train_size or min(n, max(64 * nlist, 10_000), 262_144)
        rng = np.random.default_rng(seed)
        sample = x if size >= n else x[np.sort(rng.choice(n, size, replace=False))]
        t = time.perf_counter()
        index.train(np.ascontiguousarray(sample))
        log(f"trained IVF ({nlist} lists) on {len(sample):,} rows in {time.perf_counter() - t:.1f}s")
        index.quantizer_trains_alone = 0
    elif cfg.kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, cfg.m, _faiss_metric(metric))
        index.hnsw.efConstruction = cfg.ef_construction
    else:
        raise ValueError(f"no faiss index for kind {cfg.kind!r}")
    t = time.perf_counter()
    step = 100_000
    for start in range(0, n, step):
        index.add(x[start:start + step])
    log(f"added {n:,} rows to {cfg.kind} in {time.perf_counter() - t:.1f}s")
    return index


def set_breadth(index: Any, cfg: IndexConfig, breadth: int) -> None:
    """Set ``nprobe`` (IVF) or ``efSearch`` (HNSW) on an index, for callers using faiss directly;
    :func:`search` passes the breadth with each query instead."""
    if cfg.kind == "ivf":
        index.nprobe = breadth
    else:
        index.hnsw.efSearch = breadth


def search(index: Any, cfg: IndexConfig, breadth: int, queries: np.ndarray, k: int, metric: Metric,
           mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Approximate top-k: (row ids, public scores); ``mask`` is applied inside the search (faiss
    ``IDSelectorBitmap``), so filtered rows never take a place in the result."""
    faiss = _faiss()
    q = np.ascontiguousarray(queries, dtype=np.float32)
    # a few queries run on this thread alone: waking OpenMP workers costs more than it saves, and
    # their spinning slows the caller on a busy machine (the setting is per calling thread)
    faiss.omp_set_num_threads(1 if len(q) < 8 else _THREADS)
    bitmap = sel = None
    if mask is not None:
        bitmap = np.packbits(mask, bitorder="little")
        sel = faiss.IDSelectorBitmap(len(mask), faiss.swig_ptr(bitmap))
    # the breadth travels with each search (not set on the shared index): concurrent searches with
    # different breadths do not interfere
    if cfg.kind == "ivf":
        params = faiss.SearchParametersIVF(nprobe=max(1, breadth))
    else:
        params = faiss.SearchParametersHNSW(efSearch=max(breadth, k))
    if sel is not None:
        params.sel = sel
    dist, ids = index.search(q, k, params=params)
    del bitmap, sel, params  # kept alive until the search returned
    sc = np.where(ids >= 0, scores_to_public(dist, metric), -np.inf).astype(np.float32)
    return ids.astype(np.int64, copy=False), sc


def recall_at_k(approx: np.ndarray, exact: np.ndarray) -> float:
    """Mean fraction of each query's exact top-k found by the approximate search."""
    hits = 0
    total = 0
    for a, e in zip(approx, exact):
        e = e[e >= 0]
        hits += len(np.intersect1d(a[a >= 0], e))
        total += len(e)
    return hits / total if total else 1.0


def tune(index: Any, cfg: IndexConfig, matrix: np.ndarray, metric: Metric, *, k: int = 10,
         sample: int = 256, sqnorms: np.ndarray | None = None, seed: int = 1,
         log: Callable[[str], None] = lambda _m: None) -> tuple[int, float]:
    """Pick the smallest search breadth whose recall@k reaches ``cfg.recall_target`` on a sample of
    rows used as queries (each query's own row left out). Returns (breadth, measured recall)."""
    n = matrix.shape[0]
    fixed = cfg.nprobe if cfg.kind == "ivf" else cfg.ef_search
    if cfg.kind == "ivf":
        candidates = [1, 2, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 1024, 2048, 4096]
        candidates = [c for c in candidates if c < index.nlist] + [index.nlist]
    else:
        candidates = [16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 1024]
    if fixed:
        candidates = [fixed]
    rng = np.random.default_rng(seed)
    qrows = np.sort(rng.choice(n, min(sample, n), replace=False))
    queries = np.ascontiguousarray(np.asarray(matrix[qrows]), dtype=np.float32)
    kk = min(k + 1, n)
    exact, _ = exact_topk(matrix, queries, kk, metric, sqnorms=sqnorms)
    exact = drop_self(exact, qrows, k)
    best = (candidates[-1], 0.0)
    for c in candidates:
        ids, _ = search(index, cfg, c, queries, kk, metric)
        r = recall_at_k(drop_self(ids, qrows, k), exact)
        log(f"{'nprobe' if cfg.kind == 'ivf' else 'efSearch'}={c}: recall@{k} {r:.3f}")
        best = (c, r)
        if r >= cfg.recall_target:
            break
    return best


def drop_self(ids: np.ndarray, qrows: np.ndarray, k: int) -> np.ndarray:
    """Each query's result without its own row, cut to k (recall checks query with the view's rows)."""
    out = np.full((len(ids), k), -1, np.int64)
    for i, (row, q) in enumerate(zip(ids, qrows)):
        kept = row[(row != q) & (row >= 0)][:k]
        out[i, :len(kept)] = kept
    return out


def write(index: Any, path: str) -> None:
    _faiss().write_index(index, path)


def read(path: str, *, resident: bool = False) -> Any:
    """Open a faiss index: memory-mapped where faiss supports it (opening is instant), or read into
    memory with ``resident`` (what a server does: faiss serves memory-mapped IVF lists through
    ``OnDiskInvertedLists``, about 1.3x the search time of in-memory lists)."""
    faiss = _faiss()
    if not resident:
        try:
            return faiss.read_index(path, faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY)
        except RuntimeError:
            pass
    return faiss.read_index(path)


class Searcher:
    """An approximate index with its search breadth, searched with as little work around faiss as
    possible: outputs preallocated, the C++ search called directly, per-search parameters built only
    when a call needs a breadth other than the index's own or a row mask."""

    def __init__(self, index: Any, cfg: IndexConfig, breadth: int, metric: Metric):
        self.index, self.cfg, self.metric = index, cfg, metric
        self.breadth = max(1, breadth)
        set_breadth(index, cfg, self.breadth)
        self.limit: int = index.nlist if cfg.kind == "ivf" else 4096  # the widest breadth a retry uses
        self._faiss = _faiss()
        self._ptr = self._faiss.swig_ptr
        self._search_c = index.search_c
        self._threads = self._faiss.omp_set_num_threads
        self._norm = self._faiss.fvec_norm_L2sqr
        self._renorm = self._faiss.fvec_renorm_L2
        self._dim = int(index.d)
        self._max_one = self.breadth if cfg.kind == "hnsw" else 1 << 62  # HNSW: k beyond efSearch is short
        self._l2 = metric == "l2"

    def sqnorm(self, q: np.ndarray) -> float:
        """The sum of squares of one contiguous float32 query, accumulated in float32 by faiss (NaN or
        infinity for a vector holding either, or too large for float32)."""
        return float(self._norm(self._ptr(q), self._dim))

    def unit(self, q: np.ndarray) -> np.ndarray:
        """A unit-length copy of one contiguous float32 query of non-zero, finite norm (faiss scales it in
        place: cheaper than a numpy product with a Python float)."""
        c = q.copy()
        self._renorm(self._dim, 1, self._ptr(c))
        return c

    def one(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray] | None:
        """Top-k of one contiguous float32 query at the index's own breadth: (row ids, public scores),
        or None when fewer than k rows were reached (the caller searches wider)."""
        if k > self._max_one:
            return None
        ptr = self._ptr
        dist = np.empty(k, np.float32)
        ids = np.empty(k, np.int64)
        self._threads(1)
        self._search_c(1, ptr(q), k, ptr(dist), ptr(ids))
        if ids[k - 1] < 0:
            return None
        return ids, (scores_to_public(dist, self.metric) if self._l2 else dist)

    def many(self, queries: np.ndarray, k: int, mask: np.ndarray | None = None,
             breadth: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-k of a batch of queries: (row ids (nq, k), public scores), ``-1`` / ``-inf`` where a query
        reached fewer than k rows (``mask``: False rows never take a place)."""
        breadth = self.breadth if breadth is None else breadth
        q = np.ascontiguousarray(queries, dtype=np.float32)
        nq = len(q)
        self._threads(1 if nq < 8 else _THREADS)
        if mask is not None or breadth != self.breadth or k > self._max_one:
            return search(self.index, self.cfg, breadth, q, k, self.metric, mask)
        dist = np.empty((nq, k), np.float32)
        ids = np.empty((nq, k), np.int64)
        self._search_c(nq, self._ptr(q), k, self._ptr(dist), self._ptr(ids))
        if self._l2:
            dist = scores_to_public(dist, self.metric)
        short = ids < 0
        if short.any():
            dist[short] = -np.inf
        return ids, dist
