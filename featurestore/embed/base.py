"""The embedder interface: anything that turns ordered event sequences into item vectors.

A pipeline needs only :meth:`Embedder.fit` and :meth:`Embedder.params`; an item2vec/SGNS model or a
learned sequence encoder plugs in by implementing them, without touching the pipeline code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from featurestore.events import Events


@dataclass
class ItemModel:
    """Item vectors: row ``k`` of ``vectors`` belongs to ``item_ids[k]`` (L2-normalised float32)."""

    item_ids: np.ndarray        # object array of str
    vectors: np.ndarray         # float32 (n_items, dim), rows of unit norm
    info: dict[str, Any] = field(default_factory=dict)  # figures the embedder wants recorded

    def __post_init__(self) -> None:
        if self.vectors.ndim != 2 or self.vectors.shape[0] != len(self.item_ids):
            raise ValueError(f"{self.vectors.shape[0]} vectors for {len(self.item_ids)} item ids")

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def __len__(self) -> int:
        return len(self.item_ids)


@runtime_checkable
class Embedder(Protocol):
    """Fits item vectors from events ordered by (entity, time). ``name`` is recorded in commits."""

    name: str
    dim: int

    def fit(self, events: Events, *, progress: bool = False) -> ItemModel:
        """Item vectors for (a subset of) ``events.item_ids``; items it cannot embed are left out."""
        ...

    def params(self) -> dict[str, Any]:
        """The parameters that define the model (recorded in commit metadata)."""
        ...


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit norm (zero rows stay zero)."""
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)
