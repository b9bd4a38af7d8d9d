"""The directed layout: items ranked for an entity by what came *next* after its recent items.

The co-occurrence counts are directed (``Cooccurrence(directed=True)``): entry ``(i, j)`` is how often
item ``j`` came within ``window`` events after item ``i``. Their PPMI ``P`` (context smoothing on the
"next" side) has a seeded randomized truncated SVD ``P ~ U S V^T`` with ``k`` components. An item has
two sides: its *history side* ``h_i = u_i S^eig`` (what it predicts next: row ``i`` of ``P``) and its
*candidate side* ``c_j = v_j S^(1-eig)`` (what it is as a next event: column ``j``), so that
``h_i . c_j ~ P_ij``. An entity's score for item ``j`` is

    score(j) = (sum_h w_h h_h) . c_j + lambda * log(n_j)

the decayed, event-type weighted mean over its recent history of "how strongly ``j`` follows ``h``",
plus ``lambda`` (``log_popularity``) times the log of the item's event count. It needs the inner
product (by cosine, the candidate side's norm would be lost), the PPMI rather than raw counts, and
enough components (measured on MovieLens-1M: 32 components score far below 62), and it needs the two
sides apart: one shared ``k``-dimensional subspace for both (``P ~ X B X^T``, a single vector per item)
scored HR@10 0.246 on MovieLens-1M's validation split where the two sides score 0.256.

Served as:

- item ``j``, its stored vector (``dim = k + 1 + m``, ``m`` = ``similarity_dims``), ranked by cosine:
  ``[c_j, lambda (log(n_j) - mean log(n)), slack_j e_j] / M`` (``M`` the largest norm of the first
  ``k + 1`` coordinates, ``slack_j`` what makes the row unit-norm: Bachrach et al. 2014, spread along
  ``e_j``, the unit direction of components ``2..m+1`` of ``c_j``; centring the log count changes no
  ranking), so an entity's cosine with items ranks them exactly by ``score``. The slack is spread
  because candidate-side norms follow popularity and span orders of magnitude on a long tail: in one
  coordinate, almost every item would be almost only slack (on 5M synthetic events a mean pairwise
  cosine of 0.998 and an effective rank of 3.5, which the item group's collapse check refuses); with
  ``m = 4``, 0.13 and 7.2, for 0.002 of validation HR@10 on MovieLens-1M (3 components fewer);
- its history side ``h_i`` (``ItemModel.query_vectors``), a second matrix the pipeline stores as a
  checksummed model artifact with the item commit, so incremental runs rebuild entity vectors from the
  committed model alone;
- entity: ``[mean_h(h_h), 1, 0...]`` (L2-normalised; zero on the ``m`` slack coordinates).

Item-to-item cosine compares candidate sides (items that come after the same things): for a
best-seller mostly its scoring coordinates, for a rare item mostly its direction ``e_j``; neighbours
are meaningful (planted categories are recovered).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from featurestore.embed.svd import svd_factors


def directed_layout(ppmi: sp.csr_matrix, count: np.ndarray, *, k: int, eig: float, log_popularity: float,
                    n_iter: int, oversamples: int, seed: int, similarity_dims: int = 1
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Unit item rows ``[c, lambda log(count), slack e] / M`` (``e``: ``similarity_dims`` coordinates)
    and the history sides ``h`` (module docstring) from the directed PPMI ``ppmi`` (rows: earlier item,
    columns: next item) and each item's event count."""
    u, s, vt = svd_factors(ppmi, k, n_iter=n_iter, oversamples=oversamples, seed=seed)
    s = np.maximum(s.astype(np.float64), 1e-12)
    hist = u.astype(np.float64) * s ** eig                      # history side, u S^eig
    cand = vt.T.astype(np.float64) * s ** (1.0 - eig)           # candidate side, v S^(1-eig)
    # centred: a constant added to every item's score changes no ranking, and a signed coordinate adds
    # less to the largest norm (so less slack) and no component every item shares
    lp = np.log(np.maximum(count, 1.0))
    scoring = np.hstack([cand, log_popularity * (lp - lp.mean())[:, None]])
    norms = np.linalg.norm(scoring, axis=1)
    top = float(norms.max()) if norms.size and norms.max() > 0 else 1.0
    slack = np.sqrt(np.clip(1.0 - (norms / top) ** 2, 0.0, 1.0))[:, None]
    direction = np.ones((cand.shape[0], 1))
    if similarity_dims > 1:  # the slack spread along the item's direction in components 2.. (see the docstring)
        direction = cand[:, 1:similarity_dims + 1].copy()
        size = np.linalg.norm(direction, axis=1, keepdims=True)
        direction = np.divide(direction, size, out=np.zeros_like(direction), where=size > 0)
        direction[size[:, 0] == 0, 0] = 1.0
    rows = np.hstack([scoring / top, slack * direction]).astype(np.float32)
    # entity . item = (mean h) . c / M + lambda lp / M: the same ranking as ``score``
    return rows, hist.astype(np.float32)
