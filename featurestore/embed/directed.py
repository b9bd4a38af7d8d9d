"""The directed layout: items ranked for an entity by what came *next* after its recent items.

The co-occurrence counts are directed (``Cooccurrence(directed=True)``): entry ``(i, j)`` is how often
item ``j`` came within ``window`` events after item ``i``. Their PPMI ``P`` (context smoothing on the
"next" side) is projected on ``X``, the top ``k`` left singular vectors of ``[P, P^T]`` (the subspace
that best holds both what follows each item and what precedes it, from a seeded randomized truncated
SVD of ``P``: :func:`both_sides`): an item's *candidate side* (what it is as a next event) is its row of ``X`` and its
*history side* (what it predicts next) is ``x_i B`` with ``B = X^T P X``, a ``k x k`` matrix, so that
``P ~ X B X^T``. An entity's score for item ``j`` is

    score(j) = (sum_h w_h x_h) B x_j^T + lambda * log(n_j)

the decayed, event-type weighted mean over its recent history of "how strongly ``j`` follows ``h``",
plus ``lambda`` (``log_popularity``) times the log of the item's event count. It needs the inner
product (by cosine, the candidate side's norm would be lost), the PPMI rather than raw counts, and
enough components (measured on MovieLens-1M: 32 components score far below 62).

Served within one vector per item and per entity (``dim = k + 2``), ranked by cosine:

- item ``j``: ``[x_j S^eig, lambda (log(n_j) - mean log(n)), slack_j] / M`` (``S`` the singular values,
  ``M`` the largest norm of the first ``k + 1`` coordinates, ``slack_j`` what makes the row unit-norm:
  Bachrach et al. 2014; centring the log count changes no ranking), so an entity's cosine with items
  ranks them exactly by ``score``;
- entity: ``[mean_h(x_h S^eig / M) Q, 1, 0]`` (L2-normalised) with ``Q = M S^-eig B S^-eig`` the
  model's ``ItemModel.query_map``, recorded with the commit so incremental runs rebuild entity vectors
  from the committed item vectors alone.

Item-to-item cosine compares ``x S^eig`` (items followed and preceded by the same things), plus the
popularity and slack coordinates: neighbours are meaningful (planted categories are recovered), while
the slack, large for items far from the largest norm, lifts every cosine (a mean pairwise cosine
around 0.7 on the synthetic data), so read item-to-item cosines as a ranking.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from featurestore.embed.svd import svd_factors


def directed_layout(ppmi: sp.csr_matrix, count: np.ndarray, *, k: int, eig: float, log_popularity: float,
                    n_iter: int, oversamples: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Unit item rows ``[c, lambda log(count), slack]`` and the query map ``Q`` (module docstring) from
    the directed PPMI ``ppmi`` (rows: earlier item, columns: next item) and each item's event count."""
    x, s = both_sides(ppmi, k, n_iter=n_iter, oversamples=oversamples, seed=seed)
    b = x.T @ np.asarray(ppmi @ x.astype(np.float32), dtype=np.float64)  # (k, k): X^T P X (no float64 copy of P)
    s = np.maximum(s.astype(np.float64), 1e-12)
    scale = s ** eig
    cand = x * scale                                             # candidate side, x S^eig
    qmap = b / scale[:, None] / scale[None, :]                   # S^-eig B S^-eig
    # centred: a constant added to every item's score changes no ranking, and a signed coordinate adds
    # less to the largest norm (so less slack) and no component every item shares
    lp = np.log(np.maximum(count, 1.0))
    scoring = np.hstack([cand, log_popularity * (lp - lp.mean())[:, None]])
    norms = np.linalg.norm(scoring, axis=1)
    top = float(norms.max()) if norms.size and norms.max() > 0 else 1.0
    slack = np.sqrt(np.clip(1.0 - (norms / top) ** 2, 0.0, 1.0))[:, None]
    rows = np.hstack([scoring / top, slack]).astype(np.float32)
    # entity vectors are built from the stored (divided by ``top``) candidate sides: the map undoes that
    return rows, (qmap * top).astype(np.float32)


def both_sides(ppmi: sp.csr_matrix, k: int, *, n_iter: int, oversamples: int, seed: int
               ) -> tuple[np.ndarray, np.ndarray]:
    """``(X, s)``: ``k`` orthonormal columns spanning the best rank-``k`` subspace of ``[P, P^T]`` (what
    follows each item and what precedes it) and its singular values. From the truncated SVD ``P ~ U S
    V^T``: ``[P, P^T] ~ [U S V^T, V S U^T]`` lies in the span of ``[U S, V S]``, whose top ``k`` left
    singular vectors are taken (a thin dense SVD), at the cost of one sparse SVD of ``P`` rather than of
    the twice as wide ``[P, P^T]``."""
    from threadpoolctl import threadpool_limits

    u, s, vt = svd_factors(ppmi, k, n_iter=n_iter, oversamples=oversamples, seed=seed)
    z = np.hstack([u * s, vt.T * s]).astype(np.float64)
    with threadpool_limits(limits=1, user_api="blas"):  # the same bytes on any number of cores
        q, r = np.linalg.qr(z)
        w, sz, _ = np.linalg.svd(r)
    x = q @ w[:, :k]
    flip = np.sign(x[np.argmax(np.abs(x), axis=0), np.arange(k)])  # a fixed sign per column
    return x * np.where(flip == 0, 1.0, flip), sz[:k]
