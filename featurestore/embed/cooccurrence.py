"""The default item model: windowed co-occurrence in time-ordered sequences, factorised by truncated SVD.

Each entity's events, ordered by time, form a sequence; consecutive repeats of one item (a view,
add-to-cart and purchase burst) collapse into one token carrying the largest event-type weight.
Every pair of tokens at most ``window`` apart counts, weighted by the product of the square roots of
their event-type weights and by ``(window - d + 1) / window`` for distance ``d`` (word2vec's dynamic
window in expectation); pairs split by a pause longer than ``session_gap`` (30 minutes: a new
session) count half. A seeded randomized truncated SVD (scikit-learn) of a matrix made from the
counts ``C`` gives ``U * S**eig``; which matrix, and what cosine between an entity vector and an item
vector ranks by, is the ``scoring`` mode:

- ``"directed"`` (default): the counts are directed (item ``j`` within ``window`` events *after* item
  ``i``), and an entity's cosine with item ``j`` ranks by ``sum_h w_h PPMI(h -> j)`` (a low-rank
  estimate, ``k = dim - 1 - similarity_dims`` components, 59 of 64 by default) plus
  ``log_popularity`` times the log of ``j``'s event count: what tends to come next after the
  entity's recent items. Items carry their "candidate side", the
  entity vectors the "history side" of their items (``ItemModel.query_vectors``); see
  :mod:`featurestore.embed.directed`. Measured on MovieLens (``benchmarks/bench_quality.py``), every
  setting chosen on a validation split: the symmetric modes below rank next items about as well as
  an item-to-item nearest-neighbour list, this one clearly better.
- ``"next_item"`` (the default before ``"directed"``): the next item is predicted as a mixture over
  the entity's recent items,
  ``P(item | history) = sum_h w_h P(item | h)`` with the aggregation's decayed weights ``w_h`` and
  ``P(i | h) = C_hi / r_h`` (``r`` the row sums of ``C``). The SVD is of the symmetrically normalised
  counts ``(D + tau)^-1/2 C (D + tau)^-1/2`` (``D = diag(r)``); with ``eig = 0.5`` its factors ``x``
  give ``x_h . x_i ~ C_hi / sqrt((r_h + tau) (r_i + tau))``, so an item stored as
  ``x_i * P_alpha(i) sqrt(r_i + tau) / r_i`` and an entity vector that weighs each history item by
  ``sqrt(r_h + tau) / r_h`` have inner product ``sum_h w_h P(i | h) * P_alpha(i) / P(i)`` up to a
  constant: ``P(i | history)`` with the item prior smoothed like PPMI's context distribution
  (``P_alpha ~ count**alpha``, Levy, Goldberg and Dagan 2015; ``popularity`` is its exponent, 0 =
  rank by lift alone). The mixture is arithmetic: an item strongly tied to the entity's last few
  items ranks high even if it is unrelated to older ones, where a mean of log-ratios (PMI) would
  average the two.

  ``tau`` (``regularization`` times the mean mass; regularised spectral embedding, Qin and Rohe
  2013) matters on long-tailed data: without it every small group of items that co-occur only
  among themselves (two items bought together by one user) has singular value 1, the largest
  there is, and takes a component from the items that matter. Measured: 100 such pairs added to
  the small benchmark took HR@10 from 0.312 to 0.103 with ``tau = 0``; with the default it stays at
  0.304 (0.304 without them). The SVD ranks components by the size of their eigenvalue; those with
  a negative one (``C`` has a zero diagonal) enter entity-item scores with a positive sign, which
  on the benchmark's data scores slightly lower than keeping signs and clearly higher than
  dropping them.

  Layout of the ``dim`` coordinates (``k = dim - 1 - similarity_dims``):

  1. ``k`` scoring components ``x_i * P_alpha(i)**popularity * sqrt(r_i + tau) / r_i``;
  2. one coordinate holding ``P_alpha(i)**popularity``: entity vectors divide each history item by
     it (``ItemModel.query_divide``) and put 0 there;
  3. ``similarity_dims`` coordinates holding the item's direction in components ``2..`` of ``x``
     (the first is close to the degree vector every item shares), scaled to absorb the rest of the
     row's norm.

  All three are divided by the largest norm of 1-2, so every row has unit norm, and entity vectors
  are zero on 2-3, so an entity's cosine with an item ranks items exactly as the mixture does
  (the norm-slack trick of Bachrach et al., RecSys 2014). Block 3 is what keeps item-to-item cosine
  meaningful: the mixture's norms follow ``P(i)**0.75`` and span orders of magnitude on a long tail,
  so with a single slack coordinate almost every item would be almost only slack (all pairwise cosines
  near 1). With block 3, a rare item's cosine with another is that of their directions, a
  best-seller's mostly that of their scoring components. Alignment rotates blocks 1 and 3 on their own.
- ``"inner_product"``: PPMI with the context distribution smoothed by ``alpha`` (shifted by
  ``log(shift)``), ``dim - 1`` components and the slack coordinate: ranks by the mean PMI with the
  history, popularity-blind.
- ``"cosine"``: the same PPMI, ``dim`` components, rows L2-normalised: the classic embedding.

Item-to-item cosine stays meaningful in every mode; ``"cosine"`` gives the purest item-to-item
neighbours (all ``dim`` coordinates describe taste), ``"next_item"`` the best ranking of items for an
entity. Everything is vectorised over sparse matrices: no Python loop over events. The same events
and seed give identical bytes.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from datetime import timedelta
from typing import Any, ClassVar, Literal

import numpy as np
import scipy.sparse as sp

from featurestore.embed.base import ItemModel, l2_normalize
from featurestore.embed.directed import directed_layout
from featurestore.embed.svd import svd_factors
from featurestore.engine.base import Cooccurrence, Engine
from featurestore.engine.duckdb import DuckDBEngine
from featurestore.engine.events import EventTable
from featurestore.errors import PipelineError

Scoring = Literal["directed", "next_item", "inner_product", "cosine"]
# coordinates beyond the SVD components (next_item: 1 + similarity)
_EXTRA = {"inner_product": 1, "cosine": 0}
#: with ``scoring="directed"``, the coordinates the norm slack is spread over (``similarity_dims=None``)
DIRECTED_SIMILARITY = 4


@dataclass(frozen=True)
class CooccurrenceEmbedder:
    """Windowed co-occurrence + randomized SVD item embedder (see the module docstring).

    ``window``: tokens on each side that count as context; ``alpha``: context-distribution smoothing
    (of the item prior with ``scoring="next_item"``, of PMI's context distribution otherwise);
    ``eig``: singular-value weighting (0 = U only, 0.5 = symmetric, 1 = U*S); ``scoring``: what an
    entity's cosine with an item ranks by (see the module docstring; default ``"directed"``),
    ``log_popularity`` the weight of the log event count in it with ``"directed"`` and ``popularity``
    the exponent of the item prior with ``"next_item"``; ``similarity_dims``: with
    ``scoring="next_item"`` or ``"directed"``, the coordinates that carry item-to-item similarity and
    the norm slack (None = ``max(1, dim // 4)``, 4 with ``"directed"``) and ``regularization`` the ``tau``
    added to every item's mass in its normalisation, as a multiple of the mean mass (module docstring;
    0 = none); ``session_gap``/``cross_session``: pairs split by a pause longer than ``session_gap``
    count ``cross_session`` times as much; ``shift``: subtract
    ``log(shift)`` from PMI (1 = none; the PPMI modes); ``min_count``: items with fewer events are left
    out; ``n_iter``/``oversamples``: randomized SVD power iterations (None: 4 with ``"directed"``, 2
    otherwise) and oversampling; ``seed``: the SVD's random state.
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
    scoring: Scoring = "directed"
    popularity: float = 1.0
    log_popularity: float = 0.3
    similarity_dims: int | None = None
    regularization: float = 1.0
    n_iter: int | None = None
    oversamples: int = 10
    seed: int = 0
    name: str = "cooccurrence"
    #: modules ``fit`` imports when it gets to the SVD: a pipeline imports them in the background meanwhile
    imports: ClassVar[tuple[str, ...]] = ("sklearn.utils.extmath",)

    def __post_init__(self) -> None:
        if self.scoring not in ("next_item", "directed", *_EXTRA):
            raise PipelineError(f"CooccurrenceEmbedder: scoring must be one of "
                                f"{sorted(['next_item', 'directed', *_EXTRA])}; "
                                f"got {self.scoring!r}")
        extra, sim = self._extra(), self._similarity_dims()
        # next_item and directed: k >= sim + 1 components (the similarity block reads components 2..sim+1)
        least = 2 * sim + 2 if self.scoring in ("next_item", "directed") else extra + 1
        checks = [(sim >= 1, "similarity_dims must be >= 1"),
                  (self.dim >= least, f"dim must be >= {least} with scoring={self.scoring!r}"
                   + (f" and similarity_dims={sim}" if self.scoring in ("next_item", "directed") else "")),
                  (self.window >= 1, "window must be >= 1"),
                  (0 < self.alpha <= 1, "alpha must be in (0, 1]"), (self.shift > 0, "shift must be > 0"),
                  (self.min_count >= 1, "min_count must be >= 1"), (self._n_iter() >= 0, "n_iter must be >= 0"),
                  (0 <= self.eig <= 1, "eig must be in [0, 1]"),
                  (0 <= self.cross_session <= 1, "cross_session must be in [0, 1]"),
                  (0 <= self.popularity <= 4, "popularity must be in [0, 4] (the prior's exponent; higher "
                                                 "underflows float32 on large catalogues)"),
                  (self.regularization >= 0, "regularization must be >= 0"),
                  (0 <= self.log_popularity <= 10, "log_popularity must be in [0, 10]"),
                  (self.session_gap is None or self.session_gap > timedelta(0), "session_gap must be positive")]
        for ok, msg in checks:
            if not ok:
                raise PipelineError(f"CooccurrenceEmbedder: {msg}")

    def _n_iter(self) -> int:
        if self.n_iter is not None:
            return self.n_iter
        return 4 if self.scoring == "directed" else 2

    def _similarity_dims(self) -> int:
        if self.similarity_dims is not None:
            return self.similarity_dims
        return DIRECTED_SIMILARITY if self.scoring == "directed" else max(1, self.dim // 4)

    def _extra(self) -> int:
        """Coordinates beyond the scoring SVD components."""
        if self.scoring in ("next_item", "directed"):
            return 1 + self._similarity_dims()
        return _EXTRA[self.scoring]

    def params(self) -> dict[str, Any]:
        out = asdict(self)
        out["session_gap"] = self.session_gap.total_seconds() if self.session_gap is not None else None
        return out

    def fit(self, events: EventTable, *, progress: bool = False, engine: Engine | None = None) -> ItemModel:
        t0 = time.perf_counter()
        directed = self.scoring == "directed"
        counts = (engine or DuckDBEngine()).cooccurrence(events, Cooccurrence(
            window=self.window, min_count=self.min_count, collapse_repeats=self.collapse_repeats,
            session_gap=self.session_gap, cross_session=self.cross_session, directed=directed))
        t1 = time.perf_counter()
        if directed:
            return self._fit_directed(events, counts, t0, t1)
        keep = np.flatnonzero(np.asarray(counts.sum(axis=1)).ravel() > 0)
        counts = self._keep(counts, keep, events)
        mass = np.asarray(counts.sum(axis=1), dtype=np.float64).ravel()
        if self.scoring == "next_item":
            tau = self.regularization * float(mass.mean())
            matrix = normalized_counts(counts, mass, tau)
        else:
            matrix = ppmi_matrix(counts, alpha=self.alpha, shift=self.shift)
        t2 = time.perf_counter()
        k = self.dim - self._extra()
        vectors = svd_embed(matrix, k, eig=self.eig, n_iter=self._n_iter(), oversamples=self.oversamples,
                            seed=self.seed, normalize=self.scoring == "cosine")
        query_dims: int | None = None
        query_tail: tuple[float, ...] = ()
        if self.scoring == "next_item":
            vectors = next_item_layout(vectors, mass, tau=tau, alpha=self.alpha, popularity=self.popularity,
                                       similarity_dims=self._similarity_dims())
            query_dims, query_tail = k, (0.0,) * (1 + self._similarity_dims())
        elif self.scoring == "inner_product":
            query_dims, query_tail = k, (0.0,)
            vectors = inner_product_to_cosine(vectors)
        t3 = time.perf_counter()
        info = {"items": int(keep.size), "pairs_nnz": int(counts.nnz), "matrix_nnz": int(matrix.nnz),
                "seconds": {"count": round(t1 - t0, 3), "matrix": round(t2 - t1, 3), "svd": round(t3 - t2, 3)}}
        nxt = self.scoring == "next_item"
        return ItemModel(events.item_ids[keep], vectors, info, query_dims=query_dims, query_tail=query_tail,
                         query_divide=query_dims if nxt else None,
                         similarity_dims=self._similarity_dims() if nxt else 0)


    def _keep(self, counts: sp.csr_matrix, keep: np.ndarray, events: EventTable) -> sp.csr_matrix:
        """The counts among the items that co-occur with another (``keep``), or a clear error."""
        if keep.size <= self.dim:
            raise PipelineError(
                f"the co-occurrence model needs more than dim={self.dim} items that co-occur with another "
                f"item; these events have {keep.size} (of {events.n_items} items)")
        return counts[keep][:, keep].tocsr() if keep.size < counts.shape[0] else counts

    def _fit_directed(self, events: EventTable, counts: sp.csr_matrix, t0: float, t1: float) -> ItemModel:
        """``scoring="directed"``: see :mod:`featurestore.embed.directed`."""
        seen = (np.asarray(counts.sum(axis=1)).ravel() > 0) | (np.asarray(counts.sum(axis=0)).ravel() > 0)
        keep = np.flatnonzero(seen)
        counts = self._keep(counts, keep, events)
        matrix = ppmi_matrix(counts, alpha=self.alpha, shift=self.shift)
        t2 = time.perf_counter()
        k = self.dim - self._extra()
        vectors, hist = directed_layout(matrix, events.item_count[keep].astype(np.float64), k=k, eig=self.eig,
                                        log_popularity=self.log_popularity, n_iter=self._n_iter(),
                                        oversamples=self.oversamples, seed=self.seed,
                                        similarity_dims=self._similarity_dims())
        t3 = time.perf_counter()
        info = {"items": int(keep.size), "pairs_nnz": int(counts.nnz), "matrix_nnz": int(matrix.nnz),
                "seconds": {"count": round(t1 - t0, 3), "matrix": round(t2 - t1, 3), "svd": round(t3 - t2, 3)}}
        sim = self._similarity_dims()
        return ItemModel(events.item_ids[keep], vectors, info, query_dims=k, query_tail=(1.0,) + (0.0,) * sim,
                         similarity_dims=sim, query_vectors=hist)


def next_item_layout(x: np.ndarray, mass: np.ndarray, *, alpha: float, popularity: float,
                     similarity_dims: int, tau: float = 0.0) -> np.ndarray:
    """Unit rows ``[x_i c_i, prior_i, s_i e_i] / M`` from the SVD factors ``x`` of
    ``(D + tau)^-1/2 C (D + tau)^-1/2`` and the row sums ``mass`` of ``C`` (module docstring):
    ``prior = P_alpha**popularity``, ``c = prior * sqrt(mass + tau) / mass``, ``M`` the largest norm of
    ``[x_i c_i, prior_i]``, ``e_i`` the unit direction of components ``1..similarity_dims`` of ``x_i``
    and ``s_i`` the rest of the row's norm."""
    smoothed = mass ** alpha
    prior = (smoothed / smoothed.sum()) ** popularity
    scale = prior * np.sqrt(mass + tau) / mass * mass.sum()  # prior / sqrt(P) when tau = 0
    scoring = np.hstack([x.astype(np.float64) * scale[:, None], prior[:, None]])
    direction = x[:, 1:similarity_dims + 1].astype(np.float64)
    direction[np.linalg.norm(direction, axis=1) == 0, 0] = 1.0  # no direction: any unit vector will do
    return inner_product_to_cosine(scoring, l2_normalize(direction))


def normalized_counts(counts: sp.csr_matrix, mass: np.ndarray | None = None, tau: float = 0.0) -> sp.csr_matrix:
    """``(D + tau)^-1/2 C (D + tau)^-1/2`` with ``D`` the row sums of the symmetric counts (``mass``,
    computed if None): with ``tau = 0``, entry ``(h, i)`` times ``sqrt(r_i / r_h)`` is
    ``P(i | h) = C_hi / r_h``. Rows must have positive sums (or ``tau > 0``)."""
    c = counts.tocsr(copy=True).astype(np.float64)
    c.sum_duplicates()
    r = np.asarray(c.sum(axis=1), dtype=np.float64).ravel() if mass is None else mass
    d = 1.0 / np.sqrt(r + tau)
    r_idx = np.repeat(np.arange(c.shape[0]), np.diff(c.indptr))
    c.data = c.data * d[r_idx] * d[c.indices]
    return c.astype(np.float32)


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
    u, s, _ = svd_factors(matrix, dim, n_iter=n_iter, oversamples=oversamples, seed=seed)
    vectors = (u * (s ** eig)).astype(np.float32)
    return l2_normalize(vectors) if normalize else vectors


def inner_product_to_cosine(x: np.ndarray, directions: np.ndarray | None = None) -> np.ndarray:
    """Append a slack coordinate so every row has unit norm and, for a query whose slack is zero,
    cosine ranks rows as the inner product with ``x`` does: ``[x / M, sqrt(1 - |x|^2 / M^2)]`` with
    ``M`` the largest row norm (Bachrach et al., "Speeding up the Xbox recommender system", 2014).
    With ``directions`` (unit rows, ``m`` columns) the slack is spread over ``m`` coordinates along
    each row's direction instead: ``[x / M, sqrt(...) * directions]``."""
    x = x.astype(np.float64)
    norms = np.linalg.norm(x, axis=1)
    top = norms.max() if norms.size and norms.max() > 0 else 1.0
    slack = np.sqrt(np.clip(1.0 - (norms / top) ** 2, 0.0, 1.0))[:, None]
    tail = slack if directions is None else slack * directions
    return l2_normalize(np.hstack([x / top, tail]).astype(np.float32))
