"""The spine of a training set (entity keys, a label time, labels): given as a DataFrame, an Arrow table
or batch or reader, a DuckDB relation, or Parquet path(s) and globs, and made something DuckDB can scan
with a stable row ordinal (``__fs_row``) that orders the result."""

from __future__ import annotations

import contextlib
import glob
import itertools
import os
import sys
from collections.abc import Iterator
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa

from featurestore.catalog import Catalog
from featurestore.engine.base import Engine, FrameEngine
from featurestore.engine.pit_sql import _ROW, _TIME, _offsets_sql
from featurestore.errors import QueryError, SpineError
from featurestore.storage.duck import literal, quote
from featurestore.training.vectors import file_rows, from_numpy

Spine = Any  # pandas.DataFrame | pyarrow.Table | RecordBatchReader | Parquet path(s) | DuckDB relation | Spark
# DataFrame


@contextlib.contextmanager
def _reading_spine(file: str) -> Iterator[None]:
    try:
        yield
    except (OSError, pa.ArrowException) as exc:
        raise SpineError(f"cannot read the spine file {file}: {exc}") from exc


def _is_paths(data: Spine) -> bool:
    """A path, or a non-empty list or tuple of paths (globs allowed)."""
    if isinstance(data, str | os.PathLike):
        return True
    return isinstance(data, list | tuple) and bool(data) and all(isinstance(p, str | os.PathLike) for p in data)


def _spine_files(data: Spine) -> list[str]:
    """The Parquet files of spine path(s): each path as given, each glob's matches sorted."""
    paths = [os.fspath(p) for p in (data if isinstance(data, list | tuple) else [data])]
    files: list[str] = []
    for p in paths:
        found = sorted(glob.glob(p)) if any(ch in p for ch in "*?[") else [p] if os.path.exists(p) else []
        if not found:
            raise SpineError(f"spine file not found: {p}")
        files.extend(found)
    return files


def _spine_table(data: Spine) -> pa.Table:
    """An in-memory spine as an Arrow table."""
    if isinstance(data, duckdb.DuckDBPyRelation):
        return data.to_arrow_table()
    if "pandas" in sys.modules and isinstance(data, sys.modules["pandas"].DataFrame):
        try:
            return pa.Table.from_pandas(data, preserve_index=False)
        except (pa.ArrowException, TypeError, ValueError) as exc:
            raise SpineError(f"the spine DataFrame cannot be converted to Arrow: {exc}") from exc
    if isinstance(data, pa.RecordBatchReader):
        return data.read_all()
    if isinstance(data, pa.Table):
        return data
    if isinstance(data, pa.RecordBatch):
        return pa.Table.from_batches([data])
    raise SpineError(f"the spine must be a pandas DataFrame, a pyarrow Table, a Parquet path or a "
                     f"DuckDB relation; got {type(data).__name__}")


def _with_ordinals(table: pa.Table) -> pa.Table:
    """The table with its row ordinal column added (the reserved names must be free)."""
    for name in (_ROW, _TIME):
        if name in table.column_names:
            raise SpineError(f"the spine has a column named {name}, which is reserved")
    ordinals = from_numpy(np.arange(table.num_rows, dtype=np.int64))  # pa.array imports pandas
    return table.append_column(_ROW, ordinals)


class SpineSource:
    """The spine as something the engine can scan, with a stable row ordinal (``__fs_row``): Parquet
    files (:attr:`files`, scanned in place), an Arrow table (:attr:`table`, registered) or an engine's
    own frame (:attr:`frame`, a Spark DataFrame, given its ordinal by that engine)."""

    def __init__(self, data: Spine, store: Catalog, engine: Engine | None = None):
        self.files: list[str] | None = None
        self.table: pa.Table | None = None
        self.frame: Any = None
        self._frame_table: pa.Table | None = None
        self.engine = engine or store.engine
        if isinstance(self.engine, FrameEngine) and self.engine.is_frame(data):
            for name in (_ROW, _TIME):
                if name in data.columns:
                    raise SpineError(f"the spine has a column named {name}, which is reserved")
            self.frame = self.engine.number_rows(data, _ROW)
        elif _is_paths(data):
            self.files = _spine_files(data)
            try:
                rows = file_rows(self.files)
            except (OSError, pa.ArrowException) as exc:
                raise SpineError(f"cannot read the spine: {exc}") from exc
            self.offsets = [0, *itertools.accumulate(rows)]
        else:
            self.table = _spine_table(data)
        self.given: pa.Table | None = self.table  # the spine's own columns, attached to the result
        if self.table is not None:
            self.table = _with_ordinals(self.table)
        self.schema = self._schema(store)

    @property
    def arrow_schema(self) -> pa.Schema:
        """The spine's own columns as the result carries them (a file spine: its first file's types)."""
        if self.given is not None:
            return self.given.schema
        if self.frame is not None:
            return self._frame_rows().schema
        import pyarrow.parquet as pq

        assert self.files is not None
        return pq.read_schema(self.files[0]).remove_metadata()

    def _frame_rows(self) -> pa.Table:
        """A frame spine's own columns, in row-ordinal order, brought here once through the engine (only
        results made on this machine need them: ``to_spark`` keeps the spine where it is)."""
        if self._frame_table is None:
            assert isinstance(self.engine, FrameEngine)
            self._frame_table = self.engine.frame_batches(self.frame, _ROW).read_all()
        return self._frame_table

    def batches(self, batch_size: int = 1 << 17) -> Iterator[pa.RecordBatch]:
        """The spine's own columns in row-ordinal order, as record batches."""
        if self.given is not None:
            yield from self.given.to_batches()
            return
        if self.frame is not None:
            yield from self._frame_rows().to_batches(batch_size)
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
        if self.frame is not None:
            return self._frame_rows()
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
            return self.engine.relation_schema(self.register)
        except QueryError as exc:
            raise SpineError(f"cannot read the spine: {exc}") from exc

    def register(self, cur: duckdb.DuckDBPyConnection, name: str) -> None:
        native = getattr(cur, "register_spine", None)
        if native is not None:  # an engine that keeps the spine in its own frames (Spark)
            native(name, table=self.table, files=self.files,
                   offsets=self.offsets if self.files is not None else None, frame=self.frame)
            return
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
