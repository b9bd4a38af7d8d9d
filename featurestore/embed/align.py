"""Orthogonal Procrustes alignment of a new item model onto the previous one.

SVD embeddings are defined only up to rotation (and sign), so two runs on almost the same events can
give unrelated coordinates. Rotating the new vectors by the orthogonal ``R`` minimising
``||A R - B||`` over the items both runs share keeps coordinates comparable across commits, without
changing any similarity within the new model (R is orthogonal). Coordinates after
``ItemModel.query_dims`` (popularity, norm slack) stay where they are: only the leading ones rotate,
and the trailing ``ItemModel.similarity_dims`` ones (an item-to-item block) by their own rotation.
A model's ``query_map`` ``M`` becomes ``R^T M R`` (``R`` the rotation of the leading block), so entity
vectors formed from the rotated model rank items exactly as before; its ``query_vectors`` (the items'
history side) turn by ``R`` like the leading coordinates.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from featurestore.embed.base import ItemModel, l2_normalize


@dataclass(frozen=True)
class Alignment:
    """The rotation applied and how well the shared items agree before and after it."""

    rotation: np.ndarray
    shared: int
    cosine_before: float
    cosine_after: float
    overlap_at_10: float | None  # mean neighbour overlap@10 of sampled shared items, old vs new

    def to_dict(self) -> dict[str, float | int | None]:
        return {"shared_items": self.shared, "mean_cosine_before": round(self.cosine_before, 6),
                "mean_cosine_after": round(self.cosine_after, 6),
                "neighbour_overlap_at_10": None if self.overlap_at_10 is None else round(self.overlap_at_10, 6)}


def procrustes(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The orthogonal matrix R minimising ||a @ R - b||_F (a, b: (n, dim))."""
    u, _, vt = np.linalg.svd(a.astype(np.float64).T @ b.astype(np.float64))
    return u @ vt


def align(new: ItemModel, previous: ItemModel | None, *, sample: int = 500, seed: int = 0,
          min_shared: int | None = None) -> tuple[ItemModel, Alignment | None]:
    """``new`` rotated onto ``previous`` over shared items, and the alignment figures.

    Returns ``new`` unchanged (and None) when there is no previous model, the coordinate layouts differ
    (:meth:`ItemModel.layout`: the dimension, or e.g. a previous commit written by another scoring
    mode, whose coordinates mean something else), or fewer than ``min_shared`` (default: dim) items
    are shared.
    """
    if previous is None or len(previous) == 0 or previous.layout() != new.layout():
        return new, None
    idx = pd.Index(previous.item_ids).get_indexer(new.item_ids)
    ours = np.flatnonzero(idx >= 0)
    if ours.size < (min_shared if min_shared is not None else new.dim):
        return new, None
    q = new.query_dims if new.query_dims is not None else new.dim  # slack coordinates are not rotated
    a, b = new.vectors[ours], previous.vectors[idx[ours]]
    r = np.eye(new.dim)
    blocks = [slice(0, q)] + ([slice(new.dim - new.similarity_dims, new.dim)] if new.similarity_dims else [])
    for blk in blocks:
        r[blk, blk] = procrustes(a[:, blk], b[:, blk])
    rotated = l2_normalize((new.vectors.astype(np.float64) @ r).astype(np.float32))
    before = float(np.mean(np.sum(a * b, axis=1)))
    after = float(np.mean(np.sum(rotated[ours] * b, axis=1)))
    overlap = neighbour_overlap(a, b, k=10, sample=sample, seed=seed)
    info = dict(new.info)
    result = Alignment(r, int(ours.size), before, after, overlap)
    info["alignment"] = result.to_dict()
    qmap = None
    if new.query_map is not None:  # entity . item = (mean x) M x_j^T is kept when M becomes R^T M R
        rq = r[:q, :q]
        qmap = (rq.T @ new.query_map.astype(np.float64) @ rq).astype(np.float32)
    qvec = None
    if new.query_vectors is not None:  # entity . item = (mean h) c_j^T is kept when both sides turn by R
        qvec = (new.query_vectors.astype(np.float64) @ r[:q, :q]).astype(np.float32)
    encoder = new.encoder.rotated(r) if new.encoder is not None else None  # entity vectors turn with the items
    return replace(new, vectors=rotated, info=info, query_map=qmap, query_vectors=qvec, encoder=encoder), result


def neighbour_overlap(a: np.ndarray, b: np.ndarray, *, k: int = 10, sample: int = 500, seed: int = 0) -> float | None:
    """Mean |top-k(a) ∩ top-k(b)| / k over a seeded sample of rows (neighbours among the same rows)."""
    n = a.shape[0]
    if n <= k:
        return None
    rows = np.random.default_rng(seed).choice(n, size=min(sample, n), replace=False)
    total = 0.0
    for chunk in np.array_split(rows, max(1, rows.size // 128)):
        sa, sb = a[chunk] @ a.T, b[chunk] @ b.T
        sa[np.arange(chunk.size), chunk] = -np.inf
        sb[np.arange(chunk.size), chunk] = -np.inf
        ta = np.argpartition(-sa, k, axis=1)[:, :k]
        tb = np.argpartition(-sb, k, axis=1)[:, :k]
        for x, y in zip(ta, tb):
            total += np.intersect1d(x, y, assume_unique=True).size / k
    return total / rows.size
