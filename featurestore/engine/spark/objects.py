"""Spark reads the data files of a store on object storage (``s3://``) on its executors, without Hadoop's
S3 connector: the pyspark wheel ships none, and a cluster's own (``s3a://``, EMR's ``s3://``) needs jars
and settings of its own. The files' URIs become a small DataFrame (one row per file, spread over the
cluster), and ``mapInArrow`` opens each object with pyarrow's S3 file system, checks its bytes against
the checksum its commit recorded, and decodes it in record batches. Nothing passes through the driver
(before, a Spark job over an object store read the driver's downloaded copies, which executors on other
machines cannot see).

:class:`ObjectFiles` is what the engine is told before it is handed a table's URIs
(:meth:`featurestore.engine.base.Engine.use_objects`): the store's resolved settings (endpoint, region,
and credentials when the store has explicit ones or this process has them in its environment: they
travel with the task, as ``spark.hadoop.fs.s3a.*`` settings would) and the checksums.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from featurestore.engine.spark.session import remote_error
from featurestore.errors import CorruptData, StorageError
from featurestore.storage import objectstore
from featurestore.storage.objectstore import SCHEMES

POSITION = "__fs_pos"  # a row's global position in a commit's files (file offset + row in file)
FILE, ROW = "_file", "_row"  # a row's file (index in the list read) and row within it
_BATCH_ROWS = 65_536


def is_object_uri(path: str) -> bool:
    return path.startswith(SCHEMES)


@dataclass
class ObjectFiles:
    """Tables on object storage the engine may read by URI: table URI -> (settings, file name -> checksum)."""

    tables: dict[str, tuple[dict[str, str], dict[str, str]]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, table_uri: str, options: Mapping[str, str], checksums: Mapping[str, str]) -> None:
        with self._lock:
            self.tables[table_uri.rstrip("/")] = (dict(options), dict(checksums))

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
    if want and not _matches(data, want):
        raise remote_error(CorruptData(f"data file {uri} does not match the checksum its commit recorded "
                          f"({data.size} bytes: damaged or truncated); restore it from a backup "
                          f"(`featurestore check` lists every damaged file)"))
    return data


def _matches(data: pa.Buffer, want: str) -> bool:
    import zlib

    import xxhash

    if want.startswith("xxh3:"):
        return bool(xxhash.xxh3_64_hexdigest(memoryview(data)) == want[5:])
    return f"{zlib.crc32(memoryview(data)) & 0xFFFFFFFF:08x}" == want


def _open(uri: str, data: pa.Buffer) -> Any:
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(pa.BufferReader(data))
    except (OSError, pa.ArrowException) as exc:
        raise remote_error(CorruptData(f"data file {uri} is not readable Parquet: {exc}")) from exc
