"""The engine seam: every step that scans data in bulk goes through one small interface.

An :class:`Engine` does six jobs, one method each, with Arrow (or numpy for the in-process kernels) at
the boundary and options in frozen request objects, so a new option never changes a signature:

=========================  ==========================================================================
``read_events``            an event source -> an :class:`EventTable` of coded, checked events before a
                           cutoff, kept by the engine (pipelines)
``cooccurrence``           windowed co-occurrence counts over time-ordered sequences (item models)
``entity_sums``            per-entity decayed, weighted sums of item vectors, streamed in batches
                           (entity aggregation)
``scan``                   the rows of some data files, optionally only some keys or row numbers
                           (validation statistics, reading a committed model)
``latest``                 the newest row per key of a table (online views, ``FeatureGroup.latest``)
``point_in_time_join``     a training set's as-of joins, streamed in spine order (``relation_schema``
                           tells the column types of a spine first)
``join_cache_rows``        one commit's narrow rows sorted by (keys, event time), for a join cache
=========================  ==========================================================================

Events stay in the engine: ``read_events`` returns a handle (:class:`EventTable`: a DuckDB table, a
Spark DataFrame, or numpy arrays when small) holding in Python only what grows with the number of items
(item ids, counts); counting and aggregation take the handle back, so no step needs every event in
Python. DuckDB (:class:`featurestore.engine.duckdb.DuckDBEngine`) is the default; a Spark engine
implements the same methods. Nothing above this layer imports an engine's
library: callers hold an :class:`Engine` and call these methods.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pyarrow as pa

from featurestore.engine.events import EventSource, EventTable
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
class EntitySums:
    """Per entity, the weighted sum of item vectors over its events (entity aggregation).

    An event of item code ``c`` adds ``vectors[item_rows[c]]`` (nothing when ``item_rows[c] < 0``)
    weighted by its event weight times ``0.5 ** (age / half_life)``: the age is counted back from the
    entity's own latest event, in events (``half_life`` an int) or in time (a timedelta); None means no
    decay. With ``max_events`` only each entity's most recent events count. With ``since`` (us since
    the epoch) only entities with an event at or after it are summed (incremental runs).
    ``batch_rows``: about how many entities a result batch holds."""

    item_rows: np.ndarray
    vectors: np.ndarray
    half_life: int | timedelta | None = 5
    max_events: int | None = None
    since: int | None = None
    batch_rows: int = 1 << 18


@dataclass
class SumsBatch:
    """Entity sums for some entities (ascending ids): ``sums[k]`` and ``totals[k]`` (the sum of the
    weights) belong to ``entity_ids[k]``; ``n_events`` counts all its events (summed or not) and ``last``
    is its newest event time (us). Entities with no summed event (weight 0 or no vector) are absent."""

    entity_ids: np.ndarray      # object array of str
    sums: np.ndarray            # float32 (n, dim)
    totals: np.ndarray          # float32 (n,)
    n_events: np.ndarray        # int64 (n,)
    last: np.ndarray            # int64 (n,)
    considered: int = 0         # entities looked at for this batch (summed or skipped)

    @classmethod
    def from_arrow(cls, batch: pa.RecordBatch, dim: int, considered: int = 0) -> SumsBatch:
        """The sums of an Arrow batch with columns ``e``, ``sums`` (lists of ``dim`` floats), ``total``,
        ``n`` and ``last`` (what an engine's distributed sums hold)."""
        flat = np.asarray(batch.column("sums").flatten().to_numpy(zero_copy_only=False), np.float32)
        return cls(np.asarray(batch.column("e").to_pylist(), dtype=object), flat.reshape(batch.num_rows, dim),
                   np.asarray(batch.column("total").to_numpy(), np.float32),
                   np.asarray(batch.column("n").to_numpy(), np.int64),
                   np.asarray(batch.column("last").to_numpy(), np.int64), considered=considered)


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
    #: scans run in this process (in-memory caches such as join caches help); False for a cluster engine
    in_process: bool = True
    #: reads a store's files on object storage itself, by their URIs (a cluster's executors, which cannot
    #: see this machine's downloaded copies); False: it is handed local copies
    reads_objects: bool = False
    #: where work in this process spills to disk (None: the system's temporary folder)
    temp_directory: str | None = None

    def use_objects(self, table_uri: str, options: Mapping[str, str], checksums: Mapping[str, str]) -> None:
        """Told before it is handed the object URIs of the table at ``table_uri`` (engines that
        ``reads_objects``): the store's resolved settings and the checksums its commits recorded (data
        file name -> checksum), which the engine checks each file against as it reads it. An engine that
        is handed local copies has nothing to note."""
        return None

    @abstractmethod
    def read_events(self, source: EventSource, *, before: datetime | None = None,
                    weights: Mapping[str, float] | None = None) -> EventTable:
        """Events with time ``< before`` (all when None), checked, coded, ordered by (entity, time),
        kept by the engine (close the handle when done)."""

    @abstractmethod
    def cooccurrence(self, events: EventTable, request: Cooccurrence) -> sp.csr_matrix:
        """(n_items, n_items) float32 CSR matrix of co-occurrence counts (indexed by item code):
        symmetric, or with ``request.directed`` earlier item (row) -> later item (column). ``events``
        may be any kind of :class:`EventTable` (in-memory :class:`Events` included)."""

    @abstractmethod
    def entity_sums(self, events: EventTable, request: EntitySums) -> Iterator[SumsBatch]:
        """The :class:`EntitySums` of every entity (or every entity active ``since``), in batches of
        ascending entity ids; ``events`` may be any kind of :class:`EventTable`."""

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


class FrameEngine(ABC):
    """An engine with its own distributed data frames (Spark): a capability on top of :class:`Engine`
    (as ibis's opt-in backend mixins), for the jobs that must stay where the data lives. A feature
    group inserts such a frame (:meth:`stage_frame`: checked and written by the engine, committed by
    delta-rs), validation computes its statistics as distributed aggregates (:meth:`frame_stats`), and
    a training set returns one (:meth:`training_frame`). Callers never import the engine's library."""

    @abstractmethod
    def is_frame(self, data: Any) -> bool:
        """Whether ``data`` is one of this engine's frames."""

    @abstractmethod
    def stage_frame(self, spec: FeatureGroupSpec, data: Any, *, cutoff: datetime | None, folder: str,
                    ingested_at: datetime) -> StagedFrame:
        """Check ``data`` against ``spec`` (as :func:`featurestore.conform.conform`), stamp
        ``_ingested_at`` and write it as Parquet into ``folder`` (a new folder inside the table's), or,
        when ``folder`` is the URI of a table on object storage (an engine that ``reads_objects``, told
        the store's settings), as new objects directly under it, described in ``StagedFrame.objects``."""

    @abstractmethod
    def number_rows(self, frame: Any, column: str) -> Any:
        """``frame`` with a stable row ordinal in ``column`` (materialised once, so every later use of
        the frame sees the same numbers)."""

    @abstractmethod
    def read_frame(self, spec: FeatureGroupSpec, files: Sequence[str]) -> Any:
        """The rows of a commit's data files as a frame (the table's columns and ``_ingested_at``)."""

    @abstractmethod
    def frame_stats(self) -> Any:
        """The module computing validation statistics of frames (see :mod:`.spark.stats`)."""

    @abstractmethod
    def training_frame(self, request: JoinRequest) -> Any:
        """A training set as a frame: the spine's own columns and each group's (vectors as vectors), one
        row per spine row, unordered."""

    @abstractmethod
    def frame_batches(self, frame: Any, order: str | None = None) -> pa.RecordBatchReader:
        """A frame's rows as Arrow batches on this machine, in ``order`` of that column (then dropped)."""

    @abstractmethod
    def entity_rows_frame(self, events: EventTable, request: EntitySums,
                          rows: Callable[[pa.RecordBatch], pa.RecordBatch], schema: pa.Schema
                          ) -> tuple[Any, int] | None:
        """Entity rows as a frame, made where the events live: the weighted sums of ``request`` (as
        :meth:`Engine.entity_sums` computes them; columns ``e``, ``sums``, ``total``, ``n``, ``last``),
        each batch turned by ``rows`` (a picklable function run where the frame is) into rows of
        ``schema``; and how many entities were considered. None when ``events`` are not this engine's
        (then :meth:`Engine.entity_sums` brings the sums here)."""


@dataclass(frozen=True)
class StagedFrame:
    """A frame an engine checked and wrote for a commit: the written rows (read back from ``files``),
    the Parquet files, and their row count."""

    frame: Any
    files: tuple[str, ...]
    rows: int
    objects: tuple[Any, ...] = ()  # on object storage: what each object written holds (name, size, checksum, ...)


EngineName = Literal["duckdb", "spark"]
