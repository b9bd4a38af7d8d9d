"""Point-in-time-correct training sets: each spine row (entity keys, a label time, labels) gets, per
feature group, the row of its key with the greatest ``event_time <=`` the label time (within ``ttl``
when set), read through one DuckDB ASOF LEFT JOIN per group. Nothing later ever leaks in; keys with
no such row get nulls; every spine row is kept, in order, duplicates included.

Example::

    ts = store.training_set(spine, features=["user_embeddings:1", "item_embeddings:1:embedding"],
                            event_time="label_time", ttl=timedelta(days=7))
    ts.pins                       # {"user_embeddings:1": 12, "item_embeddings:1": 9}
    ts.to_arrow()                 # or .to_pandas(), .to_batches(), .to_parquet("train.parquet") (streamed)
    store.training_set(spine, features=[...], event_time="label_time", pins=ts.pins)  # same bytes

Two ways to read corrections (a later commit rewriting an old ``event_time``):

* ``known_at="latest"`` (default): for a (key, event_time) written by several commits, the newest
  commit's value. Best values, but a training row may see a fix that landed after its label time.
* ``known_at="spine"``: only rows whose commit had landed (``_ingested_at <=`` label time): what
  serving could really have returned at that instant.

Where things are: :mod:`.spine` reads the spine, :mod:`.refs` parses feature references and
:mod:`.groups` resolves them to checked join groups; :func:`plan` here puts them together into a
:class:`TrainingSet`, which runs the join and gathers the vectors.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import pyarrow as pa

from featurestore.catalog import Catalog
from featurestore.engine.base import Engine, FrameEngine, JoinRequest
from featurestore.engine.pit_sql import _ROW, JoinGroup, KnownAt
from featurestore.errors import CorruptData, FeatureStoreError, InvalidData, QueryError, SpineError, StorageError
from featurestore.storage.checksums import verify_data_files
from featurestore.storage.objectstore import is_object_store
from featurestore.training.groups import Ttl, attach_join_caches, check_entity_keys, join_groups
from featurestore.training.join_cache import build_behind
from featurestore.training.refs import FeatureRef
from featurestore.training.spine import Spine, SpineSource
from featurestore.training.vectors import VectorColumn

if TYPE_CHECKING:
    import pandas as pd

# also imported from here: FeatureRef and Spine (defined in .refs and .spine), _ROW (by .saved)
__all__ = ["_ROW", "FeatureRef", "Spine", "TrainingSet", "plan", "rechunk"]

_T = TypeVar("_T")
log = logging.getLogger("featurestore.training")


@dataclass
class TrainingSet:
    """A point-in-time-correct training set, not yet computed: run it with :meth:`to_arrow`,
    :meth:`to_pandas`, :meth:`to_batches` or :meth:`to_parquet`. :attr:`pins` records the commit read
    per feature group; :attr:`sql` is the join run (over the registered spine ``{spine}``; vector
    columns come out of it as row positions and are gathered afterwards)."""

    catalog: Catalog
    sql: str
    pins: dict[str, int]
    params: dict[str, Any]
    _request: JoinRequest = field(repr=False)
    _spine: Any = field(repr=False)  # a SpineSource
    _columns: list[str] = field(default_factory=list)
    _vectors: dict[str, VectorColumn] = field(default_factory=dict, repr=False)  # output name -> source
    _caches: dict[str, pa.Table] = field(default_factory=dict, repr=False)  # "{cache<i>}" -> join cache
    _uncached: list[JoinGroup] = field(default_factory=list, repr=False)  # groups read without an index
    engine: Engine | None = field(default=None, repr=False)  # what runs the join (None: the store's)

    @property
    def _engine(self) -> Engine:
        return self.engine or self.catalog.engine

    def _cache_behind(self) -> None:
        """Once a result is out: queue the join-cache builds of the groups read without one."""
        for g in self._uncached:
            build_behind(self.catalog, g)
        self._uncached = []

    @property
    def columns(self) -> list[str]:
        """The result's column names: the spine's, then each group's prefixed feature columns."""
        return list(self._columns)

    def _reader(self, batch_size: int, memory_limit: str | None = None) -> pa.RecordBatchReader:
        """The join's result (the groups' columns, vectors as row positions), in spine order."""
        request = replace(self._request, batch_size=batch_size, memory_limit=memory_limit)
        return self._engine.point_in_time_join(request)

    def _attach(self, spine: pa.Table, joined: pa.Table) -> pa.Table:
        """The spine's columns, then the joined ones (same rows, same order)."""
        if spine.num_rows != joined.num_rows:
            raise QueryError(f"training-set query returned {joined.num_rows} rows for {spine.num_rows} "
                             "spine rows")
        return pa.Table.from_arrays([*spine.columns, *joined.columns],
                                    schema=pa.schema([*spine.schema, *joined.schema]))

    def _prepare_vectors(self) -> Future[None]:
        """Load (or decode) the vector files in a background thread while DuckDB runs the join."""
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="featurestore-vectors")
        try:
            return pool.submit(self._prepare_all)
        finally:
            pool.shutdown(wait=False)

    def _prepare_all(self) -> None:
        """Check the data files DuckDB reads (groups without a join cache) against their commits'
        checksums, and load the vectors (caches checked, files checked before they are decoded)."""
        for g in self._request.groups:
            if g.cache is None and not (g.files and is_object_store(g.files[0])):  # objects: checked as read
                verify_data_files(self.catalog.root, self.catalog.table_path(g.spec.name, g.spec.version),
                                  g.files, g.spec.key)
        for vc in self._vectors.values():
            vc.prepare()

    def _gather(self, batch: pa.RecordBatch | pa.Table) -> pa.Table:
        """Replace each vector column's row positions by the vectors (columns gathered in parallel:
        numpy releases the GIL while it copies)."""
        table = batch if isinstance(batch, pa.Table) else pa.Table.from_batches([batch])
        items = list(self._vectors.items())
        columns = [table.column(out) for out, _ in items]
        if len(items) > 1 and table.num_rows >= 1 << 14:
            with ThreadPoolExecutor(max_workers=min(len(items), 4),
                                    thread_name_prefix="featurestore-gather") as pool:
                gathered = list(pool.map(lambda a: a[0][1].take(a[1]), zip(items, columns)))
        else:
            gathered = [source.take(col) for (_, source), col in zip(items, columns)]
        for (out, source), vectors in zip(items, gathered):
            i = table.schema.get_field_index(out)
            table = table.set_column(i, pa.field(out, pa.list_(pa.float32(), source.dim)), vectors)
        return table

    def to_batches(self, batch_size: int = 1 << 17, *, memory_limit: str | None = None) -> Iterator[pa.Table]:
        """Stream the training set as Arrow tables of up to ``batch_size`` rows, in spine order.
        ``memory_limit`` (e.g. ``"1GB"``) caps DuckDB while the join runs, so a big join spills to disk
        instead; DuckDB's limit is database-wide, so it is lowered for the call only, never raised."""
        decoding = self._prepare_vectors()
        reader = _after_checks(decoding, lambda: self._reader(batch_size, memory_limit))
        spine = _Rows(self._spine.batches(), self._spine.arrow_schema)
        empty = True
        found: dict[str, int] = {}
        rows = 0
        for batch in reader:
            empty = False
            rows += batch.num_rows
            _count_found(self._request.groups, batch, found)
            yield self._attach(spine.take(batch.num_rows), self._gather(batch))
        if empty:  # always at least one (possibly empty) table: it carries the schema
            yield self._attach(spine.take(0), self._gather(reader.schema.empty_table()))
        if not spine.exhausted():
            raise QueryError("training-set query returned fewer rows than the spine has")
        self._warn_if_nothing_found(rows, found)
        self._cache_behind()

    def to_arrow(self) -> pa.Table:
        """Compute the training set as a pyarrow Table (spine order, spine columns first)."""
        decoding = self._prepare_vectors()
        table = _after_checks(decoding, lambda: self._reader(1 << 20).read_all())
        out = self._attach(self._spine.read_all(), self._gather(table).combine_chunks())
        found: dict[str, int] = {}
        _count_found(self._request.groups, table, found)
        self._warn_if_nothing_found(table.num_rows, found)
        self._cache_behind()
        return out

    def _warn_if_nothing_found(self, rows: int, found: dict[str, int]) -> None:
        """Say so when a feature group gave no value to any spine row: usually a spine before every
        commit, keys of another type, or ``known_at="spine"`` over rows committed after the labels."""
        empty = [g.key for g in self._request.groups if rows and not found.get(g.key)]
        if not empty:
            return
        hint = (" With known_at='spine' a row counts from its commit time (_ingested_at): rows backfilled "
                "after the spine's times are invisible to it; known_at='latest' reads them."
                if self._request.known_at == "spine" else "")
        log.warning("training set: no feature values for any of the %d spine rows from %s (every value is "
                    "null). Check the spine's keys and times against the commits read (pins %s).%s",
                    rows, ", ".join(empty), self.pins, hint)

    def to_spark(self) -> Any:
        """The training set as a Spark DataFrame, computed on the cluster (``engine="spark"``): the spine's
        columns, then each group's (vectors as ``array<float>``), one row per spine row, in no
        particular order (the spine's rows stay where they are; nothing comes to this process)."""
        engine = self._engine
        if not isinstance(engine, FrameEngine):
            raise InvalidData(f"to_spark() needs a training set planned with engine='spark' (this one runs on "
                              f"{engine.name})")
        return engine.training_frame(self._request)

    def to_pandas(self) -> pd.DataFrame:
        """Compute the training set as a pandas DataFrame (vectors as numpy arrays)."""
        return self.to_arrow().to_pandas()

    def to_parquet(self, path: str | os.PathLike[str], *, compression: str = "snappy",
                   row_group_size: int = 1 << 17, memory_limit: str | None = "1GB") -> int:
        """Stream the training set into one Parquet file, batch by batch (the whole set is never
        held in memory); returns the row count. Row groups have exactly ``row_group_size`` rows (the
        last one fewer), so equal inputs give identical bytes. ``memory_limit``: see :meth:`to_batches`
        (``None`` leaves DuckDB's limit alone)."""
        import pyarrow.parquet as pq

        target = os.fspath(path)
        tmp = f"{target}.{uuid.uuid4().hex}.tmp"
        rows = 0
        writer = None
        try:
            if os.path.dirname(target):
                os.makedirs(os.path.dirname(target), exist_ok=True)
            batches = self.to_batches(row_group_size, memory_limit=memory_limit)
            for chunk in rechunk(batches, row_group_size, keep_empty=True):
                if writer is None:
                    writer = pq.ParquetWriter(tmp, chunk.schema, compression=compression)
                if chunk.num_rows:
                    writer.write_table(chunk, row_group_size=row_group_size)
                    rows += chunk.num_rows
            assert writer is not None
            writer.close()
            writer = None
            os.replace(tmp, target)
        except OSError as exc:  # an unwritable or full destination: the target is left as it was
            raise StorageError(f"cannot write the training set to {target}: {exc.strerror or exc}") from exc
        finally:
            if writer is not None:
                writer.close()
            if os.path.exists(tmp):
                os.remove(tmp)
        return rows


def _count_found(groups: Sequence[JoinGroup], batch: pa.Table | pa.RecordBatch, found: dict[str, int]) -> None:
    """Add, per group, the rows of ``batch`` with a value in the group's first output column."""
    for g in groups:
        column = batch.column(batch.schema.get_field_index(g.output[0])) if g.output else None
        if column is not None:
            found[g.key] = found.get(g.key, 0) + len(column) - column.null_count


def rechunk(tables: Iterable[pa.Table], size: int, *, keep_empty: bool = False) -> Iterator[pa.Table]:
    """Re-slice a stream of tables into tables of exactly ``size`` rows (the last one fewer).
    ``keep_empty`` yields one empty table when the stream has no rows (it carries the schema)."""
    pending: list[pa.Table] = []
    buffered = 0
    empty: pa.Table | None = None
    for t in tables:
        if not t.num_rows:
            empty = t
            continue
        pending.append(t)
        buffered += t.num_rows
        if buffered >= size:
            whole = pa.concat_tables(pending)
            start = 0
            while whole.num_rows - start >= size:
                yield whole.slice(start, size)
                start += size
            rest = whole.slice(start)
            pending, buffered = ([rest] if rest.num_rows else []), rest.num_rows
            empty = None
    if buffered:
        yield pa.concat_tables(pending)
    elif keep_empty and empty is not None:
        yield empty


class _Rows:
    """Takes exactly n rows at a time from a stream of record batches."""

    def __init__(self, batches: Iterator[pa.RecordBatch], schema: pa.Schema):
        self._batches = batches
        self._schema = schema
        self._pending: list[pa.RecordBatch] = []
        self._buffered = 0

    def take(self, n: int) -> pa.Table:
        while self._buffered < n:
            batch = next(self._batches, None)
            if batch is None:
                raise QueryError("training-set query returned more rows than the spine has")
            self._pending.append(batch)
            self._buffered += batch.num_rows
        whole = pa.Table.from_batches(self._pending, schema=self._schema)
        rest = whole.slice(n)
        self._pending, self._buffered = rest.to_batches(), rest.num_rows
        return whole.slice(0, n)

    def exhausted(self) -> bool:
        return self._buffered == 0 and all(b.num_rows == 0 for b in self._batches)


# ---- building the query ---------------------------------------------------------------------------
_TIME_TYPES = ("TIMESTAMP", "TIMESTAMP WITH TIME ZONE", "TIMESTAMP_NS", "TIMESTAMP_MS", "TIMESTAMP_S", "DATE")


def plan(store: Catalog, spine: Spine, features: Sequence[str | FeatureRef], *,
         entity_keys: Mapping[str, Any] | None = None, event_time: str = "event_time",
         ttl: Ttl = None, known_at: KnownAt = "latest",
         pins: Mapping[str, int] | None = None, prefix: bool = True, engine: Engine | None = None) -> TrainingSet:
    """Resolve the feature groups and commits and build the query (see :meth:`FeatureStore.training_set`).

    The steps: check the arguments and the spine's event-time column, resolve each feature reference
    to a join group (columns, spine keys, commit, ttl), attach the join caches that exist, then describe
    the join and the vector columns to gather."""
    _check_arguments(features, known_at)
    if isinstance(features, str | FeatureRef):
        features = [features]
    engine = engine or store.engine
    source = SpineSource(spine, store, engine)
    _check_event_time(source, event_time)
    refs = [FeatureRef.parse(f) for f in features]
    entity_keys = check_entity_keys(entity_keys, refs)
    groups = join_groups(store, refs, source, entity_keys=entity_keys, ttl=ttl, pins=dict(pins or {}),
                         prefix=prefix)
    # join caches are Arrow tables in this process: an engine on a cluster reads the data files
    indexes: dict[str, pa.Table] = {}
    uncached: list[JoinGroup] = []
    if engine.in_process:
        groups, indexes, uncached = attach_join_caches(store, groups)
    request = JoinRequest(tuple(groups), event_time, known_at, source.register, indexes)
    return TrainingSet(store, engine.describe_join(request), {g.key: g.commit for g in groups},
                       _params(groups, event_time, known_at, prefix), request, source,
                       [*source.columns, *(o for g in groups for o in g.output)], _vector_columns(store, groups),
                       indexes, uncached, engine if engine is not store.engine else None)


def _after_checks(checks: Future[None], run: Callable[[], _T]) -> _T:
    """``run()`` (the join), then the file checks running beside it: a damaged file is reported as
    :class:`CorruptData` naming it, also when the join itself failed on it first."""
    try:
        out = run()
    except FeatureStoreError as exc:
        if isinstance(checks.exception(), CorruptData):
            raise checks.exception() from exc  # type: ignore[misc]
        raise
    checks.result()
    return out


def _check_arguments(features: Sequence[str | FeatureRef], known_at: str) -> None:
    if known_at not in ("latest", "spine"):
        raise InvalidData(f"known_at must be 'latest' or 'spine'; got {known_at!r}")
    if not features:
        raise InvalidData("features is empty: name at least one feature group, e.g. ['user_embeddings:1']")


def _check_event_time(source: SpineSource, event_time: str) -> None:
    """The spine has the event-time column, and it holds timestamps or dates (or only nulls)."""
    cols = source.columns
    if event_time not in cols:
        raise SpineError(f"the spine has no event-time column {event_time!r} (columns: {', '.join(cols)}); "
                         "pass event_time=<column>")
    ttype = source.schema[event_time]
    if not ttype.startswith(_TIME_TYPES) and ttype != '"NULL"':
        raise SpineError(f"the spine's {event_time!r} column must be a timestamp or date; it is {ttype}")


def _params(groups: Sequence[JoinGroup], event_time: str, known_at: KnownAt, prefix: bool) -> dict[str, Any]:
    """The arguments that rebuild this training set (with its pins), as plain JSON values."""
    return {
        "features": [f"{g.key}:{','.join(g.columns)}" for g in groups],
        "entity_keys": {g.key: list(g.spine_keys) for g in groups},
        "event_time": event_time,
        "ttl": {g.key: (g.ttl.total_seconds() if g.ttl is not None else None) for g in groups},
        "known_at": known_at,
        "prefix": prefix,
    }


def _vector_columns(store: Catalog, groups: Sequence[JoinGroup]) -> dict[str, VectorColumn]:
    """Result column name -> the vector column its row positions are gathered from."""
    vectors = {}
    for g in groups:
        for c in g.vector_columns:
            vectors[g.output[g.columns.index(c)]] = VectorColumn(
                store, f"{g.spec.name}/v{g.spec.version}", c, g.spec.feature(c).dim or 0, list(g.files),
                np.asarray(g.offsets, np.int64))
    return vectors
