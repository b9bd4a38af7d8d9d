"""Co-occurrence counts and entity sums on Spark, with the semantics of :mod:`featurestore.engine.counting`
(the numpy kernels, which are the reference).

Counting is a distributed aggregation: each entity's sequence is ordered once (a window per entity),
consecutive repeats collapse into one token, each token meets the next ``window`` tokens through
``lead`` (no self-join), and the weighted pairs are summed per (item, item): only the distinct pairs,
bounded by the number of items squared, come to the driver, where the factorisation runs.

Entity sums run on the executors: the events are partitioned by entity and sorted, the decayed weights
are computed by Spark (position from the end and age per entity: window functions), and each partition
sums its entities' item vectors with the numpy kernel in ``mapInArrow``, the item vectors broadcast
once. The driver receives one row per entity (its sum), streamed in batches of ascending ids.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from featurestore.engine import counting
from featurestore.engine.base import Cooccurrence, EntitySums, SumsBatch
from featurestore.engine.events import Events, EventTable
from featurestore.engine.spark.events import SparkEvents
from featurestore.engine.spark.session import quiet, spark_errors
from featurestore.errors import PipelineError

if TYPE_CHECKING:
    import scipy.sparse as sp


def _order() -> list[str]:
    return ["t", "i", "w"]  # an entity's events in (time, item, weight) order, as the numpy kernels


def _tokens(events: SparkEvents, r: Cooccurrence) -> Any:
    """Per entity, its tokens ``(e, p, i, sw, sid)``: consecutive repeats collapsed (largest weight,
    first time), items below ``min_count`` dropped, then numbered ``p`` in order, with the square
    root of the weight and (when sessions matter) a session number."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    df = events.frame
    seq = Window.partitionBy("e").orderBy(*_order())
    if r.collapse_repeats:
        new = F.coalesce(F.lag("i").over(seq) != F.col("i"), F.lit(True)).cast("int")
        df = df.withColumn("run", F.sum(new).over(seq.rowsBetween(Window.unboundedPreceding, 0)))
        df = df.groupBy("e", "run").agg(F.first("i").alias("i"), F.max("w").alias("w"), F.min("t").alias("t"))
        tok = Window.partitionBy("e").orderBy("run")
    else:
        df = df.withColumn("run", F.row_number().over(seq))
        tok = Window.partitionBy("e").orderBy("run")
    if r.min_count > 1:
        keep = [int(c) for c in np.flatnonzero(events.item_count >= r.min_count)]
        df = df.where(F.col("i").isin(keep))
    df = df.withColumn("sw", F.sqrt(F.col("w").cast("float")).cast("float"))
    if r.session_gap is not None and r.cross_session != 1.0:
        gap = int(r.session_gap.total_seconds() * 1e6)
        brk = F.coalesce((F.col("t") - F.lag("t").over(tok)) > gap, F.lit(False)).cast("int")
        df = df.withColumn("sid", F.sum(brk).over(tok.rowsBetween(Window.unboundedPreceding, 0)))
    else:
        df = df.withColumn("sid", F.lit(0))
    return df.select("e", "run", "i", "sw", "sid"), tok


def pair_counts(events: SparkEvents, r: Cooccurrence) -> Any:
    """The frame of (earlier item ``a``, later item ``b``, summed weight ``v``), one row per distinct pair."""
    from pyspark.sql import functions as F

    tokens, tok = _tokens(events, r)
    window = r.window
    ahead = []
    for d in range(1, window + 1):
        scale = float(np.float32((window - d + 1) / window))
        ahead.append(F.struct(F.lit(d).alias("d"), F.lead("i", d).over(tok).alias("b"),
                              F.lead("sw", d).over(tok).alias("sw2"), F.lead("sid", d).over(tok).alias("sid2"),
                              F.lit(scale).cast("float").alias("scale")))
    pairs = tokens.select("i", "sw", "sid", F.array(*ahead).alias("xs")) \
        .select("i", "sw", "sid", F.explode("xs").alias("x")) \
        .where(F.col("x.b").isNotNull() & (F.col("x.b") != F.col("i")))
    cross = F.when(F.col("sid") == F.col("x.sid2"), F.lit(1.0)).otherwise(F.lit(float(np.float32(r.cross_session))))
    v = (F.col("sw") * F.col("x.sw2")).cast("float") * F.col("x.scale")
    v = (v.cast("float") * cross.cast("float")).cast("float")
    return pairs.select(F.col("i").alias("a"), F.col("x.b").alias("b"), v.alias("v")) \
        .groupBy("a", "b").agg(F.sum("v").alias("v"))


def strongest(counted: Any, n_items: int, keep: int, *, directed: bool) -> Any:
    """The summed pairs (plus their transpose unless ``directed``) with, per item, only the ``keep``
    largest of its row and of its column (their union; ties to the smaller item code): what
    :meth:`featurestore.engine.duckdb_pairs.PairSpill.pruned` keeps, as a frame."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    full = counted
    if not directed:
        full = counted.unionByName(counted.select(F.col("b").alias("a"), F.col("a").alias("b"), "v")) \
            .groupBy("a", "b").agg(F.sum("v").alias("v"))
    full = full.withColumn("v", F.col("v").cast("float"))
    by_row = F.row_number().over(Window.partitionBy("a").orderBy(F.col("v").desc(), "b"))
    by_col = F.row_number().over(Window.partitionBy("b").orderBy(F.col("v").desc(), "a"))
    return full.withColumn("ra", by_row).withColumn("rb", by_col) \
        .where((F.col("ra") <= keep) | (F.col("rb") <= keep)).select("a", "b", "v")


def cooccurrence(events: EventTable, request: Cooccurrence, max_pairs: int | None = None) -> sp.csr_matrix:
    """The co-occurrence matrix of ``events`` (see :func:`featurestore.engine.counting.cooccurrence`). Past
    ``max_pairs`` distinct pairs (each undirected pair counted twice, as the DuckDB engine counts them)
    only each item's strongest pairs come to the driver (:func:`strongest`), as on the DuckDB engine."""
    import scipy.sparse as sp
    from pyspark import StorageLevel

    if isinstance(events, Events):  # already in this process: the numpy kernel is the cheaper path
        return counting.cooccurrence_chunks([events], events.n_items, request)
    if not isinstance(events, SparkEvents):
        raise PipelineError(f"the Spark engine counts Spark events or in-memory events; got {type(events).__name__}")
    n = events.n_items
    pruned = False
    with quiet(), spark_errors("counting co-occurrences"):
        counted = pair_counts(events, request)
        if max_pairs is not None:  # counted twice (its size, then its rows): kept, spilling to disk
            counted = counted.persist(StorageLevel.MEMORY_AND_DISK)
            pruned = counted.count() * (1 if request.directed else 2) > max_pairs
        try:
            frame = strongest(counted, n, counting.per_item(max_pairs or 1, n), directed=request.directed) \
                if pruned else counted
            pairs = frame.toArrow()
        finally:
            if max_pairs is not None:
                counted.unpersist()
    a = pairs["a"].to_numpy().astype(np.int64)
    b = pairs["b"].to_numpy().astype(np.int64)
    v = pairs["v"].to_numpy().astype(np.float64)  # Spark's double sums (pruned: already float32)
    del pairs
    matrix = sp.csr_matrix((v, (a, b)), shape=(n, n), dtype=np.float64)
    # each undirected pair's two halves added in float64, rounded to float32 once: as the numpy kernels
    summed = matrix if request.directed or pruned else (matrix + matrix.T).tocsr()
    return summed.astype(np.float32)


def _weights(events: SparkEvents, r: EntitySums) -> Any:
    """The events with their decayed weight ``dw`` (float32, as :func:`counting.decay_weights`), each
    entity's event count ``n`` and newest time ``last``, only the entities active ``since``."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    per = Window.partitionBy("e")
    back = Window.partitionBy("e").orderBy(*[F.col(c).desc() for c in _order()])
    df = events.frame.withColumn("last", F.max("t").over(per)).withColumn("n", F.count("*").over(per)) \
        .withColumn("pos", F.row_number().over(back) - 1)
    w = F.col("w").cast("double")
    if isinstance(r.half_life, timedelta):
        w = w * F.pow(F.lit(2.0), -((F.col("last") - F.col("t")) / F.lit(r.half_life.total_seconds() * 1e6)))
    elif r.half_life is not None:
        w = w * F.pow(F.lit(2.0), -(F.col("pos").cast("double") / F.lit(float(r.half_life))))
    if r.max_events is not None:
        w = F.when(F.col("pos") < r.max_events, w).otherwise(F.lit(0.0))
    df = df.withColumn("dw", w.cast("float"))
    if r.since is not None:
        df = df.where(F.col("last") >= F.lit(int(r.since)))
    return df.select("e", "i", "dw", "t", "w", "n", "last")


def sums_frame(events: SparkEvents, request: EntitySums) -> tuple[Any, int]:
    """:class:`EntitySums` on Spark as a frame (``e string, sums array<float>, total float, n long,
    last long``: whole entities per partition, sorted by ``e`` within it), and how many entities were
    considered (those active ``since``, else all)."""
    from pyspark.sql import functions as F

    dim = int(request.vectors.shape[1])
    rows = np.asarray(request.item_rows, np.int64)
    vectors = np.ascontiguousarray(request.vectors, np.float32)
    session = events.frame.sparkSession
    with quiet(), spark_errors("summing entity vectors"):
        considered = events.frame.where(F.col("t") >= int(request.since)).select("e").distinct().count() \
            if request.since is not None else events.n_entities
        shared = session.sparkContext.broadcast((rows, vectors))
        ordered = _weights(events, request).repartition("e").sortWithinPartitions("e", *_order())
        schema = "e string, sums array<float>, total float, n long, last long"
        return ordered.mapInArrow(_summing(shared, dim), schema), int(considered)


def entity_sums(events: EventTable, request: EntitySums, bring: Callable[[Any], pa.RecordBatchReader]
                ) -> Iterator[SumsBatch]:
    """:class:`EntitySums` on Spark (see the module docstring), in batches of ascending entity ids;
    ``bring(frame)`` streams a frame sorted by ``e`` to this process."""
    if isinstance(events, Events):
        yield from counting.entity_sums(events, request)
        return
    if not isinstance(events, SparkEvents):
        raise PipelineError(f"the Spark engine sums Spark events or in-memory events; got {type(events).__name__}")
    dim = int(request.vectors.shape[1])
    frame, considered = sums_frame(events, request)
    with quiet(), spark_errors("summing entity vectors"):
        reader = bring(frame)
    first = True
    for batch in reader:
        if not batch.num_rows:
            continue
        yield SumsBatch.from_arrow(batch, dim, considered if first else 0)
        first = False
    if first:
        yield SumsBatch(np.zeros(0, dtype=object), np.zeros((0, dim), np.float32), np.zeros(0, np.float32),
                        np.zeros(0, np.int64), np.zeros(0, np.int64), considered=considered)


def rows_frame(events: SparkEvents, request: EntitySums, rows: Callable[[pa.RecordBatch], pa.RecordBatch],
               schema: pa.Schema) -> tuple[Any, int]:
    """The sums frame with each batch turned into rows of ``schema`` by ``rows`` on the executors."""
    from pyspark.sql.pandas.types import from_arrow_schema

    frame, considered = sums_frame(events, request)
    spark_schema = from_arrow_schema(schema, prefer_timestamp_ntz=False)

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            if batch.num_rows:
                yield rows(batch)

    with quiet(), spark_errors("making entity rows"):
        return frame.mapInArrow(run, spark_schema), considered


def _summing(shared: Any, dim: int) -> Any:
    """The ``mapInArrow`` function: per partition (whole entities, sorted), the numpy kernel's sums.
    Entities may straddle Arrow batches: the last entity of a batch waits for the next one."""

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        rows, vectors = shared.value
        carry: pa.Table | None = None
        for batch in batches:
            table = pa.Table.from_batches([batch])
            if carry is not None:
                table = pa.concat_tables([carry, table])
            if not table.num_rows:
                continue
            e = table.column("e").combine_chunks()
            last = e[len(e) - 1]
            cut = len(e)
            while cut > 0 and e[cut - 1] == last:
                cut -= 1
            carry = table.slice(cut)
            if cut:
                yield _sums(table.slice(0, cut), rows, vectors, dim)
        if carry is not None and carry.num_rows:
            yield _sums(carry, rows, vectors, dim)

    return run


def _sums(table: pa.Table, rows: np.ndarray, vectors: np.ndarray, dim: int) -> pa.RecordBatch:
    import pyarrow.compute as pc

    ids = table.column("e").combine_chunks()
    new = np.ones(len(ids), dtype=bool)
    if len(ids) > 1:
        new[1:] = np.asarray(pc.not_equal(ids.slice(1), ids.slice(0, len(ids) - 1)))
    ent = np.cumsum(new) - 1
    n_ent = int(ent[-1]) + 1 if len(ent) else 0
    item = np.asarray(table.column("i").to_numpy(), np.int64)
    w = np.asarray(table.column("dw").to_numpy(), np.float32)
    has, sums, totals = counting.weighted_sums(ent, rows[item], w, n_ent, vectors)
    starts = np.flatnonzero(new)
    n = np.asarray(table.column("n").to_numpy(), np.int64)[starts]
    last = np.asarray(table.column("last").to_numpy(), np.int64)[starts]
    out_ids = ids.take(pa.array(starts[has], pa.int64()))
    return pa.RecordBatch.from_arrays(
        [out_ids, pa.FixedSizeListArray.from_arrays(pa.array(sums.ravel(), pa.float32()), dim).cast(
            pa.list_(pa.float32())), pa.array(totals, pa.float32()), pa.array(n[has]), pa.array(last[has])],
        names=["e", "sums", "total", "n", "last"])
