"""The Spark engine: the engine seam's jobs on a SparkSession (local mode or a cluster).

Tables are read as Parquet files resolved by delta-rs (no delta-spark jar), training-set joins run as
one sort per feature group (:mod:`.joins`), inserts of Spark DataFrames are checked and written by
Spark and committed by delta-rs (:mod:`.tables`, :class:`featurestore.storage.staging.AdoptedFiles`),
and validation statistics are distributed aggregates (:mod:`.stats`). Results that come back to this
process are written by Spark as sorted Parquet into a scratch folder and streamed from there, so the
driver never holds a whole result. Events stay on the cluster (:class:`~.events.SparkEvents`): counting is
a distributed aggregation and entity sums run on the executors (:mod:`.counting`).

Example::

    from featurestore.engine.spark import SparkEngine, SparkSettings
    engine = SparkEngine(settings=SparkSettings.parse("local[2]", ["spark.driver.memory=4g"]))
    store = FeatureStore("./featurestore_data", engine=engine)     # or per call: engine="spark"
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from featurestore.engine.base import (
    Cooccurrence,
    Engine,
    EntitySums,
    FrameEngine,
    JoinRequest,
    Scan,
    StagedFrame,
    SumsBatch,
)
from featurestore.engine.counting import MAX_PAIRS
from featurestore.engine.events import EventSource, EventTable
from featurestore.engine.pit_sql import _ROW, JoinGroup
from featurestore.engine.spark import counting as spark_counting
from featurestore.engine.spark import events as spark_events
from featurestore.engine.spark import joins, stats, tables
from featurestore.engine.spark.objects import ObjectFiles, sweep, write_objects
from featurestore.engine.spark.session import SparkSettings, prepare, quiet, spark_errors, start_session
from featurestore.errors import EngineError, QueryError, StorageError
from featurestore.schema import TIMESTAMP, FeatureGroupSpec
from featurestore.storage.duck import INGESTED_AT
from featurestore.storage.objectstore import is_object_store

if TYPE_CHECKING:
    import scipy.sparse as sp

_SPARK_TO_SQL = {"string": "VARCHAR", "bigint": "BIGINT", "int": "INTEGER", "smallint": "SMALLINT",
                 "tinyint": "TINYINT", "timestamp": "TIMESTAMP WITH TIME ZONE", "timestamp_ntz": "TIMESTAMP",
                 "date": "DATE", "double": "DOUBLE", "float": "FLOAT", "boolean": "BOOLEAN", "void": '"NULL"'}


#: instants as the DuckDB engine's joins return them (DuckDB names UTC ``Etc/UTC``): equal rows, equal types
_DUCK_UTC = pa.timestamp("us", tz="Etc/UTC")


class _Relations:
    """What a spine's ``register(connection, name)`` is handed on Spark: it keeps the spine as a
    DataFrame instead of a DuckDB relation (see :meth:`featurestore.training.spine.SpineSource.register`)."""

    def __init__(self, session: Any):
        self.session = session
        self.frames: dict[str, Any] = {}

    def register_spine(self, name: str, *, table: pa.Table | None = None, files: Sequence[str] | None = None,
                       offsets: Sequence[int] | None = None, frame: Any = None) -> None:
        with quiet(), spark_errors("reading the spine"):
            self.frames[name] = joins.spine_frame(self.session, table=table, files=files, offsets=offsets,
                                                  frame=frame)


class SparkEngine(Engine, FrameEngine):
    """Bulk scans on Spark. Give an existing ``session``, or ``settings`` to start one (default: the
    active session of a ``spark-submit`` job, else ``local[*]``); ``scratch`` is where results coming
    back to this process are staged (default: the system temp folder; on a cluster, a folder the
    driver and the executors share). ``max_pairs``: past this many distinct item pairs a co-occurrence
    count brings only each item's strongest pairs to the driver, as on the DuckDB engine (None: all)."""

    name = "spark"
    in_process = False
    reads_objects = True

    def __init__(self, session: Any = None, *, settings: SparkSettings | None = None, scratch: str | None = None,
                 max_pairs: int | None = MAX_PAIRS):
        if max_pairs is not None and max_pairs < 1:
            raise EngineError(f"max_pairs must be >= 1 (or None: no bound); got {max_pairs}")
        self.max_pairs = max_pairs
        self._session = prepare(session) if session is not None else None
        self._owned = False
        self.settings = settings or SparkSettings()
        self.scratch = scratch or tempfile.gettempdir()
        self.objects = ObjectFiles()  # tables on object storage this engine was told it may read

    def __repr__(self) -> str:
        return f"SparkEngine(master={self.settings.master or 'default'!r})"

    @property
    def session(self) -> Any:
        """The SparkSession (started on first use when none was given)."""
        if self._session is None:
            self._session = start_session(self.settings)
            self._owned = True
        return self._session

    def use_objects(self, table_uri: str, options: Mapping[str, str], checksums: Mapping[str, str]) -> None:
        self.objects.add(table_uri, options, checksums)

    # ---- pipelines ----------------------------------------------------------------------------------
    def read_events(self, source: EventSource, *, before: datetime | None = None,
                    weights: Mapping[str, float] | None = None) -> EventTable:
        return spark_events.read_events(self.session, source, before, weights=weights)

    def cooccurrence(self, events: EventTable, request: Cooccurrence) -> sp.csr_matrix:
        return spark_counting.cooccurrence(events, request, self.max_pairs)

    def entity_sums(self, events: EventTable, request: EntitySums) -> Iterator[SumsBatch]:
        return spark_counting.entity_sums(events, request, lambda frame: self.frame_batches(frame, sort=["e"]))

    def entity_rows_frame(self, events: EventTable, request: EntitySums,
                          rows: Callable[[pa.RecordBatch], pa.RecordBatch], schema: pa.Schema
                          ) -> tuple[Any, int] | None:
        if not isinstance(events, spark_events.SparkEvents):
            return None
        return spark_counting.rows_frame(events, request, rows, schema)

    # ---- tables -------------------------------------------------------------------------------------
    def scan(self, request: Scan) -> pa.Table:
        from pyspark.sql import functions as F

        spec = request.spec
        columns = list(request.columns or spec.columns)
        if not request.files:
            return pa.table({c: pa.array([], pa.null()) for c in columns})
        locate = request.locate or request.rows is not None
        df = tables.read_files(self.session, spec, request.files, locate=locate, objects=self.objects)
        if request.keys is not None:
            with quiet():
                wanted = self.session.createDataFrame(request.keys.select(spec.key_names))
            df = df.join(wanted, on=list(spec.key_names), how="left_semi")
        if request.rows is not None:
            cond = F.lit(False)
            for f, rows in request.rows.items():
                if len(rows):
                    cond = cond | ((F.col("_file") == int(f)) & F.col("_row").isin([int(r) for r in np.unique(rows)]))
            df = df.where(cond)
        out = df.select(*columns, *(["_file", "_row"] if locate else []))
        with quiet(), spark_errors(f"reading {len(request.files)} data file(s) of {spec.key}", StorageError):
            table = out.toArrow()
        vectors = {f.name: f.arrow_type for f in spec.vector_features}
        for c in columns:
            if c in vectors:
                i = table.schema.get_field_index(c)
                table = table.set_column(i, pa.field(c, vectors[c]), table[c].cast(vectors[c]))
        return _utc(table)

    def latest(self, table: pa.Table, key_names: Sequence[str], event_time: str, tiebreak: str) -> pa.Table:
        from pyspark.sql import Window
        from pyspark.sql import functions as F

        w = Window.partitionBy(*key_names).orderBy(F.col(event_time).desc(), F.col(tiebreak).desc())
        with quiet(), spark_errors("latest rows per key"):
            df = self.session.createDataFrame(table)
            out = df.withColumn("__n", F.row_number().over(w)).where("__n = 1").drop("__n", tiebreak) \
                .orderBy(*key_names).toArrow()
        return _utc(out).cast(table.schema.remove(table.schema.get_field_index(tiebreak)))

    # ---- training sets ------------------------------------------------------------------------------
    def relation_schema(self, register: Callable[[Any, str], None]) -> dict[str, str]:
        relations = _Relations(self.session)
        register(relations, "__fs_probe")
        df = relations.frames["__fs_probe"]
        return {f.name: _SPARK_TO_SQL.get(f.dataType.simpleString(), f.dataType.simpleString().upper())
                for f in df.schema.fields}

    def join_cache_rows(self, group: JoinGroup) -> pa.Table:
        from pyspark.sql import functions as F

        spec = group.spec
        df = tables.read_files(self.session, spec, group.files, offsets=group.offsets[:-1], objects=self.objects)
        scalars = [f.name for f in spec.features if not f.is_vector]
        cols = [*(F.col(k).alias(f"__k0_{j}") for j, k in enumerate(spec.key_names)),
                F.col(spec.event_time).alias("__e0"), F.col(INGESTED_AT).alias("__i0"),
                *(F.col(c).alias(f"__c0_{j}") for j, c in enumerate(scalars))]
        if spec.vector_features:
            cols.append(F.col(tables.POSITION).alias("__p0"))
        order = [*(f"__k0_{j}" for j in range(len(spec.key_names))), "__e0"]
        out = df.where(F.col(spec.event_time).isNotNull()).select(*cols)
        return _utc(self.frame_batches(out, sort=order).read_all())

    def describe_join(self, request: JoinRequest) -> str:
        parts = []
        for i, g in enumerate(request.groups):
            ttl = f", ttl {g.ttl}" if g.ttl is not None else ""
            parts.append(f"  group {i}: {g.key} commit {g.commit} ({len(g.files)} file(s)) on spine "
                         f"{', '.join(g.spine_keys)}{ttl}: union with the spine, sort by (keys, time), "
                         f"last(row, ignorenulls) per spine row")
        return (f"Spark point-in-time join (known_at={request.known_at!r}, spine time {request.event_time!r}):\n"
                + "\n".join(parts))

    def _joined(self, request: JoinRequest, vectors: joins.Vectors) -> Any:
        relations = _Relations(self.session)
        request.register_spine(relations, "__fs_spine")
        spine = relations.frames["__fs_spine"]
        spine = spine.withColumn(joins._TIME, spine[request.event_time].cast("timestamp"))
        with quiet(), spark_errors(f"training-set join ({_groups(request)})"):
            return joins.join_frame(self.session, spine, request.groups, request.known_at, vectors, self.objects)

    def point_in_time_join(self, request: JoinRequest) -> pa.RecordBatchReader:
        outputs = [o for g in request.groups for o in g.output]
        df = self._joined(request, "position").select(_ROW, *outputs)
        return self.frame_batches(df, _ROW, schema=_output_schema(request))

    def training_frame(self, request: JoinRequest) -> Any:
        return self._joined(request, "value").drop(joins._TIME, _ROW)

    # ---- frames -------------------------------------------------------------------------------------
    def is_frame(self, data: Any) -> bool:
        return type(data).__module__.startswith("pyspark.sql") and hasattr(data, "sparkSession")

    def stage_frame(self, spec: FeatureGroupSpec, data: Any, *, cutoff: datetime | None, folder: str,
                    ingested_at: datetime) -> StagedFrame:
        from pyspark.sql import functions as F

        with quiet():
            df = tables.cast_frame(spec, data, cutoff=cutoff)
            df = df.withColumn(INGESTED_AT, F.lit(ingested_at).cast("timestamp"))
            if is_object_store(folder):
                return self._stage_objects(spec, df, folder)
            # written first, then checked as read back: the frame's lineage (a whole aggregation, for a
            # pipeline's entity rows) runs once; refused rows' files go with the staging folder
            files = tables.write_files(df, folder, f"a Spark batch for {spec.key}")
            written = tables.read_files(self.session, spec, files)
            rows = tables.check_values(spec, written)
        return StagedFrame(written, tuple(files), int(rows))

    def _stage_objects(self, spec: FeatureGroupSpec, df: Any, table_uri: str) -> StagedFrame:
        """:meth:`stage_frame` on object storage: the executors write the objects under the table's
        prefix, then the rows are checked as read back; a failure deletes what this write left there."""
        table, options, _ = self.objects.of(f"{table_uri.rstrip('/')}/")
        run = uuid.uuid4().hex
        try:
            with spark_errors(f"writing a Spark batch for {spec.key} to {table}", StorageError):
                written = write_objects(df, table, options, run)
            sweep(table, options, run, keep=[w.name for w in written])  # a retried task's first attempt
            self.objects.add(table, options, {w.name: w.checksum for w in written})
            files = [f"{table}/{w.name}" for w in written]
            back = tables.read_files(self.session, spec, files, objects=self.objects)
            rows = tables.check_values(spec, back)
        except BaseException:
            with contextlib.suppress(StorageError):
                sweep(table, options, run)
            raise
        return StagedFrame(back, tuple(files), int(rows), tuple(written))

    def number_rows(self, frame: Any, column: str) -> Any:
        from pyspark.sql import functions as F

        with quiet(), spark_errors("numbering the spine's rows"):
            return frame.withColumn(column, F.monotonically_increasing_id()).localCheckpoint(eager=True)

    def read_frame(self, spec: FeatureGroupSpec, files: Sequence[str]) -> Any:
        return tables.read_files(self.session, spec, files, objects=self.objects)

    def frame_stats(self) -> Any:
        return stats

    def frame_batches(self, frame: Any, order: str | None = None, *, schema: pa.Schema | None = None,
                      sort: Sequence[str] | None = None) -> pa.RecordBatchReader:
        """Write ``frame`` sorted (by ``order``, dropped afterwards, or by the ``sort`` columns) as
        Parquet into the scratch folder and stream it back; the folder is removed once read."""
        folder = os.path.join(self.scratch, f"fs-spark-{os.getpid()}-{uuid.uuid4().hex[:12]}")
        by = [order] if order else list(sort or [])
        out = frame.orderBy(*by) if by else frame
        if order:
            out = out.drop(order)
        try:
            with quiet(), spark_errors("collecting a Spark result"):
                files = tables.write_files(out, folder, "a Spark result")
                empty = out.limit(0).toArrow().schema
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        return _stream(files, folder, schema or _utc_schema(empty))

    def close(self) -> None:
        if self._owned and self._session is not None:
            with spark_errors("stopping Spark"):
                self._session.stop()
            self._session = None


def _stream(files: list[str], folder: str, schema: pa.Schema) -> pa.RecordBatchReader:
    import pyarrow.parquet as pq

    def batches() -> Iterator[pa.RecordBatch]:
        try:
            for f in files:
                for batch in pq.ParquetFile(f).iter_batches(1 << 16):
                    yield batch.cast(schema)
        except (OSError, pa.ArrowException) as exc:
            raise QueryError(f"reading a Spark result from {folder}: {exc}") from exc
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    return pa.RecordBatchReader.from_batches(schema, batches())


def _output_schema(request: JoinRequest) -> pa.Schema:
    """The types the DuckDB engine's join returns (vectors as int64 row positions)."""
    fields = []
    for g in request.groups:
        vectors = set(g.vector_columns)
        for col, out in zip(g.columns, g.output):
            if col in vectors:
                fields.append(pa.field(out, pa.int64()))
            else:
                t = TIMESTAMP if col == g.spec.event_time else g.spec.feature(col).arrow_type
                fields.append(pa.field(out, _DUCK_UTC if t == TIMESTAMP else t))
    return pa.schema(fields)


def _utc_schema(schema: pa.Schema) -> pa.Schema:
    return pa.schema([pa.field(f.name, TIMESTAMP) if pa.types.is_timestamp(f.type) and f.type.tz else f
                      for f in schema])


def _utc(table: pa.Table) -> pa.Table:
    """Instants in UTC (Spark hands them over in its session time zone)."""
    return table.cast(_utc_schema(table.schema))


def _groups(request: JoinRequest) -> str:
    return ", ".join(f"{g.key} commit {g.commit}" for g in request.groups) or "the spine"
