"""The embedder interface: anything that turns ordered event sequences into item vectors.

A pipeline needs only :meth:`Embedder.fit` and :meth:`Embedder.params`; an item2vec/SGNS model or a
learned sequence encoder plugs in by implementing them, without touching the pipeline code.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from featurestore.engine.base import Engine
from featurestore.engine.events import EventTable


@dataclass
class ItemModel:
    """Item vectors: row ``k`` of ``vectors`` belongs to ``item_ids[k]`` (L2-normalised float32)."""

    item_ids: np.ndarray        # object array of str
    vectors: np.ndarray         # float32 (n_items, dim), rows of unit norm
    info: dict[str, Any] = field(default_factory=dict)  # figures the embedder wants recorded
    #: entity (query) vectors are the weighted mean of the first ``query_dims`` coordinates followed
    #: by the fixed ``query_tail`` (e.g. a popularity weight and a zero for the norm-slack coordinate;
    #: see :mod:`featurestore.embed.cooccurrence`). None: the weighted mean of whole vectors.
    query_dims: int | None = None
    query_tail: tuple[float, ...] = ()
    #: when set, each history item's leading coordinates are divided by its own coordinate
    #: ``query_divide`` (which must be positive) before the weighted mean: a per-item weight the item
    #: vectors carry themselves, so stored vectors suffice to rebuild entity vectors.
    query_divide: int | None = None
    #: the last ``similarity_dims`` coordinates carry item-to-item similarity only (zero in entity
    #: vectors; alignment rotates them on their own, see :mod:`featurestore.embed.align`)
    similarity_dims: int = 0
    #: when set, a ``(query_dims, query_dims)`` float32 matrix the weighted mean of the leading
    #: coordinates is multiplied by before the tail is appended: entity vectors then live on the items'
    #: "history side" ``x_i @ query_map`` while items are ranked by their "candidate side" ``x_j``, so
    #: entity . item scores a directed relation (see :mod:`featurestore.embed.directed`). Alignment
    #: rotates it with the coordinates (``R^T M R``); commit metadata carries it byte for byte.
    query_map: np.ndarray | None = None
    #: when set, a ``(n_items, query_dims)`` float32 matrix: each item's "history side", averaged in
    #: place of the leading coordinates of its vector (then the tail is appended), so entity . item
    #: scores "how strongly item ``j`` follows the entity's items" with two unrelated vectors per item
    #: (see :mod:`featurestore.embed.directed`). Alignment rotates it with the coordinates; a pipeline
    #: stores it as a checksummed model artifact beside the item commit.
    query_vectors: np.ndarray | None = field(default=None, repr=False, compare=False)
    #: an embedder's own entity encoder (a sequence model): entity vectors come from
    #: ``encoder.encode(events, entities)`` instead of a mean of item vectors, and the pipeline stores
    #: ``encoder.to_bytes()`` with the item commit (see :class:`EntityEncoder`)
    encoder: EntityEncoder | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.vectors.ndim != 2 or self.vectors.shape[0] != len(self.item_ids):
            raise ValueError(f"{self.vectors.shape[0]} vectors for {len(self.item_ids)} item ids")
        if self.query_dims is not None and self.query_dims + len(self.query_tail) != self.vectors.shape[1]:
            raise ValueError(f"query_dims {self.query_dims} + tail {len(self.query_tail)} != dim "
                             f"{self.vectors.shape[1]}")
        if self.query_divide is not None:
            if self.query_dims is None or not self.query_dims <= self.query_divide < self.vectors.shape[1]:
                raise ValueError(f"query_divide {self.query_divide} must be a tail coordinate "
                                 f"(query_dims {self.query_dims}, dim {self.vectors.shape[1]})")
            if len(self) and not bool(np.all(self.vectors[:, self.query_divide] > 0)):
                raise ValueError(f"query_divide coordinate {self.query_divide} must be positive for every item")

        if self.similarity_dims and (self.query_dims is None
                                     or self.similarity_dims > self.vectors.shape[1] - self.query_dims):
            raise ValueError(f"similarity_dims {self.similarity_dims} must lie in the tail "
                             f"(query_dims {self.query_dims}, dim {self.vectors.shape[1]})")
        if self.query_map is not None:
            self.query_map = np.ascontiguousarray(self.query_map, dtype=np.float32)
            if self.query_dims is None or self.query_map.shape != (self.query_dims, self.query_dims):
                raise ValueError(f"query_map of shape {self.query_map.shape} must be (query_dims, query_dims) "
                                 f"(query_dims {self.query_dims})")
        if self.query_vectors is not None:
            self.query_vectors = np.ascontiguousarray(self.query_vectors, dtype=np.float32)
            if self.query_dims is None or self.query_vectors.shape != (len(self.item_ids), self.query_dims):
                raise ValueError(f"query_vectors of shape {self.query_vectors.shape} must be (items, query_dims) "
                                 f"({len(self.item_ids)}, {self.query_dims})")

    def query(self) -> dict[str, Any] | None:
        """How entity vectors are formed, as recorded in commit metadata (None: plain mean)."""
        if self.query_dims is None:
            return None
        out: dict[str, Any] = {"dims": self.query_dims, "tail": [float(t) for t in self.query_tail]}
        if self.query_divide is not None:
            out["divide"] = self.query_divide
        if self.similarity_dims:
            out["similarity"] = self.similarity_dims
        if self.query_map is not None:
            out["map"] = encode_matrix(self.query_map)
        if self.query_vectors is not None:  # the rows themselves are a model artifact (a pipeline adds its record)
            out["vectors"] = {"shape": list(self.query_vectors.shape)}
        return out

    def describe_layout(self) -> str:
        """:meth:`query` for people to read (the query map by its shape, not its bytes)."""
        q = self.query()
        if q is None:
            return "plain"
        for part in ("map", "vectors"):
            if part in q:
                q[part] = "x".join(map(str, q[part]["shape"]))
        return str(q)

    def layout(self) -> tuple[int, int | None, int | None, int, bool, bool]:
        """What the coordinates mean: (dim, query_dims, query_divide, similarity_dims, has a query
        map, has query vectors). Vectors of two models are comparable (alignable) only when their
        layouts are equal."""
        return (self.dim, self.query_dims, self.query_divide, self.similarity_dims, self.query_map is not None,
                self.query_vectors is not None)

    @classmethod
    def from_query(cls, item_ids: np.ndarray, vectors: np.ndarray, info: dict[str, Any],
                   query: dict[str, Any] | None, query_vectors: np.ndarray | None = None) -> ItemModel:
        """The model whose entity vectors are formed as :meth:`query` recorded (None: plain mean), with
        ``query_vectors`` (rows in the order of ``item_ids``) when the record says it had them."""
        q = query or {}
        dims = q.get("dims")
        qmap = decode_matrix(q["map"], (dims, dims)) if q.get("map") is not None and dims else None
        if (q.get("vectors") is not None) != (query_vectors is not None):
            raise ValueError("the recorded query layout and the query vectors given disagree "
                             f"(recorded: {'vectors' in q}, given: {query_vectors is not None})")
        return cls(item_ids, vectors, info, query_dims=dims, query_tail=tuple(q.get("tail", ())),
                   query_divide=q.get("divide"), similarity_dims=q.get("similarity", 0), query_map=qmap,
                   query_vectors=query_vectors)

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def __len__(self) -> int:
        return len(self.item_ids)


class EntityEncoder(Protocol):
    """A fitted model that encodes entity histories itself (a sequence model's
    :class:`~featurestore.embed.sequence.SequenceEncoder`)."""

    def encode(self, events: EventTable, entities: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(entity codes, unit vectors) of the entities (codes; None: all) that have a vector."""
        ...

    def rotated(self, r: np.ndarray) -> EntityEncoder:
        """The same model with every stored vector (items and entities) multiplied by ``r``."""
        ...

    def to_bytes(self) -> bytes:
        """The model, to store beside the item commit (the embedder's ``load_encoder`` reads it back)."""
        ...


@runtime_checkable
class Embedder(Protocol):
    """Fits item vectors from events ordered by (entity, time) (an :class:`EventTable`). ``name`` is
    recorded in commits.

    The returned :class:`ItemModel` says how entity vectors are formed from it (``query_dims`` and
    ``query_tail``); the pipeline records that with the commit. An embedder may also list, as
    ``imports``, modules its ``fit`` imports late (the pipeline imports them in the background while
    the fit starts).
    """

    @property
    def name(self) -> str: ...

    @property
    def dim(self) -> int: ...

    def fit(self, events: EventTable, *, progress: bool = False, engine: Engine | None = None) -> ItemModel:
        """Item vectors for (a subset of) ``events.item_ids``; items it cannot embed are left out. Bulk
        counting goes through ``engine`` (default: DuckDB's). ``events`` may stay in the engine (only
        per-item facts in Python); ``events.load()`` gives every event as arrays when an embedder needs
        the sequences themselves (its memory then grows with the events)."""
        ...

    def params(self) -> dict[str, Any]:
        """The parameters that define the model (recorded in commit metadata)."""
        ...


def encode_matrix(m: np.ndarray) -> dict[str, Any]:
    """A float32 matrix as JSON-able data that decodes to the same bytes (little-endian, base64)."""
    a = np.ascontiguousarray(m, dtype="<f4")
    return {"shape": list(a.shape), "float32_base64": base64.b64encode(a.tobytes()).decode("ascii")}


def decode_matrix(data: dict[str, Any], shape: tuple[int, int]) -> np.ndarray:
    """The matrix :func:`encode_matrix` wrote; ``ValueError`` when it is not of ``shape``."""
    if tuple(data.get("shape", ())) != tuple(shape):
        raise ValueError(f"a recorded matrix of shape {data.get('shape')} where {list(shape)} was expected")
    raw = base64.b64decode(data["float32_base64"])
    if len(raw) != 4 * shape[0] * shape[1]:
        raise ValueError(f"a recorded {shape[0]}x{shape[1]} matrix holds {len(raw)} bytes")
    return np.frombuffer(raw, dtype="<f4").astype(np.float32).reshape(shape)


def matrix_bytes(m: np.ndarray) -> bytes:
    """A float32 matrix as bytes (little-endian) that :func:`matrix_from_bytes` reads back."""
    return np.ascontiguousarray(m, dtype="<f4").tobytes()


def matrix_from_bytes(raw: bytes, shape: tuple[int, int]) -> np.ndarray:
    """The matrix :func:`matrix_bytes` wrote; ``ValueError`` when the bytes are not of ``shape``."""
    if len(raw) != 4 * shape[0] * shape[1]:
        raise ValueError(f"{len(raw)} bytes cannot hold a {shape[0]}x{shape[1]} float32 matrix")
    return np.frombuffer(raw, dtype="<f4").astype(np.float32).reshape(shape)


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit norm (zero rows stay zero)."""
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)
