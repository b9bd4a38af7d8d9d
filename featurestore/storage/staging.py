"""An append in two steps: write the data files now, commit them to the Delta log later (or delete them).

An insert validates its batch before committing it. Writing the Parquet files does not depend on the
outcome, only committing them does, so :class:`StagedAppend` writes the files in a background thread
(pyarrow releases the GIL while it encodes) while the caller validates, then :meth:`StagedAppend.commit`
adds them to the table in one Delta commit, or :meth:`StagedAppend.discard` deletes them.

Until the commit the files are not referenced by the log, so no reader sees them: a process killed in
between leaves unreferenced files behind, never a half-visible commit. The files look like the ones
deltalake writes itself: ``part-NNNNN-<uuid>-c000.snappy.parquet``, about 100 MB each with one row group,
snappy, dictionary encoding (except vector columns), column statistics in the footer, and Delta ``stats`` (numRecords,
minValues, maxValues, nullCount) in each add action.

On an object-store root each file is written to the store's local cache folder first (so this machine
later reads it without a download), then uploaded into the table's prefix by the same background thread;
:meth:`StagedAppend.discard` deletes the uploads too. A writer killed before its commit leaves only
objects that no commit references: invisible to every reader, and removed by ``vacuum``.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from featurestore.errors import StorageError
from featurestore.storage.checksums import CHECKSUMS, data_checksum, mark_verified
from featurestore.storage.delta import META_PREFIX, commit_of_run, history, open_table, translated
from featurestore.storage.fs import Root

#: Parquet page CRCs in the data files. Off: measured on the 1M-row training-set benchmark, DuckDB's
#: reads of files with page CRCs made the first training set over new commits 0.4-0.8 s slower
#: (1.44 s -> 2.24 s median). Each file's xxh3 checksum is recorded in its commit instead
#: (``CHECKSUMS``), computed by the writer thread while the batch is validated, and verified before the
#: file is read (:mod:`featurestore.storage.checksums`) and by `featurestore check`.
PAGE_CHECKSUMS = False

TARGET_FILE_BYTES = 100 * 1024 * 1024  # deltalake's default target file size
_MAX_STAT_CHARS = 32  # longer strings get a truncated min and no max (as deltalake does)


class StagedAppend:
    """Data files for one append, written in a background thread; commit or discard them exactly once.

    ``make_table`` runs in that thread (it may stamp the rows, e.g. ``_ingested_at``) and returns the
    table to write, in the Delta table's schema. ``paths`` / ``uploaded``: files another writer made for
    this append (a subclass adopts them), in place before the thread starts, so it sees every one.
    """

    def __init__(self, root: Root, rel: str, make_table: Callable[[], pa.Table], *,
                 target_bytes: int | None = None, data_change: bool = True,
                 paths: Sequence[str] = (), uploaded: Sequence[str] = ()):
        self.root, self.rel = root, rel
        # None: the module's TARGET_FILE_BYTES as it is when the writer is made (tests lower it)
        self.target_bytes = TARGET_FILE_BYTES if target_bytes is None else target_bytes
        self.data_change = data_change
        self.uri = root.uri_of(rel)
        self.paths: list[str] = list(paths)  # absolute (local) paths of the files written so far
        # object-store roots: root-relative names of the files uploaded so far
        self.uploaded: list[str] = list(uploaded)
        self.files: list[tuple[str, int, int]] = []  # (path, first row, row count) of each written file
        self.checksums: dict[str, str] = {}  # file name -> checksum of its bytes ("xxh3:<hex>")
        self._done = False
        self._cancel = threading.Event()  # set by discard: files not yet started are not written
        import deltalake.transaction  # noqa: F401  here: a first import racing in two threads fails
        import pyarrow.parquet  # noqa: F401

        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="featurestore-stage")
        self._future: Future[tuple[Any, pa.Schema, list[Any]]] = self._pool.submit(self._write, make_table)

    def _write(self, make_table: Callable[[], pa.Table]) -> tuple[Any, pa.Schema, list[Any]]:
        table_dir = self.root._path(self.rel) if self.root.local else str(self.root.cached(self.rel))
        os.makedirs(table_dir, exist_ok=True)
        dt = open_table(self.uri, storage_options=self.root.storage_options)  # the version this append reads
        table = make_table()
        return dt, table.schema, self._write_parts(table, table_dir, uuid.uuid4(), 0)

    def _write_parts(self, table: pa.Table, table_dir: str, run: uuid.UUID, first_row: int) -> list[Any]:
        """Write ``table`` as files of about ``target_bytes`` (named after ``run`` and numbered on from
        the files written so far; ``first_row``: the table's first row within the append); return their
        add actions."""
        import pyarrow.parquet as pq
        from deltalake.transaction import AddAction

        per_file = rows_per_file(table, self.target_bytes)
        # vectors are (nearly) all distinct floats: a dictionary page is wasted work to write and made
        # reading them back 3x slower (1M x 64-d: 1.0 s -> 0.3 s); scalar columns keep theirs
        dictionary = [f.name for f in table.schema if not pa.types.is_list(f.type)
                      and not pa.types.is_fixed_size_list(f.type) and not pa.types.is_large_list(f.type)]
        actions = []
        for start in range(0, table.num_rows, per_file):
            if self._cancel.is_set():
                break
            part = table.slice(start, per_file)
            name = f"part-{len(self.paths):05d}-{run}-c000.snappy.parquet"
            path = f"{table_dir}/{name}"
            self.paths.append(path)  # before writing: a failed write still leaves a file to delete
            pq.write_table(part, path, row_group_size=max(part.num_rows, 1), compression="snappy",
                           use_dictionary=dictionary, write_page_checksum=PAGE_CHECKSUMS)
            self.files.append((path, first_row + start, part.num_rows))
            self.checksums[name] = data_checksum(path)  # from the page cache, just written
            mark_verified(path)
            if not self.root.local:
                self.uploaded.append(f"{self.rel}/{name}")  # before uploading: a failed upload is deleted too
                self.root.upload(path, f"{self.rel}/{name}")
            actions.append(AddAction(path=name, size=os.path.getsize(path), partition_values={},
                                     modification_time=int(time.time() * 1000), data_change=self.data_change,
                                     stats=json.dumps(file_stats(part), separators=(",", ":"))))
        return actions

    def commit(self, metadata: dict[str, str], *, max_retries: int = 15,
               replaces: Sequence[tuple[str, int]] = ()) -> None:
        """Add the written files to the table as one commit carrying ``metadata``.

        ``replaces`` (path in the table, size) are data files the same commit removes from the table (a
        rewrite: :func:`compact_files`). Concurrent appends are rebased and retried (up to
        ``max_retries``). If the commit fails the
        files are deleted, unless the log shows the commit landed (something after it failed, e.g. a
        checkpoint: the commit stands, with a warning) or cannot be read (the files are kept).
        """
        from deltalake import CommitProperties

        if self._done:
            raise StorageError(f"{self.uri}: this staged append was already committed or discarded")
        try:
            with translated(f"committing to {self.uri}", self.uri, self.root.storage_options):
                dt, schema, actions = self._future.result()  # the writer's errors, translated too
                self._check_rows(metadata)
                actions = actions + _removals(replaces)
                metadata = {**metadata, CHECKSUMS: json.dumps(self.checksums, separators=(",", ":"))}
                dt.create_write_transaction(
                    actions, mode="append", schema=schema,
                    commit_properties=CommitProperties(custom_metadata=metadata, max_commit_retries=max_retries))
        except BaseException as exc:
            landed = self._landed(metadata)
            if landed is False:
                self.discard()
                raise
            self._done = True  # in the log, or unknown: its files must stay
            if landed and isinstance(exc, Exception):
                warnings.warn(f"{self.uri}: the commit landed, then deltalake raised: {exc}", RuntimeWarning,
                              stacklevel=2)
                return
            raise
        finally:
            self._pool.shutdown(wait=True)
        self._done = True

    def _check_rows(self, metadata: dict[str, str]) -> None:
        """Refuse to commit files that do not hold the rows the commit's metadata states (a commit that
        adds rows): an append that lost files on the way must fail, never land short."""
        stated = metadata.get(META_PREFIX + "row_count")
        held = sum(rows for _, _, rows in self.files)
        if self.data_change and stated is not None and held != int(stated):
            raise StorageError(f"{self.uri}: the append's {len(self.files)} data file(s) hold {held} rows, but "
                               f"{stated} were staged; nothing was committed")

    def _landed(self, metadata: dict[str, str]) -> bool | None:
        """Whether a commit carrying ``metadata``'s run id is in the log (None: the log cannot be read)."""
        run_id = metadata.get(META_PREFIX + "run_id")
        if run_id is None:
            return None
        try:
            return any(e.get(META_PREFIX + "run_id") == run_id for e in history(self.root, self.rel))
        except Exception:
            return None

    def discard(self) -> None:
        """Wait for the writer, then delete every file it wrote; the table is as it was."""
        if self._done:
            return
        self._done = True
        self._cancel.set()
        try:
            self._future.exception()  # wait; its error (if any) is the caller's to report, not ours
        finally:
            self._pool.shutdown(wait=True)
            for path in self.paths:
                with contextlib.suppress(FileNotFoundError):
                    os.remove(path)
            for rel in self.uploaded:
                with contextlib.suppress(StorageError):
                    self.root.delete(rel)


class AdoptedFiles(StagedAppend):
    """Parquet files another writer (a Spark job) wrote into a staging folder inside the table's,
    committed like a :class:`StagedAppend`: moved into the table folder under their own names now
    (:attr:`paths`), each file's checksum and Delta ``stats`` (from its scalar columns, as
    :func:`file_stats` computes them) computed in the background, then one commit; :meth:`discard`
    (or a failed commit) deletes them. Until the commit no reader sees them.

    ``schema`` is the table's schema (the files must hold its columns).
    """

    def __init__(self, root: Root, rel: str, files: list[str], schema: pa.Schema):
        if not root.local:
            raise StorageError(f"{root.uri}: adopting written files needs a local store root")
        self._schema = schema
        self.paths = []
        table_dir = root._path(rel)
        try:
            for src in files:
                path = f"{table_dir}/{os.path.basename(src)}"
                if os.path.exists(path):
                    raise StorageError(f"{root.uri_of(rel)}: a data file named {os.path.basename(src)} exists already")
                os.replace(src, path)  # one file system: the staging folder lies inside the table folder
                self.paths.append(path)
        except OSError as exc:
            self._remove_moved()
            raise StorageError(f"{root.uri_of(rel)}: cannot move written files into the table: {exc}") from exc
        except BaseException:
            self._remove_moved()
            raise
        # the moved files go in before the writer thread starts: it reads them at once (set afterwards,
        # a thread that ran first saw none and committed an empty append)
        super().__init__(root, rel, lambda: pa.table({}), paths=self.paths)

    def _remove_moved(self) -> None:
        for path in self.paths:
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)

    def _write(self, make_table: Callable[[], pa.Table]) -> tuple[Any, pa.Schema, list[Any]]:
        import pyarrow.parquet as pq
        from deltalake.transaction import AddAction

        dt = open_table(self.uri, storage_options=self.root.storage_options)
        scalars = [f.name for f in self._schema if not pa.types.is_list(f.type)
                   and not pa.types.is_fixed_size_list(f.type) and not pa.types.is_large_list(f.type)]
        actions = []
        start = 0
        for path in list(self.paths):
            if self._cancel.is_set():
                break
            name = os.path.basename(path)
            part = pq.read_table(path, columns=scalars).cast(pa.schema([self._schema.field(c) for c in scalars]))
            self.files.append((path, start, part.num_rows))
            start += part.num_rows
            self.checksums[name] = data_checksum(path)
            actions.append(AddAction(path=name, size=os.path.getsize(path), partition_values={},
                                     modification_time=int(time.time() * 1000), data_change=True,
                                     stats=json.dumps(file_stats(part), separators=(",", ":"))))
        return dt, self._schema, actions


class WrittenObjects(StagedAppend):
    """Parquet objects another writer (Spark's executors) put under the table's prefix of an object-store
    root, under names no commit uses, with what each holds (``written``: name, size, rows, checksum and
    Delta stats, as :class:`featurestore.engine.spark.objects.Written`): committed like a
    :class:`StagedAppend` in one commit; :meth:`discard` (or a failed commit) deletes them."""

    def __init__(self, root: Root, rel: str, written: Sequence[Any], schema: pa.Schema):
        if root.local:
            raise StorageError(f"{root.uri}: written objects belong to a store on object storage")
        self._schema = schema
        self._written = list(written)
        super().__init__(root, rel, lambda: pa.table({}), uploaded=[f"{rel}/{w.name}" for w in self._written])

    def _write(self, make_table: Callable[[], pa.Table]) -> tuple[Any, pa.Schema, list[Any]]:
        from deltalake.transaction import AddAction

        dt = open_table(self.uri, storage_options=self.root.storage_options)
        actions = []
        start = 0
        for w in self._written:
            self.files.append((self.root.uri_of(f"{self.rel}/{w.name}"), start, w.rows))
            start += w.rows
            self.checksums[w.name] = w.checksum
            actions.append(AddAction(path=w.name, size=w.size, partition_values={},
                                     modification_time=int(time.time() * 1000), data_change=True, stats=w.stats))
        return dt, self._schema, actions


class StagedBatches(StagedAppend):
    """Data files for one append that arrives in batches: :meth:`add` writes each batch's files at
    once (in the caller's thread), so only one batch need be in memory; then :meth:`commit` adds every
    file in one Delta commit, or :meth:`discard` deletes them all, as for a :class:`StagedAppend`.

    ``schema`` is the table's schema (every batch is in it).
    """

    def __init__(self, root: Root, rel: str, schema: pa.Schema, *, target_bytes: int | None = None):
        self.root, self.rel, self.uri = root, rel, root.uri_of(rel)
        self.target_bytes = TARGET_FILE_BYTES if target_bytes is None else target_bytes
        self.data_change = True
        self.paths, self.uploaded, self.files, self.checksums = [], [], [], {}
        self._done = False
        self._cancel = threading.Event()
        self._pool = ThreadPoolExecutor(max_workers=1)  # never used: commit and discard shut it down
        self._table_dir = root._path(rel) if root.local else str(root.cached(rel))
        self._run = uuid.uuid4()
        self._rows = 0
        self._actions: list[Any] = []
        self._future = Future()
        try:
            with translated(f"writing to {self.uri}", self.uri, root.storage_options):
                os.makedirs(self._table_dir, exist_ok=True)
                dt = open_table(self.uri, storage_options=root.storage_options)  # the version this append reads
        except BaseException as exc:
            self._future.set_exception(exc)
            raise
        self._future.set_result((dt, schema, self._actions))  # the actions list fills as batches arrive

    @property
    def rows(self) -> int:
        """Rows written so far."""
        return self._rows

    def add(self, table: pa.Table) -> list[tuple[str, int, int]]:
        """Write ``table`` (in the table's schema) as one or more data files now; returns them as
        (path, first row within the append, rows)."""
        if self._done:
            raise StorageError(f"{self.uri}: this staged append was already committed or discarded")
        before = len(self.files)
        with translated(f"writing to {self.uri}", self.uri, self.root.storage_options):
            self._actions += self._write_parts(table, self._table_dir, self._run, self._rows)
        self._rows += table.num_rows
        return self.files[before:]


def rows_per_file(table: pa.Table, target_bytes: int | None = None) -> int:
    """Rows per file so that each file is about ``target_bytes`` (Arrow size as the estimate; None: the
    module's ``TARGET_FILE_BYTES``)."""
    target_bytes = TARGET_FILE_BYTES if target_bytes is None else target_bytes
    if not table.num_rows:
        return 1
    per_row = max(table.nbytes / table.num_rows, 1.0)
    return max(1, int(target_bytes // per_row))


def _removals(replaces: Sequence[tuple[str, int]]) -> list[Any]:
    from deltalake.transaction import RemoveAction

    now = int(time.time() * 1000)
    return [RemoveAction(path=name, data_change=False, deletion_timestamp=now, size=size, partition_values={})
            for name, size in replaces]


def compact_files(root: Root, rel: str, files: list[str], schema: pa.Schema, *, target_bytes: int,
                  metadata: dict[str, str]) -> dict[str, int]:
    """Rewrite data files of table ``rel`` (``files``: local paths, or an object store's local copies,
    already verified against their checksums) into files of about ``target_bytes``, and commit the new
    files and the removal of the old ones as one commit (``dataChange`` false: the rows are the same)
    carrying ``metadata`` and the new files' checksums, as an insert's do. Until that commit no reader
    sees the new files; a failed commit deletes them (a killed one leaves them for ``vacuum``)."""
    import pyarrow.parquet as pq

    def rows() -> pa.Table:
        return pa.concat_tables([pq.read_table(f, schema=schema) for f in files]) if files else schema.empty_table()

    staged = StagedAppend(root, rel, rows, target_bytes=target_bytes, data_change=False)
    table_dir = root._path(rel) if root.local else str(root.cached(rel))
    staged.commit(metadata, replaces=[(os.path.relpath(f, table_dir).replace(os.sep, "/"), os.path.getsize(f))
                                      for f in files])
    return {"numFilesAdded": len(staged.files), "numFilesRemoved": len(files)}


def _iso(value: datetime | date) -> str:
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"
    return value.isoformat()


def _bounds(col: pa.ChunkedArray) -> tuple[Any, Any] | None:
    """JSON-ready (min, max) of a column for Delta stats, or None when it has none worth recording."""
    t = col.type
    if not (pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_string(t)
            or pa.types.is_large_string(t) or pa.types.is_date(t)
            or (pa.types.is_timestamp(t) and t.tz is not None)):
        return None
    if pa.types.is_floating(t) and pc.any(pc.is_nan(col)).as_py():
        return None  # NaN orders differently across engines: no bounds rather than wrong ones
    mm = pc.min_max(col)
    lo, hi = mm["min"].as_py(), mm["max"].as_py()
    if lo is None or hi is None:
        return None
    if isinstance(lo, float) and not (math.isfinite(lo) and math.isfinite(hi)):
        return None
    if isinstance(lo, datetime):  # millisecond stats: round the min down and the max up
        hi_ms = hi.replace(microsecond=hi.microsecond // 1000 * 1000)
        if hi_ms != hi:
            hi_ms += timedelta(milliseconds=1)
        return _iso(lo), _iso(hi_ms)
    if isinstance(lo, date):
        return _iso(lo), _iso(hi)
    if isinstance(lo, str):
        return lo[:_MAX_STAT_CHARS], (hi if len(hi) <= _MAX_STAT_CHARS else None)
    return lo, hi


def file_stats(table: pa.Table) -> dict[str, Any]:
    """Delta add-action statistics of one file's rows: numRecords, minValues, maxValues, nullCount."""
    mins: dict[str, Any] = {}
    maxs: dict[str, Any] = {}
    nulls: dict[str, int] = {}
    for name in table.column_names:
        col = table[name]
        b = _bounds(col)
        if b is None:
            continue
        nulls[name] = col.null_count
        mins[name] = b[0]
        if b[1] is not None:
            maxs[name] = b[1]
    return {"numRecords": table.num_rows, "minValues": mins, "maxValues": maxs, "nullCount": nulls}


def append(root: Root, rel: str, data: pa.Table, metadata: dict[str, str]) -> dict[str, Any]:
    """Append ``data`` as one atomic commit carrying ``metadata``; return that commit's info.

    The files are written with pyarrow and committed by deltalake (:class:`StagedAppend`).
    """
    StagedAppend(root, rel, lambda: data).commit(metadata)
    return commit_of_run(root, rel, metadata[META_PREFIX + "run_id"])
