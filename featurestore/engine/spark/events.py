"""Spark's event reader: an :class:`~featurestore.engine.events.EventSource` (a Spark DataFrame, Parquet
path(s) or glob, a Delta table's folder (its newest commit, files resolved by delta-rs), an Arrow table or
pandas DataFrame, or Spark SQL as ``query=``) selected before the cutoff, checked, weighed and coded by
Spark, with the semantics of :mod:`featurestore.engine.duckdb_events` (codes from sorted ids, so equal
events give equal codes). The events stay on the executors (:class:`SparkEvents`)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import numpy as np
import pyarrow as pa

from featurestore.conform import to_utc
from featurestore.engine.events import DEFAULT_WEIGHTS, CountedEvents, Events, EventSource
from featurestore.engine.spark.session import quiet, spark_errors
from featurestore.engine.spark.tables import spark_path
from featurestore.errors import EventsError
from featurestore.storage.delta import file_uris, open_table


def source_frame(session: Any, source: EventSource) -> Any:
    """The events of ``source`` as a Spark DataFrame (``query=`` is Spark SQL on this engine)."""
    if source.query is not None:
        return session.sql(source.query)
    data = source.data
    if type(data).__module__.startswith("pyspark.sql") and hasattr(data, "sparkSession"):
        return data
    if isinstance(data, str | os.PathLike):
        path = os.fspath(data)
        if os.path.isdir(os.path.join(path, "_delta_log")):  # a Delta table: its newest commit's files only
            files = file_uris(open_table(os.path.abspath(path)))
            if not files:
                raise EventsError(f"the Delta table {path} has no data files")
            return session.read.parquet(*[spark_path(f) for f in files])
        return session.read.parquet(spark_path(os.path.abspath(path)) if "://" not in path else path)
    if isinstance(data, pa.RecordBatch):
        data = pa.Table.from_batches([data])
    if isinstance(data, pa.Table):
        return session.createDataFrame(data)
    if "pandas" in type(data).__module__:
        try:
            return session.createDataFrame(pa.Table.from_pandas(data, preserve_index=False))
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise EventsError(f"cannot convert the events DataFrame to Arrow: {exc}") from exc
    raise EventsError(f"events must be a Spark or pandas DataFrame, an Arrow table, a Parquet path or a "
                      f"query; got {type(data).__name__}")


def selected(session: Any, source: EventSource, before: datetime | None) -> Any:
    """The columns ``e``, ``i``, ``k``, ``t`` (UTC instant), ``v`` of the events before ``before``,
    after checking the columns exist and ids and times are not null."""
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    c = source.columns
    df = source_frame(session, source)
    types = {f.name: f.dataType for f in df.schema.fields}
    missing = [x for x in (c.entity, c.item, c.time, c.type, c.value) if x and x not in types]
    if missing:
        raise EventsError(f"events from {source.describe()} have no column(s) {', '.join(map(repr, missing))}; "
                          f"columns are {', '.join(types)} (set them with Columns(...) / --columns)")
    tt = types[c.time]
    if isinstance(tt, T.TimestampType):
        t = F.col(c.time)
    elif isinstance(tt, T.TimestampNTZType | T.DateType):  # naive times are UTC
        t = F.from_utc_timestamp(F.col(c.time).cast("timestamp"), F.current_timezone())
    else:
        raise EventsError(f"events column {c.time!r} must hold timestamps on Spark; got {tt.simpleString()} "
                          f"(convert strings with to_timestamp first)")
    ev = df.select(F.col(c.entity).cast("string").alias("e"), F.col(c.item).cast("string").alias("i"),
                   (F.col(c.type).cast("string") if c.type else F.lit(None).cast("string")).alias("k"),
                   t.alias("t"), (F.col(c.value).cast("double") if c.value else F.lit(1.0)).alias("v"))
    # one pass for every null check (as DuckDB's reader: a null time only matters without a cutoff)
    nulls = ev.agg(*[F.sum(F.col(x).isNull().cast("long")).alias(x) for x in ("e", "i", "t")]).collect()[0]
    for role, col in (("e", c.entity), ("i", c.item)):
        if nulls[role]:
            raise EventsError(f"events column {col!r} has {nulls[role]} null id(s)")
    if before is not None:
        ev = ev.where(F.col("t") < F.lit(to_utc(before)).cast("timestamp"))
    elif nulls["t"]:
        raise EventsError(f"events column {c.time!r} has null times")
    return ev


def weighed(session: Any, source: EventSource, ev: Any, weights: Mapping[str, float] | None
            ) -> tuple[Any, dict[str, int]]:
    """``ev`` with column ``w`` (type weight times value), and the events per type."""
    from pyspark.sql import functions as F

    c = source.columns
    if not c.type:
        return ev.withColumn("w", F.col("v").cast("float")), {}
    rows = ev.groupBy("k").count().collect()
    type_counts = {str(r["k"]): int(r["count"]) for r in rows if r["k"] is not None}
    if any(r["k"] is None for r in rows):
        raise EventsError(f"events column {c.type!r} has null event types")
    table = dict(DEFAULT_WEIGHTS if weights is None else weights)
    unknown = sorted(k for k in type_counts if k not in table)
    if unknown:
        raise EventsError(f"unknown event type(s) {', '.join(map(repr, unknown[:10]))} in column {c.type!r}; "
                          f"known: {', '.join(sorted(table))} (pass weights, e.g. --weights {unknown[0]}=1)")
    bad = {k: w for k, w in table.items() if not (np.isfinite(w) and w >= 0)}
    if bad:
        raise EventsError(f"event-type weights must be finite and >= 0; got {bad}")
    wt = session.createDataFrame([(k, float(w)) for k, w in table.items()], "k string, wt double")
    out = ev.join(F.broadcast(wt), on="k", how="inner").withColumn("w", (F.col("wt") * F.col("v")).cast("float"))
    return out, dict(sorted(type_counts.items()))


def codes(ev: Any, column: str) -> Any:
    """Per id of ``column``: its code (rank of the sorted ids, from 0), event count and last time (us)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    per = ev.groupBy(column).agg(F.count("*").alias("count"), F.unix_micros(F.max("t")).alias("last"))
    return per.withColumn("code", (F.row_number().over(Window.orderBy(column)) - 1).cast("int"))


class SparkEvents(CountedEvents):
    """Events kept by Spark: a DataFrame of coded events (``e`` entity id, ``i`` item code, ``w``
    weight, ``t`` time in us), persisted on the executors (memory, then disk) until :meth:`close`;
    per-item facts in Python."""

    def __init__(self, frame: Any, items: pa.Table, *, n_events: int, n_entities: int, newest: int | None,
                 before: datetime | None, type_counts: dict[str, int]):
        self.frame = frame
        self.item_ids = np.asarray(items["i"].to_pylist(), dtype=object)
        self.item_count = _np(items["count"], np.int64)
        self.item_last = _np(items["last"], np.int64)
        self.before, self.type_counts = before, type_counts
        self._n, self._n_entities, self._newest = n_events, n_entities, newest

    def load(self) -> Events:
        """Every event in this process (memory grows with the events: for embedders that need the
        sequences themselves)."""
        from pyspark.sql import functions as F

        with quiet(), spark_errors("bringing the events to the driver", EventsError):
            ents = self.frame.groupBy("e").agg(F.count("*").alias("count"), F.max("t").alias("last")) \
                .orderBy("e").toArrow()
            codes = self.frame.sparkSession.createDataFrame(ents.select(["e"]).append_column(
                "ec", pa.array(np.arange(ents.num_rows, dtype=np.int32))))
            coded = self.frame.join(F.broadcast(codes) if ents.num_rows < 1 << 20 else codes, "e") \
                .select("ec", "i", "w", "t").orderBy("ec", "t", "i", "w").toArrow()
        return Events(
            entity=_np(coded["ec"], np.int32), item=_np(coded["i"], np.int32), weight=_np(coded["w"], np.float32),
            time=_np(coded["t"], np.int64), entity_ids=np.asarray(ents["e"].to_pylist(), dtype=object),
            item_ids=self.item_ids, item_count=self.item_count, item_last=self.item_last,
            entity_count=_np(ents["count"], np.int64), entity_last=_np(ents["last"], np.int64),
            before=self.before, type_counts=self.type_counts)

    def close(self) -> None:
        with spark_errors("releasing the events"):
            self.frame.unpersist()


def read_events(session: Any, source: EventSource, before: datetime | None, *,
                weights: Mapping[str, float] | None = None) -> SparkEvents:
    """Events with ``time < before``, checked, weighed and with item codes (from sorted ids), kept by
    Spark (:class:`SparkEvents`); only the per-item facts come to this process."""
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    with quiet(), spark_errors(f"cannot read events from {source.describe()}", EventsError):
        ev, type_counts = weighed(session, source, selected(session, source, before), weights)
        ev = ev.select("e", "i", "w", "t").persist(StorageLevel.MEMORY_AND_DISK)  # read once, used twice
        items = codes(ev, "i").orderBy("code").toArrow()
        i_codes = session.createDataFrame(items.select(["i", "code"]))
        coded = ev.join(F.broadcast(i_codes), "i") \
            .select("e", F.col("code").alias("i"), "w", F.unix_micros("t").alias("t")) \
            .persist(StorageLevel.MEMORY_AND_DISK)
        facts = coded.agg(F.count("*").alias("n"), F.countDistinct("e").alias("ents"), F.max("t").alias("newest"),
                          F.sum((F.isnan("w") | (F.col("w") < 0) | (F.abs("w") == float("inf")))
                                .cast("long")).alias("bad")).collect()[0]
        ev.unpersist()
    if facts["bad"]:
        coded.unpersist()
        raise EventsError(f"event values in column {source.columns.value!r} must be finite and >= 0")
    return SparkEvents(coded, items.select(["i", "count", "last"]), n_events=int(facts["n"]),
                       n_entities=int(facts["ents"]), newest=None if facts["newest"] is None else int(facts["newest"]),
                       before=to_utc(before) if before is not None else None, type_counts=type_counts)


def _np(col: pa.ChunkedArray, dtype: Any) -> np.ndarray:
    return np.ascontiguousarray(col.to_numpy(), dtype=dtype)
