"""Vectors for training sets, fetched by row position instead of carried through the joins.

Decoding a Parquet list column is the dominant cost of a point-in-time join over embeddings, and
carrying 256-byte vectors through DuckDB's dedupe, ASOF joins and sort multiplies it. So the joins
run on narrow rows (keys, times, a row position) and the vectors of the matched rows are gathered at
the end with ``numpy.take`` from each data file's decoded ``float32[rows, dim]`` matrix.

Delta data files are immutable, so a decoded matrix is valid for as long as its file exists: for a
local store it is kept as ``<root>/_cache/vectors/<name>/v<version>/<file>.<column>.npy`` (written
atomically, memory-mapped on reuse), and a second training set over the same commits decodes nothing.
The cache files are written behind, by one background thread, so the first training set does not wait
for ~256 bytes x rows of disk writes per vector column (the interpreter waits for them at exit;
:func:`flush_cache_writes` waits explicitly). Delete the ``_cache`` folder at any time to reclaim the space.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from featurestore.catalog import Catalog
from featurestore.errors import CorruptData, StorageError
from featurestore.storage import npy
from featurestore.storage.checksums import seal, sealed_payload, verify_data_files
from featurestore.storage.objectstore import is_object_store
from featurestore.training.writer import write_behind

CACHE_DIR = "_cache/vectors"
log = logging.getLogger("featurestore.training")


def _write_behind(path: str, array: np.ndarray) -> None:
    """Queue ``array`` to be saved at ``path`` by the cache writer thread."""
    write_behind(_save_atomic, path, array)


def cache_path(store: Catalog, table: str, file: str, column: str) -> str | None:
    """Where the decoded ``column`` of data ``file`` of ``table`` ("<name>/v<version>") is cached
    (a store on object storage keeps it in its local cache folder)."""
    base = os.path.basename(file).removesuffix(".parquet")
    return os.path.join(store.root.local_dir, CACHE_DIR, table, f"{base}.{column}.npy")


def cache_inserted(store: Catalog, table: str, batch: pa.Table, columns: list[str],
                   files: list[tuple[str, int, int]]) -> None:
    """Queue the cache files of data files an insert just committed, from the batch in memory: the first
    training set over a new commit then decodes nothing. ``files``: (path, first row, row count) of each
    file in ``batch``; ``columns``: the vector columns (``FixedSizeList<float32>``, as conformed)."""
    if not files:
        return
    for column in columns:
        col = batch[column]  # a one-chunk column as it is: combine_chunks would copy it (0.4 s at 1M x 64-d)
        arr = col.chunk(0) if col.num_chunks == 1 else col.combine_chunks()
        if arr.null_count or not pa.types.is_fixed_size_list(arr.type):  # conform forbids both
            continue
        mat = arr.flatten().to_numpy(zero_copy_only=False).reshape(len(arr), arr.type.list_size)
        for path, start, count in files:
            target = cache_path(store, table, path, column)
            assert target is not None
            _write_behind(target, np.ascontiguousarray(mat[start:start + count], dtype=np.float32))


def file_rows(files: list[str]) -> list[int]:
    """Row count of each Parquet file (from its footer)."""
    import pyarrow.parquet as pq

    return [pq.ParquetFile(f).metadata.num_rows for f in files]


@dataclass
class VectorColumn:
    """One vector column of one commit: its files' decoded matrices, addressed by global row position
    (file offset + row within the file, files in the commit's order)."""

    store: Catalog
    table: str  # "<name>/v<version>"
    column: str
    dim: int
    files: list[str]
    offsets: np.ndarray  # start position of each file; len(files) + 1 entries
    _mats: list[np.ndarray | None] = field(default_factory=list)
    _valid: list[np.ndarray | None] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self._mats = [None] * len(self.files)
        self._valid = [None] * len(self.files)

    def _cache_path(self, file: str) -> str | None:
        return cache_path(self.store, self.table, file, self.column)

    def _load(self, i: int) -> None:
        path = self._cache_path(self.files[i])
        if path and os.path.exists(path):
            mat, valid = self._load_cached(path)
            if mat is not None and mat.shape == (self.offsets[i + 1] - self.offsets[i], self.dim):
                if int(self.offsets[-1]) * self.dim * 4 <= _memory_bytes() // 8:  # else fault on demand
                    _prefault(mat)
                self._mats[i], self._valid[i] = mat, valid
                return
        name, version = self._group()
        file = self.files[i]
        if is_object_store(file):  # an object URI (a cluster engine's join): its local copy
            file = self.store.root.readable([file])[0]
        verify_data_files(self.store.root, self.store.table_path(name, version), [file], f"{name}:{version}")
        mat, valid = self._decode(file)
        if path:  # the mask first: a matrix on disk without its mask would read as all-valid
            if valid is not None:
                _write_behind(path.removesuffix(".npy") + ".valid.npy", valid)
            _write_behind(path, mat)
        self._mats[i], self._valid[i] = mat, valid

    def _group(self) -> tuple[str, int]:
        name, version = self.table.split("/")
        return name, int(version.removeprefix("v"))

    def _load_cached(self, path: str) -> tuple[np.ndarray | None, np.ndarray | None]:
        """A cache file (and its validity mask), each checked against its checksum; (None, None) when
        one is damaged or unreadable: it is decoded again from the data file and rewritten (a warning says
        which), since a cache is only a speed-up and must never give a wrong vector."""
        vpath = path.removesuffix(".npy") + ".valid.npy"
        try:
            mat = load_sealed_npy(path, mmap=True)
            valid = load_sealed_npy(vpath, mmap=False) if os.path.exists(vpath) else None
        except (CorruptData, OSError, ValueError) as exc:
            log.warning("training cache %s is damaged (%s): decoding %s again and rewriting it",
                        path, exc, self.table)
            return None, None
        return mat, valid

    def _decode(self, file: str) -> tuple[np.ndarray, np.ndarray | None]:
        """One file's vectors as a float32[rows, dim] matrix (and a validity mask when some are null).
        Read with pyarrow (about half DuckDB's CPU for a list column) from the local file (on object
        storage, the cached copy)."""
        import pyarrow.parquet as pq

        try:
            table = pq.ParquetFile(file).read(columns=[self.column], use_threads=False).rename_columns(["v"])
        except (OSError, pa.ArrowException) as exc:
            raise StorageError(f"cannot read {self.column} of {self.table} from {file}: {exc}") from exc
        arr = table.column("v").combine_chunks() if table.num_rows else pa.array([], pa.list_(pa.float32()))
        offsets = arr.offsets.to_numpy()
        if arr.null_count == 0 and np.all(np.diff(offsets) == self.dim):
            values = arr.values.slice(offsets[0], offsets[-1] - offsets[0])
            mat = values.to_numpy(zero_copy_only=False).reshape(-1, self.dim)
            return np.ascontiguousarray(mat, dtype=np.float32), None
        # nulls (or a ragged vector, which the spec forbids): one row at a time, null -> zeros + mask
        valid = np.asarray(arr.is_valid().to_numpy(zero_copy_only=False))
        mat = np.zeros((len(arr), self.dim), np.float32)
        for i in np.nonzero(valid)[0]:
            row = arr[int(i)].values.to_numpy(zero_copy_only=False)
            mat[i, : min(len(row), self.dim)] = row[: self.dim]
        return mat, valid

    def prepare(self, threads: int = 2) -> None:
        """Make sure every file's matrix is loaded (decoding missing ones, in parallel)."""
        todo = [i for i, m in enumerate(self._mats) if m is None]
        if not todo:
            return
        with self._lock:
            todo = [i for i in todo if self._mats[i] is None]
            if len(todo) == 1 or threads <= 1:
                for i in todo:
                    self._load(i)
            else:
                with ThreadPoolExecutor(max_workers=threads) as pool:
                    list(pool.map(self._load, todo))

    def take(self, positions: pa.Array | pa.ChunkedArray) -> pa.FixedSizeListArray:
        """The vectors at ``positions`` (int64; null -> null vector) as ``FixedSizeList<float32>[dim]``."""
        if isinstance(positions, pa.ChunkedArray):
            positions = positions.combine_chunks()
        n = len(positions)
        valid = validity(positions)
        pos = ints(positions)
        if positions.null_count:
            pos = np.where(valid, pos, 0)  # the slots under nulls hold anything
        if not len(self.files):
            valid[:] = False
        out = np.empty((n, self.dim), np.float32)  # every row is written below: gathered or zeroed
        out[~valid] = 0
        if n and len(self.files) and self.dim:
            self.prepare()
            rows = np.nonzero(valid)[0]
            which = np.searchsorted(self.offsets, pos[rows], side="right") - 1
            if len(self.files) < 1 << 15:  # numpy sorts 16-bit integers by radix: linear time
                which = which.astype(np.int16)
            order = np.argsort(which, kind="stable")  # output rows grouped by file
            rows, which = rows[order], which[order]
            bounds = np.searchsorted(which, np.arange(len(self.files) + 1))
            # rows as opaque dim*4-byte items: numpy copies each with one memcpy, about 1.5x faster
            # than indexing a 2-d float32 array by row
            item = np.dtype((np.void, self.dim * 4))
            out_items = out.view(item).reshape(n)
            for f in range(len(self.files)):
                sel = rows[bounds[f]:bounds[f + 1]]
                if not len(sel):
                    continue
                local = pos[sel] - self.offsets[f]
                mat = self._mats[f]
                assert mat is not None
                out_items[sel] = np.ascontiguousarray(mat).view(item).reshape(len(mat))[local]
                file_valid = self._valid[f]
                if file_valid is not None:
                    valid[sel] &= file_valid[local]
                    out[sel[~file_valid[local]]] = 0
        mask = None if valid.all() else booleans(~valid)
        return pa.FixedSizeListArray.from_arrays(from_numpy(out.reshape(-1)), self.dim, mask=mask)


# Arrow <-> numpy through the buffers: ``Array.to_numpy`` and ``pa.array`` import pandas when it is
# installed (0.3 s, most of a fresh process's first training set), and nothing here needs it.
def validity(arr: pa.Array) -> np.ndarray:
    """``arr``'s validity as a bool array."""
    if not arr.null_count:
        return np.ones(len(arr), bool)
    bits = np.frombuffer(arr.buffers()[0], np.uint8)
    return np.unpackbits(bits, count=arr.offset + len(arr), bitorder="little")[arr.offset:].astype(bool)


def ints(arr: pa.Array) -> np.ndarray:
    """An int32/int64 array's values as a (zero-copy) numpy array; what the slots of nulls hold is
    undefined."""
    dtype = {pa.int32(): np.int32, pa.int64(): np.int64}.get(arr.type)
    if dtype is None:
        raise TypeError(f"expected an int32/int64 array; got {arr.type}")
    width = np.dtype(dtype).itemsize
    return np.frombuffer(arr.buffers()[1], dtype, count=len(arr), offset=arr.offset * width)


def from_numpy(values: np.ndarray) -> pa.Array:
    """A contiguous 1-d float32/int64 numpy array as an Arrow array over the same memory."""
    kind = {np.dtype(np.float32): pa.float32(), np.dtype(np.int64): pa.int64()}[values.dtype]
    return pa.Array.from_buffers(kind, len(values), [None, pa.py_buffer(values)])


def booleans(values: np.ndarray) -> pa.BooleanArray:
    """A bool numpy array as an Arrow BooleanArray."""
    bits = np.packbits(np.asarray(values, bool), bitorder="little")
    return pa.Array.from_buffers(pa.bool_(), len(values), [None, pa.py_buffer(bits)])


def _prefault(mat: np.ndarray) -> None:
    """Map every page of a memory-mapped matrix now (this runs in the background while DuckDB joins),
    so the gather afterwards does not stop on a page fault every 4 KiB."""
    mm = getattr(mat, "_mmap", None)
    if mm is not None:
        with contextlib.suppress(OSError, ValueError, AttributeError):
            mm.madvise(_MADV_POPULATE_READ)
            return
    flat = mat.reshape(-1).view(np.uint8) if mat.size else None
    if flat is not None:
        int(flat[::4096].sum())


_MADV_POPULATE_READ = 22  # Linux >= 5.14; older kernels raise EINVAL and the pages are touched instead


def _memory_bytes() -> int:
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return 8 << 30


def _save_atomic(path: str, array: np.ndarray) -> None:
    """Write ``array`` as a sealed ``.npy`` file (its checksum in a trailer), atomically."""
    tmp = f"{path}.{uuid.uuid4().hex}.tmp"
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(tmp, "wb") as f:
            np.save(f, array)
        seal(tmp)
        os.replace(tmp, path)
    except OSError:  # a cache that cannot be written is only a missed speed-up
        with contextlib.suppress(OSError):
            os.remove(tmp)


def load_sealed_npy(path: str, *, mmap: bool) -> np.ndarray:
    """A ``.npy`` cache file once its content matches its checksum (:class:`CorruptData` otherwise);
    memory-mapped with ``mmap``. numpy reads the array's bytes only and ignores the trailer after them."""
    mm, _ = sealed_payload(path)  # hashing it also brings its pages into the page cache
    mm.close()
    return npy.mapped(path) if mmap else npy.load(path)
