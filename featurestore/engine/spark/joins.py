"""Point-in-time joins on Spark, with the semantics of :mod:`featurestore.engine.pit_sql` (the DuckDB
ASOF joins): per group, the row of the spine row's key with the greatest join time ``<=`` the spine's
time, within the ttl; ``known_at="latest"`` takes the newest commit's row per (key, event time),
``known_at="spine"`` only rows committed by then, and what serving returned at that instant.

Spark has no as-of join. Per group, the spine rows and the group's rows are unioned, ordered by
(keys, time) with a group row before a spine row at the same time (``<=``), and each spine row takes
``last(row, ignorenulls=True)`` over the rows before it: one sort per group, no row-by-row lookups.
The groups are chained (each pass carries the columns found so far), so a spine row is never joined
back. Vectors come out as row positions (:func:`join_frame` with ``vectors="position"``, the engine
seam's contract) or as the vectors themselves (``"value"``, for :meth:`TrainingSet.to_spark`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import timedelta
from typing import Any, Literal

from featurestore.engine.pit_sql import _ROW, _TIME, JoinGroup, KnownAt
from featurestore.engine.spark.objects import ObjectFiles
from featurestore.engine.spark.tables import POSITION, file_name, read_files, spark_path
from featurestore.storage.duck import INGESTED_AT

Vectors = Literal["position", "value"]
_SPINE = "__fs_is_spine"  # 1 for spine rows, 0 for feature rows (feature rows sort first at equal times)


def _group_rows(session: Any, i: int, g: JoinGroup, known_at: KnownAt, vectors: Vectors,
                objects: ObjectFiles | None) -> Any:
    """One group's rows as ``__k<i>_<j>`` keys, ``__t`` join time and ``__g<i>`` payload struct
    (event time, selected values), unique per (key, join time)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    spec = g.spec
    vector_cols = set(g.vector_columns)
    df = read_files(session, spec, g.files, offsets=g.offsets[:-1] if vectors == "position" else None,
                    objects=objects)
    keys = [F.col(k).alias(f"__k{j}") for j, k in enumerate(spec.key_names)]
    values = []
    for j, c in enumerate(g.columns):
        if c in vector_cols and vectors == "position":
            values.append(F.col(POSITION).alias(f"__c{j}"))
        else:
            values.append(F.col(c).alias(f"__c{j}"))
    df = df.where(F.col(spec.event_time).isNotNull()).select(
        *keys, F.col(spec.event_time).alias("__e"), F.col(INGESTED_AT).alias("__i"), *values)
    kcols = [f"__k{j}" for j in range(len(spec.key_names))]
    if known_at == "latest":
        if not g.disjoint:
            w = Window.partitionBy(*kcols, "__e").orderBy(F.col("__i").desc_nulls_last())
            df = df.withColumn("__n", F.row_number().over(w)).where("__n = 1").drop("__n")
        df = df.withColumn("__t", F.col("__e"))
    else:
        df = df.where(F.col("__i").isNotNull()).withColumn("__t", F.greatest("__e", "__i"))
        ei = F.struct(F.col("__e").alias("e"), F.col("__i").alias("i"))
        run = Window.partitionBy(*kcols).orderBy("__t", "__e", "__i").rowsBetween(Window.unboundedPreceding, -1)
        df = df.withColumn("__m", F.max(ei).over(run)).where(F.col("__m").isNull() | (ei > F.col("__m")))
        one = Window.partitionBy(*kcols, "__t").orderBy(F.col("__e").desc(), F.col("__i").desc())
        df = df.withColumn("__n", F.row_number().over(one)).where("__n = 1").drop("__n", "__m")
    payload = F.struct(F.col("__e").alias("e"), *[F.col(f"__c{j}").alias(f"c{j}") for j in range(len(g.columns))])
    return df.select(*kcols, "__t", payload.alias(f"__g{i}"))


def join_frame(session: Any, spine: Any, groups: Sequence[JoinGroup], known_at: KnownAt,
               vectors: Vectors, objects: ObjectFiles | None = None) -> Any:
    """``spine`` (its columns, ``__fs_row`` and ``__fs_time``) with each group's columns appended
    (named as the groups' ``output``), one row per spine row, in no particular order (``objects``: the
    object stores the groups' files may be on)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    result = spine
    for i, g in enumerate(groups):
        rows = _group_rows(session, i, g, known_at, vectors, objects)
        kcols = [f"__k{j}" for j in range(len(g.spec.key_names))]
        left = result.select("*", *[F.col(sk).alias(k) for sk, k in zip(g.spine_keys, kcols)],
                             F.col(_TIME).alias("__t"), F.lit(1).alias(_SPINE))
        right = rows.withColumn(_SPINE, F.lit(0))
        both = left.unionByName(right, allowMissingColumns=True)
        before = Window.partitionBy(*kcols).orderBy(F.col("__t").asc_nulls_first(), F.col(_SPINE)) \
            .rowsBetween(Window.unboundedPreceding, Window.currentRow)
        found = F.last(F.col(f"__g{i}"), ignorenulls=True).over(before)
        joined = both.withColumn(f"__g{i}", found).where(F.col(_SPINE) == 1)
        hit = F.col(f"__g{i}")
        if g.ttl is not None:
            edge = F.col(_TIME) - F.expr(f"INTERVAL {int(g.ttl / timedelta(microseconds=1))} MICROSECONDS")
            hit = F.when(hit.getField("e") >= edge, hit)
        outs = [hit.getField(f"c{j}").alias(out) for j, out in enumerate(g.output)]
        result = joined.select(*[c for c in result.columns], *outs)
    return result


def spine_frame(session: Any, *, table: Any = None, files: Sequence[str] | None = None,
                offsets: Sequence[int] | None = None, frame: Any = None, event_time: str | None = None) -> Any:
    """The spine as a DataFrame with its row ordinal ``__fs_row`` (and ``__fs_time`` when ``event_time``
    is given): an Arrow table (which has the ordinal), Parquet files (ordinal: file offset + row in
    file) or a DataFrame already carrying it."""
    from pyspark.sql import functions as F

    if frame is not None:
        df = frame
    elif table is not None:
        df = session.createDataFrame(table)
    else:
        assert files is not None and offsets is not None
        paths = [os.path.abspath(f) for f in files]
        starts = F.create_map(*[x for f, o in zip(paths, offsets) for x in (F.lit(f), F.lit(int(o)))])
        df = session.read.parquet(*[spark_path(f) for f in paths])
        df = df.withColumn(_ROW, F.element_at(starts, file_name(full=True)) + F.col("_metadata.row_index"))
    if event_time is not None:
        df = df.withColumn(_TIME, F.col(event_time).cast("timestamp"))
    return df
