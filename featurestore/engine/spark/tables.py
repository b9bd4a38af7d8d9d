"""Feature-group tables on Spark without delta-spark: delta-rs resolves a commit's data files, Spark
reads and writes plain Parquet, and :mod:`featurestore.storage.staging` commits Spark's files with
delta-rs as one ordinary Delta commit (see docs/scale-out.md for the interop with delta-spark).

:func:`read_files` reads a commit's files (optionally with each row's global position, as the DuckDB
engine's row positions), :func:`cast_frame` and :func:`check_values` check and cast a Spark DataFrame to
a spec as :func:`featurestore.conform.conform` does a batch (the values as distributed aggregates, on the
files as written, so the frame's lineage runs once), and :func:`write_files` writes one into a staging
folder.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from featurestore.conform import to_utc
from featurestore.engine.spark.objects import FILE, POSITION, ROW, ObjectFiles, read_objects
from featurestore.engine.spark.session import quiet, spark_errors
from featurestore.errors import BadVector, DuplicateKey, NullKey, SchemaMismatch, StorageError
from featurestore.schema import FeatureGroupSpec
from featurestore.storage.duck import INGESTED_AT
from featurestore.storage.objectstore import is_object_store

_SHOW = 5


def spark_type(type_name: str, dim: int | None = None) -> Any:
    """The Spark SQL type of a spec type (vectors: ``array<float>``)."""
    from pyspark.sql import types as T

    if type_name == "vector":
        return T.ArrayType(T.FloatType(), True)
    return {"bool": T.BooleanType(), "int32": T.IntegerType(), "int64": T.LongType(),
            "float32": T.FloatType(), "float64": T.DoubleType(), "string": T.StringType(),
            "timestamp": T.TimestampType()}[type_name]


def storage_struct(spec: FeatureGroupSpec, *, ingested: bool = True) -> Any:
    """The Spark schema of the table's files: the spec's columns (plus ``_ingested_at``)."""
    from pyspark.sql import types as T

    fields = [T.StructField(k.name, spark_type(k.type), True) for k in spec.entity_keys]
    fields.append(T.StructField(spec.event_time, T.TimestampType(), True))
    fields += [T.StructField(f.name, spark_type(f.type), True) for f in spec.features]
    if ingested:
        fields.append(T.StructField(INGESTED_AT, T.TimestampType(), True))
    return T.StructType(fields)


def read_files(session: Any, spec: FeatureGroupSpec, files: Sequence[str], *,
               offsets: Sequence[int] | None = None, columns: Sequence[str] | None = None,
               locate: bool = False, objects: ObjectFiles | None = None) -> Any:
    """A DataFrame of the rows of ``files`` (a commit's, as delta-rs lists them). With ``offsets`` (each
    file's first global row position), each row's position is added as ``__fs_pos``; with ``locate``,
    its file (index in ``files``) and row within it as ``_file`` and ``_row``. Objects on object storage
    (``s3://``) are read on the executors (:mod:`featurestore.engine.spark.objects`; ``objects``: the
    stores' settings and checksums), other paths by Spark's Parquet reader."""
    from pyspark.sql import functions as F

    schema = storage_struct(spec)
    with quiet(), spark_errors(f"reading {len(files)} data file(s) of {spec.key}", StorageError):
        if files and is_object_store(files[0]):
            if objects is None:
                raise StorageError(f"{spec.key}: this Spark job cannot read {files[0]} (no object-store settings)")
            return read_objects(session, schema, files, objects, offsets=offsets, locate=locate, columns=columns)
        if not files:
            df = session.createDataFrame([], schema)
            if offsets is not None:
                df = df.withColumn(POSITION, F.lit(None).cast("long"))
            if locate:
                df = df.withColumn(FILE, F.lit(None).cast("long")).withColumn(ROW, F.lit(None).cast("long"))
        else:
            df = session.read.schema(schema).parquet(*[spark_path(f) for f in files])
            if offsets is not None:
                starts = F.create_map(*[x for f, o in zip(files, offsets) for x in (F.lit(os.path.basename(f)),
                                                                                     F.lit(int(o)))])
                df = df.withColumn(POSITION, F.element_at(starts, file_name()) + F.col("_metadata.row_index"))
            if locate:
                index = F.create_map(*[x for i, f in enumerate(files) for x in (F.lit(os.path.basename(f)), F.lit(i))])
                df = df.withColumn(FILE, F.element_at(index, file_name()).cast("long")) \
                    .withColumn(ROW, F.col("_metadata.row_index"))
        if columns is not None:
            df = df.select(*columns, *([POSITION] if offsets is not None else []), *([FILE, ROW] if locate else []))
        return df


def spark_path(path: str) -> str:
    """A path Spark's Hadoop file systems read: local paths as ``file:`` URIs, other URIs as given."""
    return path if "://" in path else f"file://{path}"


def file_name(*, full: bool = False) -> Any:
    """The file a row was read from (Spark's ``_metadata.file_path``, URL-decoded): its base name, or
    (``full``) its local path."""
    from pyspark.sql import functions as F

    path = F.url_decode(F.regexp_replace(F.col("_metadata.file_path"), "^file:(//)?", ""))
    return path if full else F.element_at(F.split(path, "/"), -1)


def cast_frame(spec: FeatureGroupSpec, df: Any, *, cutoff: datetime | None = None) -> Any:
    """``df``'s columns checked against ``spec`` and cast to its storage schema (no pass over the rows:
    their values are :func:`check_values`' job)."""
    from pyspark.sql import functions as F

    names = list(df.columns)
    dup = sorted({c for c in names if names.count(c) > 1})
    if dup:
        raise SchemaMismatch(f"column(s) given twice: {', '.join(dup)}")
    if spec.event_time not in names and cutoff is not None:
        df = df.withColumn(spec.event_time, F.lit(to_utc(cutoff)).cast("timestamp"))
    missing = [c for c in spec.columns if c not in df.columns]
    if missing:
        hint = " (or pass cutoff= to stamp every row)" if missing == [spec.event_time] else ""
        raise SchemaMismatch(f"{spec.key}: missing column(s) {', '.join(missing)}{hint}")
    extra = [c for c in df.columns if c not in spec.columns]
    if extra:
        raise SchemaMismatch(f"{spec.key}: unexpected column(s) {', '.join(extra)}; the spec has "
                             f"{', '.join(spec.columns)}")
    return df.select(*[_cast(df, spec, c) for c in spec.columns])


def _cast(df: Any, spec: FeatureGroupSpec, name: str) -> Any:
    """Column ``name`` cast to its spec type where that loses nothing (as conform's rules)."""
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    given = df.schema[name].dataType
    key = next((k for k in spec.entity_keys if k.name == name), None)
    type_name = key.type if key else "timestamp" if name == spec.event_time else spec.feature(name).type
    want = spark_type(type_name)
    col = F.col(name)
    if isinstance(given, T.TimestampNTZType):
        raise SchemaMismatch(f"column {name!r} is a TIMESTAMP_NTZ (no time zone): cast it to TIMESTAMP "
                             f"(an instant) first", column=name)
    if type_name == "vector":
        if not (isinstance(given, T.ArrayType) and isinstance(given.elementType, T.FloatType | T.DoubleType)):
            raise SchemaMismatch(f"column {name!r} must hold vectors (arrays of floats); got "
                                 f"{given.simpleString()}", column=name)
        return col.cast(want).alias(name)
    text = isinstance(given, T.StringType)
    if (type_name == "string" and not (text or isinstance(given, T.IntegralType))) or \
            (type_name != "string" and text) or \
            (type_name in ("int32", "int64") and not isinstance(given, T.IntegralType)):
        raise SchemaMismatch(f"column {name!r} must hold {type_name}; got {given.simpleString()}", column=name)
    if type_name == "timestamp" and not isinstance(given, T.TimestampType | T.DateType):
        raise SchemaMismatch(f"column {name!r} must hold timestamps; got {given.simpleString()}", column=name)
    return col.cast(want).alias(name)


def check_values(spec: FeatureGroupSpec, df: Any) -> int:
    """Null keys, bad vectors (null, wrong dimension, NaN/inf) and duplicate (keys, event time): each a
    count in one aggregate pass, plus one grouped pass for duplicates; an InvalidData naming the first
    problem, else the number of rows."""
    from pyspark.sql import functions as F

    checks: dict[str, Any] = {"rows": F.count(F.lit(1))}
    for k in [*spec.key_names, spec.event_time]:
        checks[f"null:{k}"] = F.sum(F.col(k).isNull().cast("long"))
    for f in spec.vector_features:
        v = F.col(f.name)
        checks[f"nullvec:{f.name}"] = F.sum(v.isNull().cast("long"))
        checks[f"dim:{f.name}"] = F.sum((F.size(v) != f.dim).cast("long"))
        bad = F.exists(v, lambda x: x.isNull() | F.isnan(x) | (F.abs(x) == float("inf")))
        checks[f"finite:{f.name}"] = F.sum(bad.cast("long"))
    with quiet(), spark_errors(f"checking a Spark batch for {spec.key}"):
        row = df.agg(*[e.alias(n.replace(":", "__")) for n, e in checks.items()]).collect()[0]
    counts = {n: int(row[n.replace(":", "__")] or 0) for n in checks}
    for k in [*spec.key_names, spec.event_time]:
        if counts[f"null:{k}"]:
            what = "key column" if k != spec.event_time else "event time"
            raise NullKey(f"{what} {k!r}: {counts[f'null:{k}']} null(s)", column=k)
    for f in spec.vector_features:
        if counts[f"nullvec:{f.name}"]:
            raise BadVector(f"column {f.name!r}: {counts[f'nullvec:{f.name}']} null vector(s)", column=f.name)
        if counts[f"dim:{f.name}"]:
            raise BadVector(f"column {f.name!r}: {counts[f'dim:{f.name}']} vector(s) do not have dimension "
                            f"{f.dim}", column=f.name)
        if counts[f"finite:{f.name}"]:
            raise BadVector(f"column {f.name!r}: {counts[f'finite:{f.name}']} vector(s) hold NaN or infinity "
                            f"(or null elements)", column=f.name)
    cols = [*spec.key_names, spec.event_time]
    with quiet(), spark_errors(f"checking a Spark batch for {spec.key}"):
        dups = df.groupBy(*cols).count().where("count > 1")
        first = dups.limit(1).collect()
        if first:
            n_keys = dups.count()
            example = {c: first[0][c] for c in cols}
            raise DuplicateKey(f"{spec.key}: {n_keys} key(s) appear more than once for one {spec.event_time}, "
                               f"e.g. {example}", column=",".join(cols))
    return counts["rows"]


def write_files(df: Any, folder: str, what: str) -> list[str]:
    """Write ``df`` as snappy Parquet files into ``folder`` (which must not exist); their paths."""
    with quiet(), spark_errors(f"writing {what}", StorageError):
        df.write.mode("errorifexists").option("compression", "snappy").parquet(spark_path(folder))
    try:
        names = sorted(n for n in os.listdir(folder) if n.endswith(".parquet"))
    except OSError as exc:
        raise StorageError(f"writing {what}: Spark's output folder {folder} cannot be listed: {exc}") from exc
    return [os.path.join(folder, n) for n in names]
