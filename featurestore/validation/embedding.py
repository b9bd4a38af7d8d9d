"""Embedding checks that great_expectations lacks, in numpy, and the per-row scalars it checks instead.

:func:`derive` turns a vector column into per-row scalars (dimension, norm, count of non-finite
values) that built-in expectations check quickly; the functions below compute batch-level checks:
dimension and dtype, the norm distribution, duplicate vectors across keys, collapse (effective rank and
mean pairwise cosine on a sample), drift against the previous commit for shared keys (mean cosine and
neighbour overlap@k on a sample) and coverage of the expected entities. Each returns a
:class:`~featurestore.validation.report.CheckResult`. Samples use a fixed seed: a report is reproducible.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from featurestore.errors import SchemaMismatch
from featurestore.validation.expectations import Collapse, Coverage, Drift, NormDistribution
from featurestore.validation.report import CheckResult

SEED = 20261126
_HASH_CHUNK = 1 << 16


class Rows(Protocol):
    """Vectors addressed by row number without holding them all (a batch's staged data files): what
    the checks that look at some rows' values (duplicates, collapse, drift) read."""

    @property
    def shape(self) -> tuple[int, int]: ...

    def __getitem__(self, rows: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True)
class Derived:
    """Per-row scalars of one vector column, and the rows that are usable vectors."""

    feature: str
    value_type: str  # Arrow type of the elements, e.g. "float"
    fixed_size: int | None  # the Arrow FixedSizeList size, if it is one
    dims: np.ndarray  # int64 per row; a null vector has dimension 0
    norms: np.ndarray | DiskColumn  # float64 per row; NaN when not computable (null, NaN inside)
    nonfinite: np.ndarray  # int64 per row: NaN/inf elements (a null vector counts 1)
    valid: np.ndarray  # bool per row: right dimension and all finite
    matrix: np.ndarray | Rows  # float32 (n, dim); rows that are not valid hold zeros
    hashes: np.ndarray | None = None  # uint64 per row: row_hashes of the matrix, when computed beforehand

    @property
    def n(self) -> int:
        return len(self.dims)


def single_array(column: pa.ChunkedArray | pa.Array) -> pa.Array:
    """One Array: a one-chunk column's chunk as it is (no copy), else the chunks concatenated.

    ``combine_chunks`` copies even a single chunk: for 1M x 64-d vectors that is 256 MB of fresh
    memory, which measured 0.3-0.5 s inside an insert (page faults on memory the writer just freed).
    """
    if isinstance(column, pa.ChunkedArray):
        return column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()
    return column


def derive(column: pa.ChunkedArray | pa.Array, feature: str, dim: int) -> Derived:
    """Per-row dimension, norm and non-finite count of a list column, tolerating bad rows."""
    arr = single_array(column)
    t = arr.type
    if not (pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)):
        raise SchemaMismatch(f"column {feature!r} must hold vectors (lists of floats); got {t}", column=feature)
    n = len(arr)
    nulls = arr.is_null().to_numpy(zero_copy_only=False) if arr.null_count else np.zeros(n, bool)
    fixed = t.list_size if pa.types.is_fixed_size_list(t) else None
    if fixed is not None:
        dims = np.full(n, fixed, np.int64)
        dims[nulls] = 0
    else:
        dims = pc.fill_null(pc.list_value_length(arr), 0).to_numpy(zero_copy_only=False).astype(np.int64)
    with np.errstate(over="ignore", invalid="ignore"):
        if fixed is not None and fixed == dim and not nulls.any():
            values = arr.values.slice(arr.offset * dim, n * dim)
            flat = np.asarray(values.to_numpy(zero_copy_only=False), dtype=np.float32)
            matrix = flat.reshape(n, dim)
            norms, nonfinite = _fast_norms(matrix)
        elif fixed is None and not nulls.any() and bool((dims == dim).all()):  # a list column, all well-formed
            flat = np.asarray(pc.list_flatten(arr).to_numpy(zero_copy_only=False), dtype=np.float32)
            matrix = flat.reshape(n, dim)
            norms, nonfinite = _fast_norms(matrix)
        else:
            flat = np.asarray(pc.list_flatten(arr).to_numpy(zero_copy_only=False), dtype=np.float32)
            norms, nonfinite, matrix = _ragged(flat, dims, nulls, dim)
    valid = (dims == dim) & (nonfinite == 0)
    if not valid.all():
        matrix = np.where(valid[:, None], matrix, np.float32(0))
    return Derived(feature, str(t.value_type), fixed, dims, norms, nonfinite, valid, matrix)


def _fast_norms(m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    norms = np.sqrt(np.einsum("ij,ij->i", m, m)).astype(np.float64)
    nonfinite = np.zeros(len(m), np.int64)
    bad = ~np.isfinite(norms)
    if bad.any():  # rare: recount exactly (a huge finite value also overflows the norm)
        rows = np.flatnonzero(bad)
        nonfinite[rows] = (~np.isfinite(m[rows])).sum(axis=1)
        norms[rows[nonfinite[rows] > 0]] = np.nan
        big = rows[nonfinite[rows] == 0]  # finite values whose float32 squares overflowed
        if len(big):
            norms[big] = np.linalg.norm(m[big].astype(np.float64), axis=1)
    return norms, nonfinite


def _ragged(flat: np.ndarray, dims: np.ndarray, nulls: np.ndarray, dim: int
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n = len(dims)
    starts = np.cumsum(dims) - dims
    row_of = np.repeat(np.arange(n), dims)  # per-row sums, not differences of a running sum (precision)
    finite = np.isfinite(flat)
    nonfinite = np.bincount(row_of, weights=~finite, minlength=n).astype(np.int64)
    sq = np.where(finite, flat.astype(np.float64) ** 2, 0.0)
    norms = np.sqrt(np.bincount(row_of, weights=sq, minlength=n))
    nonfinite[nulls] = 1
    norms[(nonfinite > 0)] = np.nan
    matrix = np.zeros((n, dim), np.float32)
    ok = np.flatnonzero(dims == dim)
    if len(ok):
        idx = starts[ok][:, None] + np.arange(dim)[None, :]
        matrix[ok] = flat[idx]
    return norms, nonfinite, matrix


# ---- checks -------------------------------------------------------------------------------------
def repeated(a: np.ndarray) -> Any:
    """The one value of a per-row array kept as a zero-stride view (a batched insert keeps a column's
    dimensions and validity so when every row agrees), else None."""
    return a.item(0) if len(a) > 1 and a.strides == (0,) else None


def check_dtype(d: Derived, dim: int) -> CheckResult:
    """The column holds float32 vectors of exactly ``dim`` values."""
    one = repeated(d.dims)
    values, counts = (np.array([one]), np.array([d.n])) if one is not None else np.unique(d.dims, return_counts=True)
    seen = {int(v): int(c) for v, c in sorted(zip(values, counts), key=lambda vc: -vc[1])[:5]}
    return dtype_result(d.feature, d.value_type, d.fixed_size, seen, int((d.dims != dim).sum()), dim)


def dtype_result(feature: str, value_type: str, fixed_size: int | None, seen: dict[int, int], wrong: int,
                 dim: int) -> CheckResult:
    """The dimension-and-dtype check from its counts (``seen``: the most common dimensions)."""
    ok = value_type == "float" and wrong == 0 and (fixed_size in (None, dim))
    return CheckResult(
        name=f"{feature}: dimension and dtype", engine="numpy", expectation="vector_dimension_and_dtype",
        column=feature, success=ok,
        observed={"dtype": "float32" if value_type == "float" else value_type, "dims": seen,
                  "rows_with_wrong_dim": wrong},
        threshold={"dtype": "float32", "dim": dim},
        details="" if ok else f"{wrong} row(s) do not have dimension {dim}" if wrong else "elements are not float32",
    )


class DiskColumn:
    """A float64 value per row in a file (a large batched insert's norms, :mod:`.batches`): what the
    checks read of it, a chunk of rows or a few rows at a time, without holding it."""

    def __init__(self, path: str, n: int):
        self.path, self.n = path, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, rows: slice | np.ndarray) -> np.ndarray:
        """A slice of rows (read from the file), or the rows ``rows`` (only their pages)."""
        if isinstance(rows, slice):
            lo, hi, _ = rows.indices(self.n)
            return np.fromfile(self.path, np.float64, count=max(hi - lo, 0), offset=lo * 8)
        m = np.memmap(self.path, np.float64, "r", shape=(self.n,))
        try:
            return np.array(m[np.asarray(rows, np.int64)])
        finally:
            del m


def _chunks(values: np.ndarray | DiskColumn, valid: np.ndarray) -> Any:
    """(first row, values, valid) of each chunk of rows (:data:`_SAMPLE_CHUNK` rows)."""
    for lo in range(0, len(values), _SAMPLE_CHUNK):
        hi = min(lo + _SAMPLE_CHUNK, len(values))
        yield lo, values[lo:hi], valid[lo:hi]


def _valid_chunks(values: np.ndarray | DiskColumn, valid: np.ndarray) -> Any:
    for _, v, ok in _chunks(values, valid):
        yield v if repeated(valid) is True else v[ok]


def norm_stats(norms: np.ndarray | DiskColumn, valid: np.ndarray) -> dict[str, float] | None:
    """min, p01, p50, p99, max, mean and std of the ``valid`` rows' ``norms`` (None: none), chunk by
    chunk, so a column on disk is never held whole. The quantiles are np.quantile's (linear) of the
    order statistics found exactly (:func:`order_statistics`); the mean and the standard deviation
    add each chunk's sum exactly (``math.fsum``)."""
    n, low, high, sums = 0, np.inf, -np.inf, []
    for v in _valid_chunks(norms, valid):
        if len(v):
            n += len(v)
            low, high = min(low, float(v.min())), max(high, float(v.max()))
            sums.append(float(np.add.reduce(v)))
    if not n:
        return None
    mean = math.fsum(sums) / n
    std = math.sqrt(math.fsum(float(np.add.reduce(np.square(v - mean))) for v in _valid_chunks(norms, valid)) / n)
    quantiles = {}
    at = {q: (n - 1) * q for q in _QUANTILES}  # numpy's virtual index of the linear method
    ranks = {r for v in at.values() for r in (min(int(v), n - 1), min(int(v) + 1, n - 1))}
    ordered = order_statistics(norms, valid, sorted(ranks))
    for q, v in at.items():
        pair = np.array([ordered[min(int(v), n - 1)], ordered[min(int(v) + 1, n - 1)]])
        quantiles[q] = float(np.quantile(pair, v - int(v)))  # numpy's own interpolation between them
    return {"min": low, "p01": quantiles[0.01], "p50": quantiles[0.5], "p99": quantiles[0.99], "max": high,
            "mean": mean, "std": std}


_QUANTILES = (0.01, 0.5, 0.99)


def _keys(v: np.ndarray) -> np.ndarray:
    """Unsigned keys in the order of the float64 values ``v`` (negative: bits inverted; else sign set)."""
    bits = np.ascontiguousarray(v, np.float64).view(np.uint64)
    return np.where(bits >> np.uint64(63) == 1, ~bits, bits | np.uint64(1 << 63))


def _value(key: int) -> float:
    bits = key & ((1 << 63) - 1) if key >> 63 else ~key & ((1 << 64) - 1)
    return float(np.array([bits], np.uint64).view(np.float64)[0])


def order_statistics(values: np.ndarray | DiskColumn, valid: np.ndarray, ranks: list[int]) -> dict[int, float]:
    """The ``valid`` values of ``values`` at 0-based ``ranks`` of their ascending order, exactly: a radix
    selection on 16 bits of the values' order-preserving keys per pass, four passes over the chunks (no
    copy of the column, a histogram of 65,536 counts per rank)."""
    prefix = {r: 0 for r in ranks}
    left = {r: r for r in ranks}  # the rank still to find among the values under the prefix
    for shift in (48, 32, 16, 0):
        wanted = sorted(set(prefix.values()))
        hist = {p: np.zeros(1 << 16, np.int64) for p in wanted}
        for v in _valid_chunks(values, valid):
            keys = _keys(v)
            for p in wanted:
                sel = keys if shift == 48 else keys[keys >> np.uint64(shift + 16) == np.uint64(p)]
                hist[p] += np.bincount(((sel >> np.uint64(shift)) & np.uint64(0xFFFF)).astype(np.int64),
                                       minlength=1 << 16)
        for r in ranks:
            counts = np.cumsum(hist[prefix[r]])
            digit = int(np.searchsorted(counts, left[r], side="right"))
            left[r] -= int(counts[digit - 1]) if digit else 0
            prefix[r] = (prefix[r] << 16) | digit
    return {r: _value(prefix[r]) for r in ranks}


def check_norm_distribution(d: Derived, rule: NormDistribution) -> CheckResult:
    return norm_result(d.feature, rule, norm_stats(d.norms, d.valid))


def norm_result(feature: str, rule: NormDistribution, stats: dict[str, float] | None) -> CheckResult:
    """The norm-distribution check from the norms' min, p01, p50, p99, max, mean and std (None: no
    valid vector)."""
    base = dict(name=f"{feature}: norm distribution", engine="numpy", expectation="vector_norm_distribution",
                column=feature, threshold={"p01_min": rule.p01_min, "p99_max": rule.p99_max, "cv_max": rule.cv_max})
    if stats is None:
        return CheckResult(**base, success=True, skipped=True, details="no valid vectors")  # type: ignore[arg-type]
    p01, p99, mean, std = stats["p01"], stats["p99"], stats["mean"], stats["std"]
    cv = std / mean if mean > 0 else float("inf")
    problems = []
    if rule.p01_min is not None and p01 < rule.p01_min:
        problems.append(f"p01 {p01:.4g} < {rule.p01_min}")
    if rule.p99_max is not None and p99 > rule.p99_max:
        problems.append(f"p99 {p99:.4g} > {rule.p99_max}")
    if rule.cv_max is not None and cv > rule.cv_max:
        problems.append(f"cv {cv:.4g} > {rule.cv_max}")
    return CheckResult(**base, success=not problems,  # type: ignore[arg-type]
                       observed={**stats, "cv": cv}, details="; ".join(problems))


def row_hashes(m: np.ndarray) -> np.ndarray:
    """A 64-bit hash of each row's bytes: identical rows hash equal (collisions are re-checked exactly).

    A multiply-add of the row's 64-bit words with fixed odd constants (wrapping), then a final mix:
    one vectorised pass per block of rows, no per-column Python loop.
    """
    n = len(m)
    raw = np.ascontiguousarray(m)
    words = raw.view(np.uint64) if raw.shape[1] % 2 == 0 else raw.view(np.uint32).astype(np.uint64)
    mults = np.random.default_rng(SEED).integers(1, 2**63, words.shape[1], dtype=np.uint64) * np.uint64(2) + \
        np.uint64(1)
    out = np.empty(n, np.uint64)
    for lo in range(0, n, _HASH_CHUNK):
        out[lo:lo + _HASH_CHUNK] = (words[lo:lo + _HASH_CHUNK] * mults).sum(axis=1, dtype=np.uint64)
    out ^= out >> np.uint64(29)
    out *= np.uint64(0x9E3779B97F4A7C15)
    out ^= out >> np.uint64(32)
    return out


def check_duplicates(d: Derived, keys: Any, max_share: float) -> CheckResult:
    """Rows whose vector is bit-identical to the vector of a row with a different key."""
    rows = np.flatnonzero(d.valid)
    if len(rows) < 2:
        return duplicates_result(d.feature, max_share, len(rows), 0, 0, [])
    with np.errstate(over="ignore"):
        if d.hashes is not None:  # a row's hash depends on that row alone: the same as hashing them now
            h = d.hashes if len(rows) == d.n else d.hashes[rows]
        else:
            h = row_hashes(d.matrix if len(rows) == d.n else d.matrix[rows])  # type: ignore[arg-type]
    import pandas as pd

    cand_rows = rows[pd.Index(h).duplicated(keep=False)]  # a hash table: cheaper than sorting 1M hashes
    dup_rows = 0
    groups = 0
    examples: list[list[Any]] = []
    if len(cand_rows):
        blob = np.ascontiguousarray(d.matrix[cand_rows]).view(np.dtype((np.void, d.matrix.shape[1] * 4))).ravel()
        _, group = np.unique(blob, return_inverse=True)
        frame = pd.DataFrame({"g": group.ravel(), "k": keys(cand_rows)})
        distinct = frame.drop_duplicates().groupby("g")["k"].agg(["size", list])
        multi = distinct[distinct["size"] > 1]
        groups = len(multi)
        dup_rows = int(np.isin(group, multi.index.to_numpy()).sum())
        examples = [sorted(map(str, ks))[:3] for ks in multi["list"].head(3)]
    return duplicates_result(d.feature, max_share, len(rows), dup_rows, groups, examples)


def duplicates_result(feature: str, max_share: float, rows: int, dup_rows: int, groups: int,
                      examples: list[list[Any]]) -> CheckResult:
    """The duplicate-vectors check from its counts (``rows``: the valid vectors)."""
    base = dict(name=f"{feature}: duplicate vectors across keys", engine="numpy",
                expectation="vector_duplicates_across_keys", column=feature, threshold={"max_share": max_share})
    if rows < 2:
        return CheckResult(**base, success=True, skipped=True, details="fewer than 2 vectors")  # type: ignore[arg-type]
    share = dup_rows / rows
    return CheckResult(**base, success=share <= max_share,  # type: ignore[arg-type]
                       observed={"share": share, "rows": dup_rows, "groups": groups, "examples": examples})


def sample_rows(mask: Any, k: int, rng: np.random.Generator) -> tuple[np.ndarray, int]:
    """``np.sort(rng.choice(np.flatnonzero(mask), k, replace=False))`` (every marked row when there are
    no more than ``k``), drawing the same numbers, without a row number per marked row (8 bytes a row
    of a 100M-row insert); and how many rows are marked."""
    counts = [int(np.count_nonzero(mask[lo:lo + _SAMPLE_CHUNK])) for lo in range(0, len(mask), _SAMPLE_CHUNK)]
    total = sum(counts)
    if total <= k:
        every = [np.flatnonzero(mask[lo:lo + _SAMPLE_CHUNK]) + lo for lo in range(0, len(mask), _SAMPLE_CHUNK)]
        return (np.concatenate(every) if every else np.zeros(0, np.int64)), total
    picked = np.sort(rng.choice(total, k, replace=False))  # the draw choice() makes from any array of total
    out, seen = [], 0
    for lo, n in zip(range(0, len(mask), _SAMPLE_CHUNK), counts, strict=True):
        a, b = np.searchsorted(picked, [seen, seen + n])
        if b > a:
            out.append(np.flatnonzero(mask[lo:lo + _SAMPLE_CHUNK])[picked[a:b] - seen] + lo)
        seen += n
    return np.concatenate(out), total


_SAMPLE_CHUNK = 1 << 20


class _Usable:
    """Rows with a valid vector of positive finite norm, computed a slice of rows at a time."""

    def __init__(self, norms: np.ndarray | DiskColumn, valid: np.ndarray):
        self.norms, self.valid = norms, valid

    def __len__(self) -> int:
        return len(self.norms)

    def __getitem__(self, rows: slice) -> np.ndarray:
        v = self.norms[rows]
        return self.valid[rows] & (v > 0) & np.isfinite(v)


def check_collapse(d: Derived, rule: Collapse) -> list[CheckResult]:
    """Effective rank and mean pairwise cosine of a sample of unit vectors."""
    usable = _Usable(d.norms, d.valid)
    thr_rank = {"min_effective_rank": rule.min_effective_rank, "sample": rule.sample}
    thr_cos = {"max_mean_cosine": rule.max_mean_cosine, "sample": rule.sample}
    out = []
    rng = np.random.default_rng(SEED)
    rows, total = sample_rows(usable, rule.sample, rng)
    del usable
    if total < max(3, rule.min_rows):
        for nm, exp, thr in (("effective rank", "vector_effective_rank", thr_rank),
                             ("mean pairwise cosine", "vector_mean_pairwise_cosine", thr_cos)):
            out.append(CheckResult(name=f"{d.feature}: collapse ({nm})", engine="numpy", expectation=exp,
                                   column=d.feature, success=True, skipped=True, threshold=thr,
                                   details=f"{total} non-zero vectors, fewer than min_rows {rule.min_rows}"))
        return out
    u = d.matrix[rows].astype(np.float64) / d.norms[rows][:, None]
    if rule.min_effective_rank is not None:
        # singular values from the small dim x dim Gram matrix: far cheaper than an SVD of the sample
        s = np.sqrt(np.clip(np.linalg.eigvalsh(u.T @ u), 0.0, None))
        p = s / s.sum()
        p = p[p > 0]
        erank = float(np.exp(-(p * np.log(p)).sum()))
        out.append(CheckResult(name=f"{d.feature}: collapse (effective rank)", engine="numpy",
                               expectation="vector_effective_rank", column=d.feature,
                               success=erank >= rule.min_effective_rank,
                               observed={"effective_rank": erank, "sample": len(rows)}, threshold=thr_rank))
    if rule.max_mean_cosine is not None:
        m = len(u)
        total = u.sum(axis=0)
        mean_cos = float((total @ total - m) / (m * (m - 1)))
        out.append(CheckResult(name=f"{d.feature}: collapse (mean pairwise cosine)", engine="numpy",
                               expectation="vector_mean_pairwise_cosine", column=d.feature,
                               success=mean_cos <= rule.max_mean_cosine,
                               observed={"mean_cosine": mean_cos, "sample": m}, threshold=thr_cos))
    return out


def _neighbours(x: np.ndarray, k: int, metric: str) -> np.ndarray:
    if metric == "cosine":
        norms = np.linalg.norm(x, axis=1, keepdims=True)
        x = x / np.where(norms > 0, norms, 1.0)
    scores = x @ x.T
    if metric == "l2":
        sq = (x * x).sum(axis=1)
        scores = 2 * scores - sq[:, None] - sq[None, :]
    np.fill_diagonal(scores, -np.inf)
    return np.argpartition(-scores, k, axis=1)[:, :k]


def check_drift(feature: str, new: np.ndarray, old: np.ndarray, rule: Drift, metric: str,
                *, base_commit: int | None, shared_total: int | None = None) -> list[CheckResult]:
    """Mean cosine between new and old vectors of the same keys, and neighbour overlap@k among them.

    ``new`` and ``old`` are aligned row for row (same key), already sampled to at most ``rule.sample``.
    """
    thr_cos = {"min_mean_cosine": rule.min_mean_cosine, "sample": rule.sample}
    thr_nn = {"min_neighbor_overlap": rule.min_neighbor_overlap, "k": rule.k, "sample": rule.sample}
    out = []
    common = {"base_commit": base_commit, "shared_keys": shared_total, "sample": len(new)}
    few = len(new) < rule.min_shared
    why = ("no previous commit" if base_commit is None else
           f"{len(new)} shared keys, fewer than min_shared {rule.min_shared}")
    if rule.min_mean_cosine is not None:
        if few:
            out.append(CheckResult(name=f"{feature}: drift (mean cosine)", engine="numpy",
                                   expectation="vector_drift_mean_cosine", column=feature, success=True,
                                   skipped=True, threshold=thr_cos, observed=common, details=why))
        else:
            a = new.astype(np.float64)
            b = old.astype(np.float64)
            denom = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
            cos = np.where(denom > 0, (a * b).sum(axis=1) / np.where(denom > 0, denom, 1.0), 0.0)
            mean_cos = float(cos.mean())
            out.append(CheckResult(name=f"{feature}: drift (mean cosine)", engine="numpy",
                                   expectation="vector_drift_mean_cosine", column=feature,
                                   success=mean_cos >= rule.min_mean_cosine, threshold=thr_cos,
                                   observed={"mean_cosine": mean_cos, "p05_cosine": float(np.quantile(cos, 0.05)),
                                             **common}))
    if rule.min_neighbor_overlap is not None:
        if few or len(new) <= rule.k:
            out.append(CheckResult(name=f"{feature}: drift (neighbour overlap@{rule.k})", engine="numpy",
                                   expectation="vector_drift_neighbor_overlap", column=feature, success=True,
                                   skipped=True, threshold=thr_nn, observed=common,
                                   details=why if few else f"{len(new)} shared keys, need more than k={rule.k}"))
        else:
            nn_new = np.sort(_neighbours(new.astype(np.float64), rule.k, metric), axis=1)
            nn_old = np.sort(_neighbours(old.astype(np.float64), rule.k, metric), axis=1)
            hits = sum(len(np.intersect1d(x, y, assume_unique=True)) for x, y in zip(nn_new, nn_old))
            overlap = hits / (len(new) * rule.k)
            out.append(CheckResult(name=f"{feature}: drift (neighbour overlap@{rule.k})", engine="numpy",
                                   expectation="vector_drift_neighbor_overlap", column=feature,
                                   success=overlap >= rule.min_neighbor_overlap, threshold=thr_nn,
                                   observed={"overlap": overlap, **common}))
    return out


def check_coverage(feature: str, rule: Coverage, expected: int | None, present: int,
                   base_commit: int | None) -> CheckResult:
    base = dict(name=f"{feature}: coverage of expected entities", engine="numpy",
                expectation="entity_coverage", column=feature,
                threshold={"min_share": rule.min_share, "expected": rule.expected})
    if not expected:
        return CheckResult(**base, success=True, skipped=True,  # type: ignore[arg-type]
                           observed={"expected": expected or 0, "base_commit": base_commit},
                           details="no expected entities (no previous commit)")
    share = present / expected
    return CheckResult(**base, success=share >= rule.min_share,  # type: ignore[arg-type]
                       observed={"share": share, "present": present, "expected": expected,
                                 "base_commit": base_commit})
