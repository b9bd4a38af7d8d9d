"""The store's root: a local folder, an object-store URI (``s3://bucket/prefix``, see
:mod:`.objectstore`) or any other URI that pyarrow and deltalake understand.

:class:`Root` is the one file-system abstraction of the package: small JSON documents (the registry of
specs, reports) are written through it atomically (to a temporary name, then renamed on local disk; one
PUT on an object store), and for an object-store root it also uploads and downloads whole files and keeps
local copies of the immutable data files in a cache folder (:meth:`Root.readable`), so DuckDB, the
engines and the online views read local files whatever the root.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import uuid
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs

from featurestore.errors import FeatureStoreError, StorageError
from featurestore.storage import objectstore


def is_uri(root: str) -> bool:
    return "://" in root


class Root:
    """A store root: resolves relative paths to URIs and reads and writes small documents."""

    def __init__(self, root: str | os.PathLike[str], storage_options: dict[str, str] | None = None):
        raw = os.fspath(root)
        #: the options given by the caller (a child process cannot be handed them safely)
        self.explicit_options = dict(storage_options or {})
        #: what deltalake gets: for an object store, the explicit options over the AWS variables (resolved)
        self.storage_options = dict(storage_options or {})
        #: local folder for copies of an object store's files (None for a local root)
        self.cache: Path | None = None
        if objectstore.is_object_store(raw):
            self.uri = "s3://" + raw.split("://", 1)[1].strip("/")
            bucket, prefix = objectstore.split(self.uri)
            self.storage_options = objectstore.resolve(self.uri, storage_options)
            self.fs = objectstore.filesystem(self.uri, self.storage_options)
            self.base = f"{bucket}/{prefix}".rstrip("/")
            self.local = False
            self.cache = objectstore.cache_dir(self.uri)
            return
        try:
            if is_uri(raw) and not raw.startswith("file://"):
                self.fs, self.base = pafs.FileSystem.from_uri(raw)
                self.uri = raw.rstrip("/")
                self.local = False
            else:
                path = Path(raw.removeprefix("file://")).expanduser().resolve()
                self.fs, self.base = pafs.LocalFileSystem(), str(path)
                self.uri = str(path)
                self.local = True
        except (OSError, ValueError) as exc:
            raise StorageError(f"cannot open store root {raw!r}: {exc}") from exc

    def __repr__(self) -> str:
        return f"Root({self.uri!r})"

    def uri_of(self, rel: str) -> str:
        return f"{self.uri}/{rel}" if rel else self.uri

    def _path(self, rel: str) -> str:
        return f"{self.base}/{rel}" if rel else self.base

    def error(self, what: str, exc: BaseException) -> StorageError:
        """The typed error for a failed storage request (for object stores: missing bucket, refused
        credentials and an unreachable endpoint each have their own class)."""
        if isinstance(exc, StorageError):
            return exc
        if self.local:
            return StorageError(f"{what}: {exc}")
        return objectstore.translate(self.uri, self.storage_options, what, exc)

    @contextmanager
    def translated(self, what: str) -> Iterator[None]:
        """Raise backend errors inside the block as :meth:`error` (FileNotFoundError passes through)."""
        try:
            yield
        except (FileNotFoundError, FeatureStoreError):
            raise
        except Exception as exc:  # pyarrow raises OSError, ArrowException and ValueError subclasses
            raise self.error(what, exc) from exc

    def check(self) -> None:
        """For an object-store root: one request that fails with a typed error naming the URL when the
        bucket is missing, the credentials are refused or the endpoint does not answer."""
        if self.local:
            return
        bucket = self.base.split("/", 1)[0]
        with self.translated(f"opening {self.uri}"):
            info = self.fs.get_file_info(bucket)
            if info.type == pafs.FileType.NotFound:
                raise objectstore.translate(self.uri, self.storage_options, f"opening {self.uri}",
                                            OSError("NoSuchBucket"))
            self.fs.get_file_info(pafs.FileSelector(self.base, allow_not_found=True))  # proves read access

    def exists(self, rel: str) -> bool:
        with self.translated(f"looking for {self.uri_of(rel)}"):
            return bool(self.fs.get_file_info(self._path(rel)).type != pafs.FileType.NotFound)

    def makedirs(self, rel: str) -> None:
        if not self.local:
            return  # object stores have no folders: a key's prefix exists once a key under it does
        try:
            self.fs.create_dir(self._path(rel), recursive=True)
        except OSError as exc:
            raise StorageError(f"cannot create the folder {self.uri_of(rel)}: {exc}") from exc

    def listdir(self, rel: str) -> list[str]:
        """Names directly under ``rel`` (empty when it does not exist)."""
        sel = pafs.FileSelector(self._path(rel), allow_not_found=True)
        with self.translated(f"cannot list the folder {self.uri_of(rel)}"):
            return sorted(info.base_name for info in self.fs.get_file_info(sel))

    def walk(self, rel: str) -> list[pafs.FileInfo]:
        """Every file under ``rel`` (recursively; empty when it does not exist), with size and mtime."""
        sel = pafs.FileSelector(self._path(rel), allow_not_found=True, recursive=True)
        with self.translated(f"cannot list the folder {self.uri_of(rel)}"):
            return [i for i in self.fs.get_file_info(sel) if i.type == pafs.FileType.File]

    def rel_of(self, path: str) -> str:
        """The root-relative name of a file info's path (see :meth:`walk`) or of a URI under the root."""
        for prefix in (self.uri + "/", self.base + "/"):
            if path.startswith(prefix):
                return path[len(prefix):]
        raise StorageError(f"{path} is not under the store root {self.uri}")

    def read_bytes(self, rel: str) -> bytes:
        with self.translated(f"cannot read {self.uri_of(rel)}"), self.fs.open_input_stream(self._path(rel)) as f:
            return bytes(f.read())

    def delete(self, rel: str) -> None:
        """Delete one file (nothing when it is gone already)."""
        try:
            with self.translated(f"cannot delete {self.uri_of(rel)}"):
                self.fs.delete_file(self._path(rel))
        except FileNotFoundError:
            pass

    def delete_tree(self, rel: str) -> None:
        """Delete a folder and everything under it (nothing when it is gone already)."""
        try:
            with self.translated(f"cannot delete {self.uri_of(rel)}"):
                self.fs.delete_dir(self._path(rel))
        except FileNotFoundError:
            pass

    def upload(self, local: str | os.PathLike[str], rel: str) -> None:
        """Copy a local file to ``rel`` (one object; readers see all of it or nothing)."""
        with self.translated(f"cannot upload {local} to {self.uri_of(rel)}"):
            pafs.copy_files(os.fspath(local), self._path(rel), source_filesystem=pafs.LocalFileSystem(),
                            destination_filesystem=self.fs)

    def download(self, rel: str, local: str | os.PathLike[str]) -> None:
        """Copy ``rel`` to a local file, atomically (a temporary name, then renamed into place)."""
        target = os.fspath(local)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        tmp = f"{target}.{uuid.uuid4().hex[:8]}.part"
        try:
            with self.translated(f"cannot download {self.uri_of(rel)}"):
                pafs.copy_files(self._path(rel), tmp, source_filesystem=self.fs,
                                destination_filesystem=pafs.LocalFileSystem())
            os.replace(tmp, target)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)

    def cached(self, rel: str) -> Path:
        """Where the local copy of ``rel`` lives (on a local root: ``rel`` itself)."""
        if self.cache is None:
            return Path(self._path(rel))
        return self.cache / "files" / rel if rel else self.cache / "files"

    @property
    def local_dir(self) -> str:
        """The local folder that mirrors the root: the root itself, or an object store's cache folder
        (where derived files such as the training caches live)."""
        return str(self.cached(""))

    def readable(self, uris: list[str]) -> list[str]:
        """Local paths to read the data files ``uris`` from: themselves on local disk; for an object
        store, copies in the cache folder, downloaded (in parallel) the first time. Data files are
        immutable (every write adds new, uniquely named files), so a copy never goes stale."""
        if self.local or not uris:
            return list(uris)
        local = [self.cached(self.rel_of(u)) for u in uris]
        missing = [(self.rel_of(u), p) for u, p in zip(uris, local, strict=True) if not p.exists()]
        if missing:
            with ThreadPoolExecutor(max_workers=min(8, len(missing))) as pool:
                list(pool.map(lambda m: self.download(*m), missing))
        return [str(p) for p in local]

    def read_json(self, rel: str) -> Any:
        """A JSON document; :class:`StorageError` naming the file when it is not valid JSON."""
        raw = self.read_bytes(rel)
        try:
            return json.loads(raw)
        except ValueError as exc:  # also UnicodeDecodeError
            raise StorageError(f"{self.uri_of(rel)} is not valid JSON: {exc}") from exc

    def write_bytes(self, rel: str, data: bytes) -> None:
        """Write a whole file atomically: readers see the old content or the new, never a part."""
        parent = rel.rsplit("/", 1)[0] if "/" in rel else ""
        try:
            if parent:
                self.makedirs(parent)
            if self.local:
                tmp = f"{self._path(rel)}.{uuid.uuid4().hex}.tmp"
                with open(tmp, "wb") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, self._path(rel))
            else:  # an object-store PUT is atomic
                with self.translated(f"cannot write {self.uri_of(rel)}"), \
                        self.fs.open_output_stream(self._path(rel)) as f:
                    f.write(data)
        except FeatureStoreError:
            raise
        except OSError as exc:
            raise StorageError(f"cannot write {self.uri_of(rel)}: {exc}") from exc

    def write_json(self, rel: str, doc: Any) -> None:
        self.write_bytes(rel, json.dumps(doc, indent=2, sort_keys=True, default=str).encode())


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this machine (a temporary folder named after a dead one is
    debris of a killed writer, safe to remove)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


def remove_dead_temporaries(folder: str, prefix: str) -> list[str]:
    """Remove ``folder``'s entries named ``<prefix><pid>-...`` whose process is gone; returns them."""
    removed: list[str] = []
    try:
        names = os.listdir(folder)
    except OSError:
        return removed
    for name in names:
        pid = name[len(prefix):].split("-", 1)[0] if name.startswith(prefix) else ""
        if pid.isdigit() and not pid_alive(int(pid)):
            shutil.rmtree(os.path.join(folder, name), ignore_errors=True)
            removed.append(os.path.join(folder, name))
    return removed


@contextlib.contextmanager
def exclusive(path: str) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` for the block, waiting for another holder to finish first. The
    lock is the kernel's (``flock``): it ends with its process, so a killed holder never leaves it stuck.
    The lock file exists only while it is held (the holder removes it; a waiter that then finds its file
    gone or replaced locks the new one), so the store is left as it was."""
    import fcntl

    os.makedirs(os.path.dirname(path), exist_ok=True)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                same = os.stat(path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
        except BaseException:
            os.close(fd)
            raise
        if same:
            break
        os.close(fd)  # the holder before us removed it: lock the current file
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            os.remove(path)
        with contextlib.suppress(OSError):
            os.rmdir(os.path.dirname(path))  # when no other lock is there
        os.close(fd)  # closing the last descriptor releases the lock


def file_crc32(path: str | os.PathLike[str]) -> str:
    """The CRC-32 of a file's bytes, as 8 hex digits (about 3.5 GB/s here): the checksum recorded for
    data files (in their commits) and for online-view files (in their manifests)."""
    crc = 0
    with open(path, "rb") as f:
        while chunk := f.read(8 << 20):
            crc = zlib.crc32(chunk, crc)
    return f"{crc:08x}"

