"""The default item model: windowed co-occurrence in time-ordered sequences, PPMI, truncated SVD.

Each entity's events, ordered by time, form a sequence; consecutive repeats of one item (a view,
add-to-cart and purchase burst) collapse into one token carrying the largest event-type weight.
Every pair of tokens at most ``window`` apart counts, weighted by the product of the square roots of
their event-type weights and by ``(window - d + 1) / window`` for distance ``d`` (word2vec's dynamic
window in expectation); pairs split by a pause longer than ``session_gap`` (30 minutes: a new
session) count half. Counts become positive pointwise mutual information with the context
distribution smoothed by ``alpha`` (Levy, Goldberg and Dagan 2015), then a seeded randomized truncated
SVD (scikit-learn) gives ``U * S**eig``.

Stored vectors are compared by cosine, which on plain L2-normalised rows would discard two things
that matter for predicting what an entity does next: how strongly an item is associated (its norm)
and how common it is (PMI divides popularity out). ``scoring`` chooses what cosine between an entity
vector and an item vector ranks by:

- ``"next_item"`` (default): ``dim - 2`` SVD components, one coordinate holding ``log P_alpha(item)``
  and one slack coordinate absorbing the rest of each row's norm (Bachrach et al., RecSys 2014). An
  entity vector is the weighted mean of its items' components with fixed tail ``(popularity/M, 0)``,
  so its cosine with an item ranks items by ``mean PMI(history, item) + popularity * log
  P_alpha(item)``: with the default ``popularity = 1`` an estimate of ``log P(item | history)``
  (exact for one history item and ``eig = 0.5``, up to the clipping of negative PMI). Because
  unrelated items have PMI clipped at 0, best-sellers outside an entity's tastes also rank high;
  lower ``popularity`` (or ``scoring="inner_product"``) when vectors should reflect taste alone.
- ``"inner_product"``: ``dim - 1`` components and the slack coordinate: ranks by the mean PMI alone.
- ``"cosine"``: ``dim`` components, rows L2-normalised: the classic embedding, popularity-blind.

Item-to-item cosine stays meaningful in every mode (the extra coordinates only add a popularity
and a norm term). Everything is vectorised over sparse matrices: no Python loop over events. The
same events and seed give identical bytes.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from datetime import timedelta
from typing import Any, Literal

import numpy as np
import scipy.sparse as sp

from featurestore.embed.base import ItemModel, l2_normalize
from featurestore.errors import PipelineError
from featurestore.events import Events

Scoring = Literal["next_item", "inner_product", "cosine"]
_EXTRA = {"next_item": 2, "inner_product": 1, "cosine": 0}  # coordinates beyond the SVD components


@dataclass(frozen=True)
class CooccurrenceEmbedder:
    """PPMI + randomized SVD item embedder (see the module docstring).

    ``window``: tokens on each side that count as context; ``alpha``: context-distribution smoothing;
    ``eig``: singular-value weighting (0 = U only, 0.5 = symmetric, 1 = U*S); ``scoring``: what an
    entity's cosine with an item ranks by and ``popularity`` the weight of the item prior in it (see
    the module docstring); ``session_gap``/``cross_session``: pairs split by a pause longer than
    ``session_gap`` count ``cross_session`` times as much; ``shift``: subtract
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
    session_gap: timedelta | None = timedelta(minutes=30)
    cross_session: float = 0.5
    scoring: Scoring = "next_item"
    popularity: float = 1.0
    n_iter: int = 2
    oversamples: int = 10
    seed: int = 0
    name: str = "cooccurrence"

    def __post_init__(self) -> None:
        extra = _EXTRA.get(self.scoring)
        if extra is None:
            raise PipelineError(f"CooccurrenceEmbedder: scoring must be one of {sorted(_EXTRA)}; got {self.scoring!r}")
        checks = [(self.dim > extra, f"dim must be > {extra} with scoring={self.scoring!r}"),
                  (self.window >= 1, "window must be >= 1"),
                  (0 < self.alpha <= 1, "alpha must be in (0, 1]"), (self.shift > 0, "shift must be > 0"),
                  (self.min_count >= 1, "min_count must be >= 1"), (self.n_iter >= 0, "n_iter must be >= 0"),
                  (0 <= self.eig <= 1, "eig must be in [0, 1]"),
                  (0 <= self.cross_session <= 1, "cross_session must be in [0, 1]"),
                  (self.popularity >= 0, "popularity must be >= 0"),
                  (self.session_gap is None or self.session_gap > timedelta(0), "session_gap must be positive")]
        for ok, msg in checks:
            if not ok:
                raise PipelineError(f"CooccurrenceEmbedder: {msg}")

    def params(self) -> dict[str, Any]:
        out = asdict(self)
        out["session_gap"] = self.session_gap.total_seconds() if self.session_gap is not None else None
        return out

    def fit(self, events: Events, *, progress: bool = False) -> ItemModel:
        t0 = time.perf_counter()
        counts = cooccurrence(events, window=self.window, min_count=self.min_count,
                              collapse_repeats=self.collapse_repeats, session_gap=self.session_gap,
                              cross_session=self.cross_session)
        t1 = time.perf_counter()
        keep = np.flatnonzero(np.asarray(counts.sum(axis=1)).ravel() > 0)
        if keep.size <= self.dim:
            raise PipelineError(
                f"the co-occurrence model needs more than dim={self.dim} items that co-occur with another "
                f"item; these events have {keep.size} (of {events.n_items} items)")
        counts = counts[keep][:, keep].tocsr()
        ppmi = ppmi_matrix(counts, alpha=self.alpha, shift=self.shift)
        t2 = time.perf_counter()
        k = self.dim - _EXTRA[self.scoring]
        vectors = svd_embed(ppmi, k, eig=self.eig, n_iter=self.n_iter, oversamples=self.oversamples,
                            seed=self.seed, normalize=self.scoring == "cosine")
        query_dims: int | None = None
        query_tail: tuple[float, ...] = ()
        if self.scoring == "next_item":
            context = np.asarray(counts.sum(axis=0), dtype=np.float64).ravel() ** self.alpha
            log_p = np.log(context / context.sum())
            vectors = np.hstack([vectors, (log_p - log_p.min())[:, None]])
        if self.scoring != "cosine":
            query_dims = k
            vectors, top = inner_product_to_cosine(vectors, return_scale=True)
            query_tail = (self.popularity / top, 0.0) if self.scoring == "next_item" else (0.0,)
        t3 = time.perf_counter()
        info = {"items": int(keep.size), "pairs_nnz": int(counts.nnz), "ppmi_nnz": int(ppmi.nnz),
                "seconds": {"count": round(t1 - t0, 3), "ppmi": round(t2 - t1, 3), "svd": round(t3 - t2, 3)}}
        return ItemModel(events.item_ids[keep], vectors, info, query_dims=query_dims, query_tail=query_tail)


def sequence_tokens(events: Events, *, collapse_repeats: bool = True
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(entity, item, weight, time) of each token, in sequence order; consecutive repeats of an item
    within an entity collapse into one token with the largest weight and the time of the first."""
    ent, item, w, t = events.entity, events.item, events.weight, events.time
    if not collapse_repeats or ent.size == 0:
        return ent, item, w, t
    new = np.ones(ent.size, dtype=bool)
    new[1:] = (ent[1:] != ent[:-1]) | (item[1:] != item[:-1])
    starts = np.flatnonzero(new)
    wmax = np.maximum.reduceat(w, starts) if starts.size else w[:0]
    return ent[starts], item[starts], wmax.astype(np.float32), t[starts]


def sessions(ent: np.ndarray, t: np.ndarray, gap_us: int | None) -> np.ndarray:
    """A session number per token: a new session starts with each entity and after each pause longer
    than ``gap_us`` microseconds (None: one session per entity)."""
    brk = np.ones(ent.size, dtype=bool)
    brk[1:] = ent[1:] != ent[:-1]
    if gap_us is not None:
        brk[1:] |= (t[1:] - t[:-1]) > gap_us
    return np.cumsum(brk)


def cooccurrence(events: Events, *, window: int = 5, min_count: int = 1, collapse_repeats: bool = True,
                 session_gap: timedelta | None = None, cross_session: float = 1.0) -> sp.csr_matrix:
    """Symmetric (n_items, n_items) float32 matrix of windowed, weighted co-occurrence counts.

    Pairs in different sessions of an entity (split at pauses longer than ``session_gap``) count
    ``cross_session`` times as much.
    """
    ent, item, w, t = sequence_tokens(events, collapse_repeats=collapse_repeats)
    n = events.n_items
    if min_count > 1:
        ok = events.item_count[item] >= min_count
        ent, item, w, t = ent[ok], item[ok], w[ok], t[ok]
    sw = np.sqrt(w, dtype=np.float32)
    split = session_gap is not None and cross_session != 1.0
    sid = sessions(ent, t, int(session_gap.total_seconds() * 1e6)) if split else None  # type: ignore[union-attr]
    rows, cols, vals = [], [], []
    for d in range(1, window + 1):  # one vectorised pass per distance, not per event
        if ent.size <= d:
            break
        same = (ent[d:] == ent[:-d]) & (item[d:] != item[:-d])
        a, b = item[:-d][same], item[d:][same]
        v = sw[:-d][same] * sw[d:][same] * np.float32((window - d + 1) / window)
        if sid is not None:
            v = np.where(sid[:-d][same] == sid[d:][same], v, v * np.float32(cross_session))
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
              seed: int = 0, normalize: bool = True) -> np.ndarray:
    """Seeded randomized truncated SVD, ``U * S**eig`` (float32), rows L2-normalised if ``normalize``."""
    from sklearn.utils.extmath import randomized_svd
    from threadpoolctl import threadpool_limits

    # One BLAS thread: the products here are tall and skinny (items x ~80), where threads gain little,
    # and on a shared 2-core machine threaded OpenBLAS QR was measured 10x slower than one thread.
    # It also makes the bytes independent of the machine's core count.
    with threadpool_limits(limits=1, user_api="blas"):
        u, s, _ = randomized_svd(matrix, dim, n_oversamples=oversamples, n_iter=n_iter,
                                 power_iteration_normalizer="QR", random_state=seed, flip_sign=True)
    vectors = (u * (s ** eig)).astype(np.float32)
    return l2_normalize(vectors) if normalize else vectors


def inner_product_to_cosine(x: np.ndarray, *, return_scale: bool = False) -> Any:
    """Append a slack coordinate so every row has unit norm and, for a query whose slack is zero,
    cosine ranks rows as the inner product with ``x`` does: ``[x / M, sqrt(1 - |x|^2 / M^2)]`` with
    ``M`` the largest row norm (Bachrach et al., "Speeding up the Xbox recommender system", 2014).
    With ``return_scale`` also returns ``M``."""
    x = x.astype(np.float64)
    norms = np.linalg.norm(x, axis=1)
    top = norms.max() if norms.size and norms.max() > 0 else 1.0
    scaled = x / top
    slack = np.sqrt(np.clip(1.0 - (norms / top) ** 2, 0.0, 1.0))
    out = l2_normalize(np.hstack([scaled, slack[:, None]]).astype(np.float32))
    return (out, float(top)) if return_scale else out
