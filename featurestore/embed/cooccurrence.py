"""The default item model: windowed co-occurrence in time-ordered sequences, PPMI, truncated SVD.

Each entity's events, ordered by time, form a sequence; consecutive repeats of one item (a view,
add-to-cart and purchase burst) collapse into one token carrying the largest event-type weight.
Every pair of tokens at most ``window`` apart counts, weighted by the product of the square roots of
their event-type weights and by ``(window - d + 1) / window`` for distance ``d`` (word2vec's dynamic
window in expectation). Counts become positive pointwise mutual information with the context
distribution smoothed by ``alpha`` (Levy, Goldberg and Dagan 2015), then a seeded randomized truncated
SVD (scikit-learn) gives ``U * S**eig`` and rows are L2-normalised. Everything is vectorised over
sparse matrices: no Python loop over events. The same events and seed give identical bytes.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

from featurestore.embed.base import ItemModel, l2_normalize
from featurestore.errors import PipelineError
from featurestore.events import Events


@dataclass(frozen=True)
class CooccurrenceEmbedder:
    """PPMI + randomized SVD item embedder (see the module docstring).

    ``window``: tokens on each side that count as context; ``alpha``: context-distribution smoothing;
    ``eig``: singular-value weighting (0 = U only, 0.5 = symmetric, 1 = U*S); ``shift``: subtract
    ``log(shift)`` from PMI (1 = none); ``min_count``: items with fewer events are left out;
    ``n_iter``/``oversamples``: randomized SVD power iterations and oversampling; ``seed``: the SVD's
    random state.
    """

    dim: int = 64
    window: int = 5
    alpha: float = 0.75
    eig: float = 0.5
    shift: float = 1.0
    min_count: int = 1
    collapse_repeats: bool = True
    n_iter: int = 4
    oversamples: int = 16
    seed: int = 0
    name: str = "cooccurrence"

    def __post_init__(self) -> None:
        checks = [(self.dim >= 1, "dim must be >= 1"), (self.window >= 1, "window must be >= 1"),
                  (0 < self.alpha <= 1, "alpha must be in (0, 1]"), (self.shift >= 1, "shift must be >= 1"),
                  (self.min_count >= 1, "min_count must be >= 1"), (self.n_iter >= 0, "n_iter must be >= 0"),
                  (0 <= self.eig <= 1, "eig must be in [0, 1]")]
        for ok, msg in checks:
            if not ok:
                raise PipelineError(f"CooccurrenceEmbedder: {msg}")

    def params(self) -> dict[str, Any]:
        return asdict(self)

    def fit(self, events: Events, *, progress: bool = False) -> ItemModel:
        t0 = time.perf_counter()
        counts = cooccurrence(events, window=self.window, min_count=self.min_count,
                              collapse_repeats=self.collapse_repeats)
        t1 = time.perf_counter()
        keep = np.flatnonzero(np.asarray(counts.sum(axis=1)).ravel() > 0)
        if keep.size <= self.dim:
            raise PipelineError(
                f"the co-occurrence model needs more than dim={self.dim} items that co-occur with another "
                f"item; these events have {keep.size} (of {events.n_items} items)")
        counts = counts[keep][:, keep].tocsr()
        ppmi = ppmi_matrix(counts, alpha=self.alpha, shift=self.shift)
        t2 = time.perf_counter()
        vectors = svd_embed(ppmi, self.dim, eig=self.eig, n_iter=self.n_iter, oversamples=self.oversamples,
                            seed=self.seed)
        t3 = time.perf_counter()
        info = {"items": int(keep.size), "pairs_nnz": int(counts.nnz), "ppmi_nnz": int(ppmi.nnz),
                "seconds": {"count": round(t1 - t0, 3), "ppmi": round(t2 - t1, 3), "svd": round(t3 - t2, 3)}}
        return ItemModel(events.item_ids[keep], vectors, info)


def sequence_tokens(events: Events, *, collapse_repeats: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(entity, item, weight) of each token, in sequence order; consecutive repeats of an item within
    an entity collapse into one token with the largest weight."""
    ent, item, w = events.entity, events.item, events.weight
    if not collapse_repeats or ent.size == 0:
        return ent, item, w
    new = np.ones(ent.size, dtype=bool)
    new[1:] = (ent[1:] != ent[:-1]) | (item[1:] != item[:-1])
    starts = np.flatnonzero(new)
    wmax = np.maximum.reduceat(w, starts) if starts.size else w[:0]
    return ent[starts], item[starts], wmax.astype(np.float32)


def cooccurrence(events: Events, *, window: int = 5, min_count: int = 1,
                 collapse_repeats: bool = True) -> sp.csr_matrix:
    """Symmetric (n_items, n_items) float32 matrix of windowed, weighted co-occurrence counts."""
    ent, item, w = sequence_tokens(events, collapse_repeats=collapse_repeats)
    n = events.n_items
    if min_count > 1:
        ok = events.item_count[item] >= min_count
        ent, item, w = ent[ok], item[ok], w[ok]
    sw = np.sqrt(w, dtype=np.float32)
    rows, cols, vals = [], [], []
    for d in range(1, window + 1):  # one vectorised pass per distance, not per event
        if ent.size <= d:
            break
        same = (ent[d:] == ent[:-d]) & (item[d:] != item[:-d])
        a, b = item[:-d][same], item[d:][same]
        v = sw[:-d][same] * sw[d:][same] * np.float32((window - d + 1) / window)
        rows.append(a)
        cols.append(b)
        vals.append(v)
    if not rows:
        return sp.csr_matrix((n, n), dtype=np.float32)
    a = np.concatenate(rows)
    b = np.concatenate(cols)
    v = np.concatenate(vals)
    del rows, cols, vals
    upper = sp.coo_matrix((v, (a, b)), shape=(n, n), dtype=np.float32).tocsr()
    upper.sum_duplicates()
    return (upper + upper.T).tocsr()


def ppmi_matrix(counts: sp.csr_matrix, *, alpha: float = 0.75, shift: float = 1.0) -> sp.csr_matrix:
    """Positive PMI with context-distribution smoothing: max(0, log(C_ij * sum(c^a) / (r_i * c_j^a)) - log k)."""
    c = counts.tocsr(copy=True).astype(np.float64)
    c.sum_duplicates()
    row = np.asarray(c.sum(axis=1)).ravel()
    col = np.asarray(c.sum(axis=0)).ravel() ** alpha
    total = col.sum()
    r_idx = np.repeat(np.arange(c.shape[0]), np.diff(c.indptr))
    with np.errstate(divide="ignore"):
        pmi = np.log(c.data) + np.log(total) - np.log(row[r_idx]) - np.log(col[c.indices]) - np.log(shift)
    c.data = np.maximum(pmi, 0.0)
    c.eliminate_zeros()
    return c.astype(np.float32)


def svd_embed(matrix: sp.csr_matrix, dim: int, *, eig: float = 0.5, n_iter: int = 4, oversamples: int = 16,
              seed: int = 0) -> np.ndarray:
    """Seeded randomized truncated SVD, ``U * S**eig``, rows L2-normalised (float32)."""
    from sklearn.utils.extmath import randomized_svd

    u, s, _ = randomized_svd(matrix, dim, n_oversamples=oversamples, n_iter=n_iter,
                             power_iteration_normalizer="QR", random_state=seed, flip_sign=True)
    vectors = (u * (s ** eig)).astype(np.float32)
    return l2_normalize(vectors)
