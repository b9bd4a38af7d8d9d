"""Spark reads and writes the data files of a store on object storage (``s3://``) on its executors,
without Hadoop's S3 connector: the pyspark wheel ships none, and a cluster's own (``s3a://``, EMR's
``s3://``) needs jars and settings of its own. Nothing passes through the driver (before, a Spark job over
an object store read the driver's downloaded copies, which executors on other machines cannot see).

* :func:`read_objects`: the files' URIs become a small DataFrame (one row per file, spread over the
  cluster), and ``mapInArrow`` opens each object with pyarrow's S3 file system, checks its bytes against
  the checksum its commit recorded, and decodes it in record batches.
* :func:`write_objects`: each task writes its partition as one Parquet file (a local temporary file on
  the executor, row groups of 128k rows), computes its checksum and Delta statistics, and uploads it
  under the table's prefix with a name no commit uses; only those small records reach the driver, which
  commits them with delta-rs (:class:`featurestore.storage.staging.WrittenObjects`). Until then no
  reader sees the objects; a failed job's are deleted (:func:`sweep`).

:class:`ObjectFiles` is what the engine is told before it is handed a table's URIs
(:meth:`featurestore.engine.base.Engine.use_objects`): the store's resolved settings (endpoint, region,
and credentials when the store has explicit ones or this process has them in its environment: they
travel with the task, as ``spark.hadoop.fs.s3a.*`` settings would) and the checksums.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from featurestore.engine.spark.session import remote_error
from featurestore.errors import CorruptData, StorageError
from featurestore.storage import objectstore
from featurestore.storage.checksums import bytes_match, file_xxh3
from featurestore.storage.staging import PAGE_CHECKSUMS, file_stats

POSITION = "__fs_pos"  # a row's global position in a commit's files (file offset + row in file)
FILE, ROW = "_file", "_row"  # a row's file (index in the list read) and row within it
_BATCH_ROWS = 65_536


@dataclass
class ObjectFiles:
    """Tables on object storage the engine may read by URI: table URI -> (settings, file name -> checksum)."""

    tables: dict[str, tuple[dict[str, str], dict[str, str]]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, table_uri: str, options: Mapping[str, str], checksums: Mapping[str, str]) -> None:
        """Note a table's settings and checksums (added to those noted before: files never change)."""
        with self._lock:
            known = self.tables.get(table_uri.rstrip("/"), ({}, {}))[1]
            self.tables[table_uri.rstrip("/")] = (dict(options), {**known, **checksums})

    def of(self, uri: str) -> tuple[str, dict[str, str], dict[str, str]]:
        """The table ``uri`` belongs to, its settings and its checksums (the longest matching table)."""
        with self._lock:
            found = [t for t in self.tables if uri.startswith(t + "/")]
            if not found:
                raise StorageError(f"{uri}: the Spark engine was not told this object store's settings (read "
                                   f"feature groups through the store: FeatureStore(..., engine=...))")
            table = max(found, key=len)
            return (table, *self.tables[table])


def read_objects(session: Any, struct: Any, uris: Sequence[str], objects: ObjectFiles, *,
                 offsets: Sequence[int] | None = None, locate: bool = False,
                 columns: Sequence[str] | None = None) -> Any:
    """A DataFrame of the rows of the Parquet objects ``uris``, in the Spark schema ``struct`` (the
    files' columns, ``columns`` of them if given), each object checked against its recorded checksum.
    ``offsets`` (each file's first global row position) adds ``__fs_pos``; ``locate`` adds ``_file``
    (the file's index in ``uris``) and ``_row`` (the row within it)."""
    from pyspark.sql import types as T
    from pyspark.sql.pandas.types import to_arrow_schema

    names = list(columns) if columns is not None else [f.name for f in struct.fields]
    out = T.StructType([struct[n] for n in names])
    if offsets is not None:
        out = out.add(POSITION, T.LongType(), True)
    if locate:
        out = out.add(FILE, T.LongType(), True).add(ROW, T.LongType(), True)
    jobs, settings = [], {}
    for i, uri in enumerate(uris):
        table, settings[table], sums = objects.of(uri)
        jobs.append((i, uri, int(offsets[i]) if offsets is not None else 0, sums.get(uri.rsplit("/", 1)[-1], ""),
                     table))
    reader = _Reader(settings, names, to_arrow_schema(out, timezone="UTC"), offsets is not None, locate)
    slices = max(1, min(len(jobs), session.sparkContext.defaultParallelism))
    files = session.createDataFrame(session.sparkContext.parallelize(jobs, slices),
                                    "i long, uri string, offset long, want string, tbl string")
    return files.mapInArrow(reader, out)


@dataclass(frozen=True)
class _Reader:
    """What each executor runs: objects in, record batches out (picklable: a dataclass of plain values)."""

    settings: dict[str, dict[str, str]]  # table URI -> resolved options
    columns: list[str]
    schema: pa.Schema  # of the output, as Spark expects it
    position: bool
    locate: bool

    def __call__(self, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        import numpy as np

        for jobs in batches:
            for i, uri, offset, want, table in zip(*(jobs.column(c).to_pylist() for c in
                                                     ("i", "uri", "offset", "want", "tbl")), strict=True):
                data = _fetch(uri, self.settings[table], want)
                pf = _open(uri, data)
                start = 0
                for rb in pf.iter_batches(batch_size=_BATCH_ROWS, columns=self.columns):
                    n = rb.num_rows
                    arrays = [rb.column(c) for c in self.columns]
                    rows = np.arange(start, start + n, dtype=np.int64)
                    if self.position:
                        arrays.append(pa.array(rows + offset))
                    if self.locate:
                        arrays += [pa.array(np.full(n, i, np.int64)), pa.array(rows)]
                    start += n
                    yield pa.RecordBatch.from_arrays([a.cast(f.type) for a, f in zip(arrays, self.schema)],
                                                     schema=self.schema)


def _fetch(uri: str, options: dict[str, str], want: str) -> pa.Buffer:
    """The object's bytes, checked against ``want`` (``xxh3:<hex>`` or a CRC-32; empty: none recorded)."""
    fs = objectstore.filesystem(uri, options)
    try:
        with fs.open_input_file(uri.split("://", 1)[1]) as f:
            data = f.read_buffer()
    except OSError as exc:
        raise remote_error(objectstore.translate(uri, options, f"reading {uri}", exc)) from exc
    if want and not bytes_match(data, want):
        raise remote_error(CorruptData(f"data file {uri} does not match the checksum its commit recorded "
                          f"({data.size} bytes: damaged or truncated); restore it from a backup "
                          f"(`featurestore check` lists every damaged file)"))
    return data


def _open(uri: str, data: pa.Buffer) -> Any:
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(pa.BufferReader(data))
    except (OSError, pa.ArrowException) as exc:
        raise remote_error(CorruptData(f"data file {uri} is not readable Parquet: {exc}")) from exc


@dataclass(frozen=True)
class Written:
    """One object a Spark task wrote into a table's prefix: its name there, size, rows, checksum
    (``xxh3:<hex>``) and Delta ``stats`` (JSON), all an add action needs."""

    name: str
    size: int
    rows: int
    checksum: str
    stats: str


_GROUP_ROWS = 131_072  # rows per row group of a written object


def write_objects(df: Any, table_uri: str, options: Mapping[str, str], run: str) -> list[Written]:
    """Write ``df`` (the table's columns, as :func:`featurestore.engine.spark.tables.cast_frame` leaves
    them) as Parquet objects under ``table_uri``, one per non-empty partition, named
    ``part-<partition>-<attempt>-<run>-c000.snappy.parquet``; the records of the objects written by the
    tasks that succeeded (a retried task's earlier attempt may leave one more: :func:`sweep` it)."""
    from pyspark.sql import types as T
    from pyspark.sql.pandas.types import to_arrow_schema

    out = T.StructType([T.StructField("name", T.StringType()), T.StructField("size", T.LongType()),
                        T.StructField("rows", T.LongType()), T.StructField("checksum", T.StringType()),
                        T.StructField("stats", T.StringType())])
    writer = _Writer(table_uri.rstrip("/"), dict(options), run, to_arrow_schema(df.schema, timezone="UTC"))
    rows = df.mapInArrow(writer, out).collect()
    return [Written(r["name"], int(r["size"]), int(r["rows"]), r["checksum"], r["stats"]) for r in rows]


def sweep(table_uri: str, options: Mapping[str, str], run: str, keep: Sequence[str] = ()) -> list[str]:
    """Delete the objects of write ``run`` under ``table_uri`` but those named in ``keep``; their names."""
    import pyarrow.fs as pafs

    fs = objectstore.filesystem(table_uri, dict(options))
    base = table_uri.rstrip("/").split("://", 1)[1]
    gone = []
    try:
        found = fs.get_file_info(pafs.FileSelector(base, allow_not_found=True))
        for info in found:
            name = info.path.rsplit("/", 1)[-1]
            if info.type == pafs.FileType.File and f"-{run}-" in name and name not in keep:
                fs.delete_file(info.path)
                gone.append(name)
    except OSError as exc:
        raise objectstore.translate(table_uri, dict(options), "removing the objects of a failed write", exc) from exc
    return gone


@dataclass(frozen=True)
class _Writer:
    """What each task runs to write its partition (picklable: a dataclass of plain values)."""

    table_uri: str
    settings: dict[str, str]
    run: str
    schema: pa.Schema  # the rows as Spark hands them over (vectors as list<float>, instants in UTC)

    def __call__(self, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        import pyarrow.parquet as pq
        from pyspark import TaskContext

        ctx = TaskContext.get()
        part, attempt = (ctx.partitionId(), ctx.attemptNumber()) if ctx is not None else (0, 0)
        name = f"part-{part:05d}-{attempt}-{self.run}-c000.snappy.parquet"
        scalars = [f.name for f in self.schema if not pa.types.is_list(f.type)]
        fd, path = tempfile.mkstemp(prefix="featurestore-", suffix=".parquet")
        os.close(fd)
        try:
            rows = 0
            with pq.ParquetWriter(path, self.schema, compression="snappy", use_dictionary=scalars,
                                  write_page_checksum=PAGE_CHECKSUMS) as writer:
                pending: list[pa.RecordBatch] = []
                for batch in itertools.chain(batches, [None]):  # None: the end, flush
                    if batch is not None and batch.num_rows:
                        pending.append(batch)
                    held = sum(b.num_rows for b in pending)
                    if pending and (held >= _GROUP_ROWS or batch is None):
                        writer.write_table(pa.Table.from_batches(pending).cast(self.schema), row_group_size=held)
                        rows += held
                        pending = []
            if not rows:
                return
            checksum = "xxh3:" + file_xxh3(path)
            stats = json.dumps(file_stats(pq.read_table(path, columns=scalars)), separators=(",", ":"))
            uri = f"{self.table_uri}/{name}"
            fs = objectstore.filesystem(uri, self.settings)
            try:
                with open(path, "rb") as src, fs.open_output_stream(uri.split("://", 1)[1]) as dst:
                    shutil.copyfileobj(src, dst, 8 << 20)
            except OSError as exc:
                raise remote_error(objectstore.translate(uri, self.settings, f"writing {uri}", exc)) from exc
            yield pa.RecordBatch.from_pylist([{"name": name, "size": os.path.getsize(path), "rows": rows,
                                               "checksum": checksum, "stats": stats}])
        finally:
            os.remove(path)
