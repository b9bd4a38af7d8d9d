"""Validation statistics of a Spark DataFrame as distributed aggregates (the numbers the embedding
checks of :mod:`featurestore.validation` need), never a collect of its vectors: per vector column the
dimension histogram, norm quantiles (``percentile_approx``, relative rank error 1e-4), duplicate
vectors across keys (grouped by the vector itself: exact), and bounded samples (at most the spec's
``sample`` rows) for the collapse and drift checks, chosen by a seeded hash of the keys so a report is
reproducible. :func:`suite_frame` makes the per-row scalar columns great_expectations checks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from featurestore.engine.spark.session import quiet, spark_errors
from featurestore.errors import ValidationError
from featurestore.schema import FeatureGroupSpec

_EXAMPLES = 3


@dataclass(frozen=True)
class VectorStats:
    """What the embedding checks need of one vector column of a frame."""

    rows: int
    valid: int  # rows with the right dimension and only finite values
    dims: dict[int, int]  # dimension -> rows (the 5 most common)
    wrong_dim: int
    norms: dict[str, float] | None  # min, p01, p50, p99, max, mean, std of the valid rows' norms
    duplicate_rows: int = 0
    duplicate_groups: int = 0
    duplicate_examples: list[list[str]] = field(default_factory=list)
    sample: np.ndarray | None = None  # (n, dim) float32: valid non-zero vectors, at most the sample asked


def _vector_cols(name: str) -> tuple[Any, Any, Any]:
    """(dimension, non-finite count, norm) of vector column ``name`` as Spark expressions."""
    from pyspark.sql import functions as F

    v = F.col(name)
    dim = F.when(v.isNull(), F.lit(0)).otherwise(F.size(v))
    nonfinite = F.when(v.isNull(), F.lit(1)).otherwise(
        F.size(F.filter(v, lambda x: x.isNull() | F.isnan(x) | (F.abs(x) == float("inf")))))
    sq = F.aggregate(v, F.lit(0.0).cast("double"), lambda acc, x: acc + x.cast("double") * x.cast("double"))
    norm = F.when(nonfinite > 0, F.lit(float("nan"))).otherwise(F.sqrt(sq))
    return dim, nonfinite, norm


def _order(keys: Sequence[str], seed: int) -> Any:
    """A seeded pseudo-random order of rows, by their keys (the same rows are picked every time)."""
    from pyspark.sql import functions as F

    return F.xxhash64(F.lit(seed), *[F.col(k) for k in keys])


def vector_stats(spec: FeatureGroupSpec, df: Any, feature: str, dim: int, *, duplicates: bool,
                 sample: int, seed: int) -> VectorStats:
    """The statistics of vector column ``feature`` of ``df`` (see the module docstring)."""
    from pyspark.sql import functions as F

    d, nonfinite, norm = _vector_cols(feature)
    rows = df.select(*spec.key_names, spec.event_time, F.col(feature).alias("__v"), d.alias("__dim"),
                     norm.alias("__norm"), ((d == dim) & (nonfinite == 0)).alias("__valid"))
    with quiet(), spark_errors(f"statistics of {spec.key} column {feature}", ValidationError):
        dims = rows.groupBy("__dim").count().orderBy(F.desc("count"), "__dim").limit(5).collect()
        valid = rows.where("__valid")
        agg = valid.agg(F.count("*").alias("n"), F.min("__norm"), F.max("__norm"), F.mean("__norm"),
                        F.stddev_pop("__norm"),
                        F.percentile_approx("__norm", [0.01, 0.5, 0.99], 10000).alias("q")).collect()[0]
        totals = rows.agg(F.count("*").alias("n"), F.sum((F.col("__dim") != dim).cast("long")).alias("w")).collect()[0]
        n_valid = int(agg["n"])
        norms = None
        if n_valid:
            q = [float(x) for x in agg["q"]]
            norms = {"min": float(agg[1]), "p01": q[0], "p50": q[1], "p99": q[2], "max": float(agg[2]),
                     "mean": float(agg[3]), "std": float(agg[4] or 0.0)}
        dup = _duplicates(spec, valid) if duplicates and n_valid >= 2 else (0, 0, [])
        picked = None
        if sample > 0:
            top = valid.where(F.col("__norm") > 0).orderBy(_order(spec.key_names, seed)).limit(sample) \
                .select("__v").toArrow()
            picked = _matrix(top.column("__v"), dim)
    return VectorStats(rows=int(totals["n"]), valid=n_valid, dims={int(r["__dim"]): int(r["count"]) for r in dims},
                       wrong_dim=int(totals["w"] or 0), norms=norms, duplicate_rows=dup[0], duplicate_groups=dup[1],
                       duplicate_examples=dup[2], sample=picked)


def _duplicates(spec: FeatureGroupSpec, valid: Any) -> tuple[int, int, list[list[str]]]:
    """Rows whose vector another key also has: grouped by the vector itself (exact, no hash)."""
    from pyspark.sql import functions as F

    key = F.concat_ws("|", *[F.col(k).cast("string") for k in spec.key_names])
    groups = valid.groupBy("__v").agg(F.count("*").alias("n"), F.countDistinct(key).alias("nk"),
                                      F.min(key).alias("lo"), F.max(key).alias("hi")).where(F.col("nk") > 1)
    agg = groups.agg(F.sum("n").alias("rows"), F.count("*").alias("groups")).collect()[0]
    examples = [[str(r["lo"]), str(r["hi"])] for r in groups.select("lo", "hi").limit(_EXAMPLES).collect()]
    return int(agg["rows"] or 0), int(agg["groups"] or 0), examples


def _matrix(column: pa.ChunkedArray, dim: int) -> np.ndarray:
    if not len(column):
        return np.zeros((0, dim), np.float32)
    flat = column.combine_chunks().flatten().to_numpy(zero_copy_only=False)
    return np.asarray(flat, np.float32).reshape(len(column), dim)


def drift_pairs(spec: FeatureGroupSpec, df: Any, previous: Any, feature: str, dim: int, *, sample: int,
                seed: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Up to ``sample`` keys present in both ``df`` and ``previous`` (each one's newest valid row), their
    vectors in ``df`` and in ``previous`` row for row, and how many keys the two share."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    d, nonfinite, _ = _vector_cols(feature)
    keys = spec.key_names
    newest = Window.partitionBy(*keys).orderBy(F.col(spec.event_time).desc())
    new = df.where((d == dim) & (nonfinite == 0)).withColumn("__n", F.row_number().over(newest)) \
        .where("__n = 1").select(*keys, F.col(feature).alias("__new"))
    order_prev = [F.col(spec.event_time).desc()]
    if "_ingested_at" in previous.columns:
        order_prev.append(F.col("_ingested_at").desc_nulls_last())
    old = previous.withColumn("__n", F.row_number().over(Window.partitionBy(*keys).orderBy(*order_prev))) \
        .where("__n = 1").select(*keys, F.col(feature).alias("__old"))
    with quiet(), spark_errors(f"drift of {spec.key} column {feature}", ValidationError):
        pairs = new.join(old, on=list(keys), how="inner")
        shared = pairs.count()
        top = pairs.orderBy(_order(keys, seed)).limit(sample).select("__new", "__old").toArrow()
    return _matrix(top.column("__new"), dim), _matrix(top.column("__old"), dim), int(shared)


def coverage(spec: FeatureGroupSpec, df: Any, expected: Any) -> tuple[int, int]:
    """(distinct keys of ``expected``, how many of them ``df`` has)."""
    keys = spec.key_names
    with quiet(), spark_errors(f"coverage of {spec.key}", ValidationError):
        exp = expected.select(*keys).distinct()
        total = exp.count()
        present = exp.join(df.select(*keys).distinct(), on=list(keys), how="left_semi").count() if total else 0
    return int(total), int(present)


def suite_frame(spec: FeatureGroupSpec, df: Any, columns: Sequence[str], vectors: Sequence[str],
                key_time: str | None) -> Any:
    """The per-row scalar columns the great_expectations suite checks (as
    :func:`featurestore.validation.suite.frame` makes them in pandas): numeric keys as they are, string
    keys as 64-bit hash codes (``<key>__code``), the event time, one code per (keys, event time)
    (``key_time``), the checked scalar columns, and per vector ``__dim``, ``__nonfinite``, ``__norm``."""
    from pyspark.sql import functions as F

    out = []
    for k in spec.entity_keys:
        if k.type == "string":
            out.append(F.when(F.col(k.name).isNull(), None).otherwise(F.xxhash64(k.name)).alias(f"{k.name}__code"))
        else:
            out.append(F.col(k.name))
    out.append(F.col(spec.event_time))
    if key_time:
        parts = [*spec.key_names, spec.event_time]
        any_null = F.greatest(*[F.col(c).isNull() for c in parts]) if len(parts) > 1 else F.col(parts[0]).isNull()
        out.append(F.when(any_null, None).otherwise(F.xxhash64(*parts)).alias(key_time))
    out += [F.col(c) for c in columns if c not in spec.key_names and c != spec.event_time]
    for name in vectors:
        d, nonfinite, norm = _vector_cols(name)
        out += [d.alias(f"{name}__dim"), nonfinite.alias(f"{name}__nonfinite"), norm.alias(f"{name}__norm")]
    # great_expectations computes its metrics in many passes: they read the scalars, not the vectors again
    from pyspark import StorageLevel

    return df.select(*out).persist(StorageLevel.MEMORY_AND_DISK)


def release(frame: Any) -> None:
    """Drop what :func:`suite_frame` kept on the executors."""
    with spark_errors("releasing validation data", ValidationError):
        frame.unpersist()
