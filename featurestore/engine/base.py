"""The engine seam: every step that scans data in bulk goes through one small interface.

An :class:`Engine` does six jobs, one method each, with Arrow (or numpy for the in-process kernels) at
the boundary and options in frozen request objects, so a new option never changes a signature:

=========================  ==========================================================================
``read_events``            an event source -> coded, checked events before a cutoff (pipelines)
``cooccurrence``           windowed co-occurrence counts over time-ordered sequences (item models)
``weighted_sums``          per-entity weighted sums of item vectors (entity aggregation)
``scan``                   the rows of some data files, optionally only some keys or row numbers
                           (validation statistics, reading a committed model)
``latest``                 the newest row per key of a table (online views, ``FeatureGroup.latest``)
``point_in_time_join``     a training set's as-of joins, streamed in spine order (``relation_schema``
                           tells the column types of a spine first)
``join_cache_rows``        one commit's narrow rows sorted by (keys, event time), for a join cache
=========================  ==========================================================================

DuckDB (:class:`featurestore.engine.duckdb.DuckDBEngine`) is the default and only implementation
today; a Spark engine implements the same methods. Nothing above this layer imports an engine's
library: callers hold an :class:`Engine` and call these methods.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pyarrow as pa

from featurestore.engine.events import Events, EventSource
from featurestore.engine.pit_sql import JoinGroup, KnownAt
from featurestore.schema import FeatureGroupSpec

if TYPE_CHECKING:
    import scipy.sparse as sp  # 0.1 s to import: only the in-process kernels need it at run time


@dataclass(frozen=True)
class Cooccurrence:
    """How to count co-occurrences: pairs within ``window`` events of each other in an entity's
    sequence, weighted by ``(window - d + 1) / window`` and the square roots of the events' weights;
    pairs across sessions (split at pauses longer than ``session_gap``) count ``cross_session`` times.

    ``directed``: count each pair only from the earlier item (row) to the later one (column), so entry
    ``(i, j)`` is how often ``j`` came within ``window`` events after ``i`` and the matrix is not
    symmetric; the undirected matrix is this one plus its transpose."""

    window: int = 5
    min_count: int = 1
    collapse_repeats: bool = True
    session_gap: timedelta | None = None
    cross_session: float = 1.0
    directed: bool = False


@dataclass(frozen=True)
class Scan:
    """Rows of some Parquet data files of one feature group.

    ``columns``: the columns read (vectors typed ``FLOAT[dim]``); ``keys``: only the rows whose key
    columns match a row of this table; ``locate``: add ``_file`` (position in ``files``) and ``_row``
    (row number in that file); ``rows``: only these row numbers per file position (in that order).
    """

    spec: FeatureGroupSpec
    files: tuple[str, ...]
    columns: tuple[str, ...] | None = None
    keys: pa.Table | None = None
    locate: bool = False
    rows: Mapping[int, np.ndarray] | None = None


@dataclass(frozen=True)
class JoinRequest:
    """A training set's point-in-time joins: per group, the row of the spine row's key with the greatest
    join time ``<=`` the spine's ``event_time`` (see :mod:`featurestore.training`).

    ``register_spine(connection, name)`` makes the spine's key/time columns and row ordinal readable
    under ``name``; ``caches`` maps a group's placeholder to its sorted join cache (Arrow)."""

    groups: tuple[JoinGroup, ...]
    event_time: str
    known_at: KnownAt
    register_spine: Callable[[Any, str], None]
    caches: Mapping[str, pa.Table] = field(default_factory=dict)
    batch_size: int = 1 << 17
    memory_limit: str | None = None


class Engine(ABC):
    """What scans data in bulk. See the module docstring for the jobs; all methods are required."""

    name: str = "engine"

    @abstractmethod
    def read_events(self, source: EventSource, *, before: datetime | None = None,
                    weights: Mapping[str, float] | None = None) -> Events:
        """Events with time ``< before`` (all when None), checked, coded, ordered by (entity, time)."""

    @abstractmethod
    def cooccurrence(self, events: Events, request: Cooccurrence) -> sp.csr_matrix:
        """(n_items, n_items) float32 CSR matrix of co-occurrence counts: symmetric, or with
        ``request.directed`` earlier item (row) -> later item (column)."""

    @abstractmethod
    def weighted_sums(self, entity: np.ndarray, row: np.ndarray, weight: np.ndarray, n_entities: int,
                      vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per entity, the weighted sum of ``vectors[row]`` over its events: (entity codes, sums, weight
        totals), for the entities with at least one event with ``row >= 0`` and ``weight > 0``."""

    @abstractmethod
    def scan(self, request: Scan) -> pa.Table:
        """The rows a :class:`Scan` asks for."""

    @abstractmethod
    def latest(self, table: pa.Table, key_names: Sequence[str], event_time: str, tiebreak: str) -> pa.Table:
        """The newest row per key (greatest ``event_time``, then greatest ``tiebreak``), sorted by key,
        without the ``tiebreak`` column."""

    @abstractmethod
    def point_in_time_join(self, request: JoinRequest) -> pa.RecordBatchReader:
        """The joined feature columns (vectors as row positions), one row per spine row, in spine order."""

    @abstractmethod
    def relation_schema(self, register: Callable[[Any, str], None]) -> dict[str, str]:
        """Column name -> SQL type name of the relation ``register(connection, name)`` makes readable."""

    @abstractmethod
    def join_cache_rows(self, group: JoinGroup) -> pa.Table:
        """Every narrow row of ``group``'s commit (keys, event time, ingestion time, scalar features, row
        position) sorted by (keys, event time): what a join cache stores."""

    @abstractmethod
    def describe_join(self, request: JoinRequest) -> str:
        """The query :meth:`point_in_time_join` runs, for people to read."""

    @abstractmethod
    def close(self) -> None:
        """Release what the engine holds (connections, sessions it started)."""


EngineName = Literal["duckdb"]
