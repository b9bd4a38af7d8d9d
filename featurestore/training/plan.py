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
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import os
import re
import sys
import threading
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import duckdb
import numpy as np
import pyarrow as pa

from featurestore.catalog import Catalog
from featurestore.engine.base import JoinRequest
from featurestore.engine.pit_sql import _ROW, _TIME, JoinGroup, KnownAt, _file_layout, _offsets_sql
from featurestore.errors import FeatureGroupNotFound, InvalidData, QueryError, SpineError
from featurestore.schema import FeatureGroupSpec
from featurestore.storage.duck import literal, quote
from featurestore.training.join_cache import build_behind, has_key32, join_index
from featurestore.training.vectors import VectorColumn, file_rows, from_numpy

if TYPE_CHECKING:
    import pandas as pd


Spine = Any  # pandas.DataFrame | pyarrow.Table | RecordBatchReader | Parquet path(s) | DuckDB relation
_REF = re.compile(r"^(?P<name>[a-z_][a-z0-9_]*)(?::(?P<version>\d+))?(?::(?P<columns>[A-Za-z0-9_,\s]+))?$")
_counter = iter(range(1 << 62))
_counter_lock = threading.Lock()


def _unique(prefix: str) -> str:
    with _counter_lock:
        return f"{prefix}_{os.getpid()}_{next(_counter)}"


@dataclass(frozen=True)
class FeatureRef:
    """One feature group version and the columns taken from it, as ``name[:version][:col,col]``."""

    name: str
    version: int | None = None
    columns: tuple[str, ...] | None = None  # None: every feature column

    @classmethod
    def parse(cls, ref: str | FeatureRef) -> FeatureRef:
        if isinstance(ref, FeatureRef):
            return ref
        m = _REF.match(ref.strip()) if isinstance(ref, str) else None
        if m is None:
            raise InvalidData(f"bad feature reference {ref!r}: expected 'name', 'name:version' or "
                              "'name:version:col1,col2' (e.g. 'user_embeddings:1:embedding')")
        cols = tuple(c.strip() for c in m["columns"].split(",") if c.strip()) if m["columns"] else None
        return cls(m["name"], int(m["version"]) if m["version"] else None, cols or None)

    @property
    def key(self) -> str:
        return f"{self.name}:{self.version}"


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
    _spine: Any = field(repr=False)
    _columns: list[str] = field(default_factory=list)
    _vectors: dict[str, VectorColumn] = field(default_factory=dict, repr=False)  # output name -> source
    _indexes: dict[str, pa.Table] = field(default_factory=dict, repr=False)  # "{index<i>}" -> join index
    _unindexed: list[JoinGroup] = field(default_factory=list, repr=False)  # groups read without an index

    def _index_behind(self) -> None:
        """Once a result is out: queue the join-index builds of the groups read without one."""
        for g in self._unindexed:
            build_behind(self.catalog, g)
        self._unindexed = []

    @property
    def columns(self) -> list[str]:
        """The result's column names: the spine's, then each group's prefixed feature columns."""
        return list(self._columns)

    def _reader(self, batch_size: int, memory_limit: str | None = None) -> pa.RecordBatchReader:
        """The join's result (the groups' columns, vectors as row positions), in spine order."""
        request = replace(self._request, batch_size=batch_size, memory_limit=memory_limit)
        return self.catalog.engine.point_in_time_join(request)

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
        reader = self._reader(batch_size, memory_limit)
        decoding.result()
        spine = _Rows(self._spine.batches(), self._spine.arrow_schema)
        empty = True
        for batch in reader:
            empty = False
            yield self._attach(spine.take(batch.num_rows), self._gather(batch))
        if empty:  # always at least one (possibly empty) table: it carries the schema
            yield self._attach(spine.take(0), self._gather(reader.schema.empty_table()))
        if not spine.exhausted():
            raise QueryError("training-set query returned fewer rows than the spine has")
        self._index_behind()

    def to_arrow(self) -> pa.Table:
        """Compute the training set as a pyarrow Table (spine order, spine columns first)."""
        decoding = self._prepare_vectors()
        table = self._reader(1 << 20).read_all()
        decoding.result()
        out = self._attach(self._spine.read_all(), self._gather(table).combine_chunks())
        self._index_behind()
        return out

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
        if os.path.dirname(target):
            os.makedirs(os.path.dirname(target), exist_ok=True)
        tmp = f"{target}.{uuid.uuid4().hex}.tmp"
        rows = 0
        writer = None
        try:
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
        finally:
            if writer is not None:
                writer.close()
            if os.path.exists(tmp):
                os.remove(tmp)
        return rows


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


# ---- the spine ------------------------------------------------------------------------------------
@contextlib.contextmanager
def _reading_spine(file: str) -> Iterator[None]:
    try:
        yield
    except (OSError, pa.ArrowException) as exc:
        raise SpineError(f"cannot read the spine file {file}: {exc}") from exc


class _SpineSource:
    """The spine as something DuckDB can scan, with a stable row ordinal (``__fs_row``)."""

    def __init__(self, data: Spine, store: Catalog):
        self.files: list[str] | None = None
        self.table: pa.Table | None = None
        if isinstance(data, str | os.PathLike) or (
                isinstance(data, list | tuple) and data and all(isinstance(p, str | os.PathLike) for p in data)):
            paths = [os.fspath(p) for p in (data if isinstance(data, list | tuple) else [data])]
            files: list[str] = []
            for p in paths:
                found = sorted(glob.glob(p)) if any(ch in p for ch in "*?[") else [p] if os.path.exists(p) else []
                if not found:
                    raise SpineError(f"spine file not found: {p}")
                files.extend(found)
            self.files = files
            try:
                rows = file_rows(files)
            except (OSError, pa.ArrowException) as exc:
                raise SpineError(f"cannot read the spine: {exc}") from exc
            self.offsets = [0, *itertools.accumulate(rows)]
        elif isinstance(data, duckdb.DuckDBPyRelation):
            self.table = data.to_arrow_table()
        elif "pandas" in sys.modules and isinstance(data, sys.modules["pandas"].DataFrame):
            try:
                self.table = pa.Table.from_pandas(data, preserve_index=False)
            except (pa.ArrowException, TypeError, ValueError) as exc:
                raise SpineError(f"the spine DataFrame cannot be converted to Arrow: {exc}") from exc
        elif isinstance(data, pa.RecordBatchReader):
            self.table = data.read_all()
        elif isinstance(data, pa.Table):
            self.table = data
        elif isinstance(data, pa.RecordBatch):
            self.table = pa.Table.from_batches([data])
        else:
            raise SpineError(f"the spine must be a pandas DataFrame, a pyarrow Table, a Parquet path or a "
                             f"DuckDB relation; got {type(data).__name__}")
        self.given: pa.Table | None = self.table  # the spine's own columns, attached to the result
        if self.table is not None:
            for name in (_ROW, _TIME):
                if name in self.table.column_names:
                    raise SpineError(f"the spine has a column named {name}, which is reserved")
            ordinals = from_numpy(np.arange(self.table.num_rows, dtype=np.int64))  # pa.array imports pandas
            self.table = self.table.append_column(_ROW, ordinals)
        self.schema = self._schema(store)

    @property
    def arrow_schema(self) -> pa.Schema:
        """The spine's own columns as the result carries them (a file spine: its first file's types)."""
        if self.given is not None:
            return self.given.schema
        import pyarrow.parquet as pq

        assert self.files is not None
        return pq.read_schema(self.files[0]).remove_metadata()

    def batches(self, batch_size: int = 1 << 17) -> Iterator[pa.RecordBatch]:
        """The spine's own columns in row-ordinal order, as record batches."""
        if self.given is not None:
            yield from self.given.to_batches()
            return
        import pyarrow.parquet as pq

        assert self.files is not None
        schema = self.arrow_schema
        for f in self.files:
            with _reading_spine(f):
                for batch in pq.ParquetFile(f).iter_batches(batch_size, columns=schema.names, use_threads=False):
                    yield batch if batch.schema.equals(schema) else batch.cast(schema)

    def read_all(self) -> pa.Table:
        """The spine's own columns, all rows."""
        if self.given is not None:
            return self.given
        import pyarrow.parquet as pq

        assert self.files is not None
        schema = self.arrow_schema
        tables = []
        for f in self.files:
            with _reading_spine(f):
                table = pq.ParquetFile(f).read(columns=schema.names).replace_schema_metadata()
                tables.append(table if table.schema.equals(schema) else table.cast(schema))
        return pa.concat_tables(tables)

    def _schema(self, store: Catalog) -> dict[str, str]:
        """Spine column name -> SQL type, as the engine sees it."""
        try:
            return store.engine.relation_schema(self.register)
        except QueryError as exc:
            raise SpineError(f"cannot read the spine: {exc}") from exc

    def register(self, cur: duckdb.DuckDBPyConnection, name: str) -> None:
        if self.table is not None:
            cur.register(name, self.table)
            return
        assert self.files is not None
        # row ordinal: file order (as listed, globs sorted), then row order within each file
        files = ", ".join(literal(f) for f in self.files)
        if len(self.files) == 1:
            cur.execute(
                f"CREATE OR REPLACE TEMP VIEW {quote(name)} AS SELECT * EXCLUDE (file_row_number), "
                f"file_row_number AS {_ROW} FROM read_parquet([{files}], file_row_number = true)")
            return
        offsets = _offsets_sql(self.files, self.offsets)
        cur.execute(
            f"CREATE OR REPLACE TEMP VIEW {quote(name)} AS SELECT s.* EXCLUDE (file_row_number, filename), "
            f"o.off + s.file_row_number AS {_ROW} "
            f"FROM read_parquet([{files}], file_row_number = true, filename = true) s "
            f"JOIN {offsets} o ON o.file = s.filename")

    def unregister(self, cur: duckdb.DuckDBPyConnection, name: str) -> None:
        if self.table is not None:
            cur.unregister(name)
        else:
            cur.execute(f"DROP VIEW IF EXISTS {quote(name)}")

    @property
    def columns(self) -> list[str]:
        return [c for c in self.schema if c != _ROW]


# ---- building the query ---------------------------------------------------------------------------
_TIME_TYPES = ("TIMESTAMP", "TIMESTAMP WITH TIME ZONE", "TIMESTAMP_NS", "TIMESTAMP_MS", "TIMESTAMP_S", "DATE")
_KEY_TYPES = {"string": ("VARCHAR",), "int64": ("BIGINT", "INTEGER", "SMALLINT", "TINYINT", "UBIGINT",
                                                 "UINTEGER", "USMALLINT", "UTINYINT")}


def _ttl_of(ttl: timedelta | Mapping[str, timedelta | None] | None, ref: FeatureRef) -> timedelta | None:
    value = ttl.get(ref.name, ttl.get(ref.key)) if isinstance(ttl, Mapping) else ttl
    if value is not None and (not isinstance(value, timedelta) or value < timedelta(0)):
        raise InvalidData(f"ttl for {ref.key} must be a non-negative timedelta; got {value!r}")
    return value


def _spine_keys(spec: FeatureGroupSpec, given: Any, spine_cols: Sequence[str]) -> tuple[str, ...]:
    names = spec.key_names
    if given is None:
        missing = [k for k in names if k not in spine_cols]
        if missing:
            raise SpineError(f"the spine has no column {missing[0]!r} to join {spec.key} on; pass "
                             f"entity_keys={{{spec.name!r}: <spine column>}}")
        return tuple(names)
    if isinstance(given, str):
        given = [given]
    if isinstance(given, Mapping):
        unknown = [k for k in given if k not in names]
        if unknown or set(given) != set(names):
            raise InvalidData(f"entity_keys for {spec.key} must map each of its keys {names} to a spine "
                              f"column; got {dict(given)}")
        cols = [given[k] for k in names]
    else:
        cols = list(given)
        if len(cols) != len(names):
            raise InvalidData(f"{spec.key} has {len(names)} entity key(s) {names}; entity_keys gave {cols}")
    for c in cols:
        if c not in spine_cols:
            raise SpineError(f"entity_keys for {spec.key}: the spine has no column {c!r} "
                             f"(columns: {', '.join(spine_cols)})")
    return tuple(cols)


def plan(store: Catalog, spine: Spine, features: Sequence[str | FeatureRef], *,
         entity_keys: Mapping[str, Any] | None = None, event_time: str = "event_time",
         ttl: timedelta | Mapping[str, timedelta | None] | None = None, known_at: KnownAt = "latest",
         pins: Mapping[str, int] | None = None, prefix: bool = True) -> TrainingSet:
    """Resolve the feature groups and commits and build the query (see :meth:`FeatureStore.training_set`)."""
    if known_at not in ("latest", "spine"):
        raise InvalidData(f"known_at must be 'latest' or 'spine'; got {known_at!r}")
    if not features:
        raise InvalidData("features is empty: name at least one feature group, e.g. ['user_embeddings:1']")
    if isinstance(features, str | FeatureRef):
        features = [features]
    source = _SpineSource(spine, store)
    cols = source.columns
    if event_time not in cols:
        raise SpineError(f"the spine has no event-time column {event_time!r} (columns: {', '.join(cols)}); "
                         "pass event_time=<column>")
    ttype = source.schema[event_time]
    if not ttype.startswith(_TIME_TYPES) and ttype != '"NULL"':
        raise SpineError(f"the spine's {event_time!r} column must be a timestamp or date; it is {ttype}")
    entity_keys = dict(entity_keys or {})
    refs = [FeatureRef.parse(f) for f in features]
    unknown_keys = set(entity_keys) - {r.name for r in refs} - {r.key for r in refs if r.version}
    if unknown_keys:
        raise InvalidData(f"entity_keys names feature group(s) not in features: {', '.join(sorted(unknown_keys))}")
    groups: list[JoinGroup] = []
    used = set(cols)
    pins = dict(pins or {})
    for ref in refs:
        fg = store.feature_group(ref.name, ref.version)
        ref = FeatureRef(ref.name, fg.version, ref.columns)
        spec = fg.spec
        if any(g.key == ref.key for g in groups):
            raise InvalidData(f"{ref.key} is listed twice in features")
        selectable = [f.name for f in spec.features] + [spec.event_time]
        wanted = ref.columns or tuple(f.name for f in spec.features)
        bad = [c for c in wanted if c not in selectable]
        if bad:
            raise InvalidData(f"{spec.key} has no feature {bad[0]!r} (features: {', '.join(selectable)})")
        keys = _spine_keys(spec, entity_keys.get(ref.key, entity_keys.get(ref.name)), cols)
        for k, sk in zip(spec.entity_keys, keys):
            stype = source.schema[sk]
            if stype not in _KEY_TYPES[k.type] and stype != '"NULL"':  # an all-null column matches nothing
                raise SpineError(f"spine column {sk!r} ({stype}) cannot join {spec.key}'s key {k.name!r} "
                                 f"({k.type}): cast it first")
        output = tuple(f"{spec.name}__{c}" if prefix else c for c in wanted)
        clash = [o for o in output if o in used]
        if clash:
            raise InvalidData(f"column {clash[0]!r} from {ref.key} clashes with another column; "
                              "use prefix=True or select other columns")
        used.update(output)
        if ref.key in pins:
            commit, files = fg.commit_files(int(pins[ref.key]))
        elif pins:
            raise InvalidData(f"pins has no commit for {ref.key} (pins: {pins})")
        else:
            commit, files = fg.commit_files(None)
        offsets, disjoint = _file_layout(files, spec.event_time)
        groups.append(JoinGroup(ref.key, spec, commit, tuple(files), offsets, disjoint, keys, tuple(wanted), output,
                             _ttl_of(ttl, ref)))
    extra = set(pins) - {g.key for g in groups}
    if extra:
        raise FeatureGroupNotFound(f"pins name feature group(s) not in features: {', '.join(sorted(extra))}")
    indexes: dict[str, pa.Table] = {}
    unindexed: list[JoinGroup] = []  # their indexes are built once this training set is out
    if store.root.local and store.join_caches:
        for i, g in enumerate(groups):
            table = join_index(store, g)
            if table is not None:
                groups[i] = replace(g, index=f"{{index{i}}}", key32=has_key32(table))
                indexes[f"{{index{i}}}"] = table
            elif g.files:
                unindexed.append(g)
    request = JoinRequest(tuple(groups), event_time, known_at, source.register, indexes)
    sql = store.engine.describe_join(request)
    params = {
        "features": [f"{g.key}:{','.join(g.columns)}" for g in groups],
        "entity_keys": {g.key: list(g.spine_keys) for g in groups},
        "event_time": event_time,
        "ttl": {g.key: (g.ttl.total_seconds() if g.ttl is not None else None) for g in groups},
        "known_at": known_at,
        "prefix": prefix,
    }
    vectors = {}
    for g in groups:
        for c in g.vector_columns:
            vectors[g.output[g.columns.index(c)]] = VectorColumn(
                store, f"{g.spec.name}/v{g.spec.version}", c, g.spec.feature(c).dim or 0, list(g.files),
                np.asarray(g.offsets, np.int64))
    return TrainingSet(store, sql, {g.key: g.commit for g in groups}, params, request, source,
                       [*cols, *(o for g in groups for o in g.output)], vectors, indexes, unindexed)
