"""The store's root: a local folder or any URI that pyarrow and deltalake understand.

Small JSON documents (the registry of specs, reports) are written through :class:`Root`, atomically:
to a temporary name, then renamed (local disk) or put in one request (object stores).
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
import zlib
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs

from featurestore.errors import StorageError


def is_uri(root: str) -> bool:
    return "://" in root


class Root:
    """A store root: resolves relative paths to URIs and reads and writes small documents."""

    def __init__(self, root: str | os.PathLike[str], storage_options: dict[str, str] | None = None):
        raw = os.fspath(root)
        self.storage_options = dict(storage_options or {})
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

    def exists(self, rel: str) -> bool:
        return self.fs.get_file_info(self._path(rel)).type != pafs.FileType.NotFound

    def makedirs(self, rel: str) -> None:
        try:
            self.fs.create_dir(self._path(rel), recursive=True)
        except OSError as exc:
            raise StorageError(f"cannot create the folder {self.uri_of(rel)}: {exc}") from exc

    def listdir(self, rel: str) -> list[str]:
        """Names directly under ``rel`` (empty when it does not exist)."""
        sel = pafs.FileSelector(self._path(rel), allow_not_found=True)
        try:
            return sorted(info.base_name for info in self.fs.get_file_info(sel))
        except OSError as exc:
            raise StorageError(f"cannot list the folder {self.uri_of(rel)}: {exc}") from exc

    def read_bytes(self, rel: str) -> bytes:
        try:
            with self.fs.open_input_stream(self._path(rel)) as f:
                return bytes(f.read())
        except FileNotFoundError:
            raise
        except OSError as exc:
            raise StorageError(f"cannot read {self.uri_of(rel)}: {exc}") from exc

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
                with self.fs.open_output_stream(self._path(rel)) as f:
                    f.write(data)
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


def file_crc32(path: str | os.PathLike[str]) -> str:
    """The CRC-32 of a file's bytes, as 8 hex digits (about 3.5 GB/s here): the checksum recorded for
    data files (in their commits) and for online-view files (in their manifests)."""
    crc = 0
    with open(path, "rb") as f:
        while chunk := f.read(8 << 20):
            crc = zlib.crc32(chunk, crc)
    return f"{crc:08x}"

