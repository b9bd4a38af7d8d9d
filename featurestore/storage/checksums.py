"""Fast checksums for the files featurestore writes and reads back: data files and training caches.

xxh3-64 (the ``xxhash`` package) hashes a file in the page cache at about 20 GB/s here, against 3.5 GB/s
for CRC-32, so a check on the read path costs little: a 1M x 64-d vector file (256 MB) in about 12 ms.

* **Data files**: each insert and each ``compact`` records every file's checksum in its commit
  (``xxh3:<hex>``; commits made before carry a CRC-32). :func:`verify_data_files` checks a commit's
  files before they are read (``fg.read()``, ``store.sql()``'s views, training sets, ``materialize``;
  on an object store, the local copies they are read from), each file once per process: a file whose
  size, modification time and inode are unchanged since it verified is not hashed again, and the files
  this process wrote itself count as verified. A mismatch (a flipped byte, a truncated file) raises
  :class:`~featurestore.errors.CorruptData` naming the file.
* **Sealed files** (training caches): the checksum of the content is appended as a 16-byte trailer
  (:func:`seal`), written before the file is renamed into place, and checked when it is read
  (:func:`sealed_payload`).
"""

from __future__ import annotations

import contextlib
import json
import mmap
import os
import threading
from collections.abc import Iterable
from typing import Any

import xxhash

from featurestore.errors import CorruptData, StorageError
from featurestore.storage.delta import META_PREFIX, history
from featurestore.storage.fs import Root, file_crc32

CHECKSUMS = META_PREFIX + "checksums"  # commit metadata: {data file name: "xxh3:<hex>" (or an older CRC-32)}
_MAGIC = b"FSX3"
TRAILER = 16  # bytes: magic, 4 reserved, the xxh3-64 of everything before the trailer (big-endian)


def _hash_buffer(buf: Any) -> str:
    return xxhash.xxh3_64_hexdigest(buf)


def file_xxh3(path: str | os.PathLike[str], length: int | None = None) -> str:
    """The xxh3-64 of a file's first ``length`` bytes (default: all), as 16 hex digits."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size if length is None else length
        if size == 0:
            return _hash_buffer(b"")
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            view = memoryview(mm)
            try:
                return _hash_buffer(view[:size])
            finally:
                view.release()


def data_checksum(path: str) -> str:
    """The checksum recorded for a data file in its commit."""
    return "xxh3:" + file_xxh3(path)


def matches(path: str, want: str) -> bool:
    """Whether a file has the checksum ``want`` (``xxh3:<hex>``, or 8 hex digits of CRC-32)."""
    if want.startswith("xxh3:"):
        return file_xxh3(path) == want[5:]
    return file_crc32(path) == want


def bytes_match(data: Any, want: str) -> bool:
    """Whether a file's bytes (a buffer) have the checksum ``want`` (``xxh3:<hex>``, or a CRC-32)."""
    import zlib

    if want.startswith("xxh3:"):
        return bool(_hash_buffer(memoryview(data)) == want[5:])
    return f"{zlib.crc32(memoryview(data)) & 0xFFFFFFFF:08x}" == want


def verify_objects(root: Root, rel: str, uris: Iterable[str], what: str = "") -> None:
    """Check data objects of table ``rel`` themselves (not this machine's copies) against the checksums
    their commits recorded, reading each whole: :class:`CorruptData` naming the first that fails."""
    sums = recorded_checksums(root, rel, refresh=True)
    for uri in uris:
        want = sums.get(uri.rsplit("/", 1)[-1])
        if want and not bytes_match(root.read_bytes(root.rel_of(uri)), want):
            raise CorruptData(f"{what + ': ' if what else ''}data file {uri} does not match the checksum its "
                              f"commit recorded (damaged or truncated); restore it from a backup "
                              f"(`featurestore check` lists every damaged file)")


# ---- data files: verified once per process ------------------------------------------------------
_verified: dict[str, tuple[int, int, int]] = {}  # path -> (size, mtime_ns, inode) when it verified
_recorded: dict[str, tuple[frozenset[int], dict[str, str]]] = {}  # table -> (log versions read, checksums)
_lock = threading.Lock()


def _identity(path: str) -> tuple[int, int, int]:
    st = os.stat(path)
    return st.st_size, st.st_mtime_ns, st.st_ino


def mark_verified(path: str) -> None:
    """Remember that ``path`` holds what its checksum says (this process just wrote and hashed it)."""
    with contextlib.suppress(OSError), _lock:
        _verified[path] = _identity(path)


def recorded_checksums(root: Root, rel: str, *, refresh: bool = False,
                       commits: list[dict[str, Any]] | None = None) -> dict[str, str]:
    """Data file name -> the checksum its commit recorded, over the whole log (files written by other
    writers, or before checksums were recorded, are absent). Log entries are read once per process;
    ``commits``: the log's entries (:func:`history`) when the caller has just read them."""
    key = root.uri_of(rel)
    with _lock:
        seen, sums = _recorded.get(key, (frozenset(), {}))
    if seen and not refresh:
        return sums
    sums = dict(sums)
    for info in history(root, rel) if commits is None else commits:
        if info["version"] in seen:
            continue
        raw = info.get(CHECKSUMS)
        if raw:
            with contextlib.suppress(ValueError, TypeError):
                sums.update(json.loads(raw))
        seen = seen | {info["version"]}
    with _lock:
        _recorded[key] = (seen, sums)
    return sums


def verify_data_files(root: Root, rel: str, files: Iterable[str], what: str = "") -> None:
    """Check each data file of table ``rel`` (feature group ``what``, named in errors) against the
    checksum its commit recorded, unless it verified before in this process and is unchanged;
    :class:`CorruptData` naming the first that fails. On an object store ``files`` are the local copies
    (:meth:`Root.readable`): a copy that does not match is downloaded again once (the copy was damaged),
    and only an object that still does not match is an error, naming the object.
    Files with no recorded checksum (written by another tool) are not checked here."""
    todo = []
    for path in files:
        local = path.removeprefix("file://")
        if not root.local and "://" in local:
            local = str(root.cached(root.rel_of(local)))
        try:
            ident = _identity(local)
        except FileNotFoundError as exc:
            raise StorageError(f"data file {local} of {root.uri_of(rel)} is missing (deleted outside "
                               f"featurestore?)") from exc
        except OSError as exc:
            raise StorageError(f"cannot read data file {local}: {exc}") from exc
        if _verified.get(local) != ident:
            todo.append((local, ident))
    if not todo:
        return
    sums = recorded_checksums(root, rel)
    if any(os.path.basename(p) not in sums for p, _ in todo):
        sums = recorded_checksums(root, rel, refresh=True)  # commits made since we last read the log
    for local, ident in todo:
        want = sums.get(os.path.basename(local))
        if want is None:
            continue
        if not data_file_matches(root, local, want):
            name = local if root.local else root.uri_of(f"{rel}/{os.path.basename(local)}")
            raise CorruptData(
                f"{what + ': ' if what else ''}data file {name} does not match the checksum its commit "
                f"recorded ({os.path.getsize(local)} bytes: damaged or truncated); restore it from a backup "
                f"(`featurestore check` lists every damaged file)")
        with contextlib.suppress(OSError), _lock:  # as before hashing (a copy fetched again: as now)
            _verified[local] = ident if root.local else _identity(local)


def data_file_matches(root: Root, local: str, want: str) -> bool:
    """Whether a data file (on an object store: its local copy, fetched again once if it does not
    match) has the checksum ``want``."""
    try:
        if matches(local, want):
            return True
        if root.local:
            return False
        rel = os.path.relpath(local, root.local_dir).replace(os.sep, "/")
        root.download(rel, local)  # the local copy is derived: replace it, then judge the object
        return matches(local, want)
    except OSError as exc:
        raise StorageError(f"cannot read data file {local}: {exc}") from exc


# ---- sealed files: the checksum travels in a trailer ---------------------------------------------
def seal(path: str) -> None:
    """Append the trailer (magic and the xxh3-64 of the file's bytes) to a file just written."""
    digest = bytes.fromhex(file_xxh3(path))
    with open(path, "ab") as f:
        f.write(_MAGIC + b"\0\0\0\0" + digest)


def sealed_payload(path: str) -> tuple[mmap.mmap, int]:
    """A read-only map of a sealed file and the length of its content before the trailer, once the content
    matches the trailer's checksum; :class:`CorruptData` naming the file otherwise (an unsealed file, as
    written by older versions, counts as damaged). The caller closes the map."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size < TRAILER:
            raise CorruptData(f"{path} is truncated ({size} bytes)")
        mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    try:
        tail = mm[size - TRAILER:]
        if tail[:4] != _MAGIC:
            raise CorruptData(f"{path} has no checksum trailer (truncated, or written by an older version)")
        view = memoryview(mm)
        try:
            ok = _hash_buffer(view[:size - TRAILER]) == tail[8:].hex()
        finally:
            view.release()
        if not ok:
            raise CorruptData(f"{path} does not match its checksum (damaged on disk)")
    except BaseException:
        mm.close()
        raise
    return mm, size - TRAILER
