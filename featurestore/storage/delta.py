"""Delta Lake tables through deltalake (delta-rs): create, append one atomic commit, open a version,
list commits. Every deltalake error is translated to the featurestore tree here."""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa

from featurestore.errors import (
    CommitConflict,
    CommitNotFound,
    FeatureStoreError,
    StorageError,
)
from featurestore.storage import objectstore
from featurestore.storage.fs import Root

#: prefix of the commit-metadata keys that featurestore writes into Delta's commitInfo
META_PREFIX = "featurestore."


@contextlib.contextmanager
def translated(what: str, uri: str = "", storage_options: dict[str, str] | None = None) -> Iterator[None]:
    """Map deltalake and I/O errors raised inside the block to featurestore errors (for a table ``uri``
    on an object store, a missing bucket, refused credentials and a silent endpoint have their own)."""
    from deltalake.exceptions import CommitFailedError, DeltaError, TableNotFoundError

    try:
        yield
    except FeatureStoreError:
        raise
    except CommitFailedError as exc:
        raise CommitConflict(f"{what}: another writer committed first ({exc}); retry") from exc
    except TableNotFoundError as exc:
        raise StorageError(f"{what}: table not found ({exc})") from exc
    except (DeltaError, OSError, pa.ArrowException) as exc:  # a damaged data file is an Arrow error
        if objectstore.is_object_store(uri):
            raise objectstore.translate(uri, storage_options or {}, what, exc) from exc
        raise StorageError(f"{what}: {_first_lines(exc)}") from exc


def _first_lines(exc: BaseException) -> str:
    """The message of a deltalake error without the native backtrace it may carry."""
    lines = str(exc).splitlines()
    cut = next((i for i, line in enumerate(lines) if line.strip().startswith("0: ")), len(lines))
    return "\n".join(lines[:cut]).strip() or type(exc).__name__


def create(uri: str, schema: pa.Schema, *, name: str, description: str,
           storage_options: dict[str, str] | None) -> None:
    from deltalake import DeltaTable

    with translated(f"creating table {uri}", uri, storage_options):
        DeltaTable.create(uri, schema, mode="ignore", name=name, description=description,
                          storage_options=storage_options or None)


def open_table(uri: str, version: int | None = None, *, storage_options: dict[str, str] | None = None) -> Any:
    from deltalake import DeltaTable

    with translated(f"opening table {uri}", uri, storage_options):
        dt = DeltaTable(uri, storage_options=storage_options or None)
        if version is not None:
            latest = dt.version()
            if not 0 <= version <= latest:
                raise CommitNotFound(f"{uri} has no commit {version} (commits 0..{latest})")
            if version != latest:
                dt.load_as_version(version)
        return dt


def commit_of_run(root: Root, rel: str, run_id: str) -> dict[str, Any]:
    """The info of the commit carrying ``run_id``, searched newest first (others may have committed since)."""
    for version in reversed(_log_versions(root, rel)):
        info = _commit_info(root, rel, version)
        if info.get(META_PREFIX + "run_id") == run_id:
            return info
    raise StorageError(f"{root.uri_of(rel)}: the commit of run {run_id} was written but is not in the log")


_LOG_FILE = re.compile(r"^(\d{20})\.json$")


def _log_versions(root: Root, rel: str) -> list[int]:
    try:
        names = root.listdir(f"{rel}/_delta_log")
    except OSError as exc:
        raise StorageError(f"cannot list the log of {root.uri_of(rel)}: {exc}") from exc
    return sorted(int(m[1]) for n in names if (m := _LOG_FILE.match(n)))


def _log_entry(root: Root, rel: str, version: int) -> bytes:
    """The bytes of one commit's log entry. On an object store they come from the local cache: a log
    entry is created once (a conditional PUT) and never rewritten, so a copy is never stale."""
    name = f"{rel}/_delta_log/{version:020d}.json"
    if root.local:
        return root.read_bytes(name)
    with open(root.readable([root.uri_of(name)])[0], "rb") as f:
        return f.read()


def _commit_info(root: Root, rel: str, version: int) -> dict[str, Any]:
    raw = _log_entry(root, rel, version)
    for line in raw.splitlines():
        if b'"commitInfo"' in line:
            try:
                info = dict(json.loads(line)["commitInfo"])
            except (ValueError, KeyError, TypeError) as exc:
                raise StorageError(f"{root.uri_of(rel)}: commit {version} has an unreadable log entry") from exc
            info["version"] = version
            return info
    return {"version": version, "timestamp": 0, "operation": "UNKNOWN"}


def history(root: Root, rel: str) -> list[dict[str, Any]]:
    """The table's commits, oldest first: each commit's commitInfo plus ``version``.

    Read from the log files themselves (each named by its version), so a commit racing this call
    can never shift the numbering.
    """
    versions = _log_versions(root, rel)
    if not root.local:  # fetch the entries not cached yet in parallel, not one request after another
        root.readable([root.uri_of(f"{rel}/_delta_log/{v:020d}.json") for v in versions])
    return [_commit_info(root, rel, v) for v in versions]


def version_at(root: Root, rel: str, when: datetime) -> int:
    """The newest version committed at or before ``when`` (commit timestamps, millisecond resolution)."""
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    ms = int(when.timestamp() * 1000)
    best = None
    for entry in history(root, rel):
        if entry["timestamp"] <= ms:
            best = entry["version"]
    if best is None:
        raise CommitNotFound(f"{root.uri_of(rel)} has no commit at or before {when.isoformat()}")
    return int(best)


def file_uris(dt: Any) -> list[str]:
    with translated(f"listing files of {dt.table_uri}", dt.table_uri):
        return list(dt.file_uris())
