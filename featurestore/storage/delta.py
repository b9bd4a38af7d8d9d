"""Delta Lake tables through deltalake (delta-rs): create, append one atomic commit, open a version,
list commits. Every deltalake error is translated to the featurestore tree here."""

from __future__ import annotations

import contextlib
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

#: prefix of the commit-metadata keys that featurestore writes into Delta's commitInfo
META_PREFIX = "featurestore."


@contextlib.contextmanager
def translated(what: str) -> Iterator[None]:
    """Map deltalake and I/O errors raised inside the block to featurestore errors."""
    from deltalake.exceptions import CommitFailedError, DeltaError, TableNotFoundError

    try:
        yield
    except FeatureStoreError:
        raise
    except CommitFailedError as exc:
        raise CommitConflict(f"{what}: another writer committed first ({exc}); retry") from exc
    except TableNotFoundError as exc:
        raise StorageError(f"{what}: table not found ({exc})") from exc
    except (DeltaError, OSError) as exc:
        raise StorageError(f"{what}: {exc}") from exc


def create(uri: str, schema: pa.Schema, *, name: str, description: str,
           storage_options: dict[str, str] | None) -> None:
    from deltalake import DeltaTable

    with translated(f"creating table {uri}"):
        DeltaTable.create(uri, schema, mode="ignore", name=name, description=description,
                          storage_options=storage_options or None)


def open_table(uri: str, version: int | None = None, *, storage_options: dict[str, str] | None = None) -> Any:
    from deltalake import DeltaTable

    with translated(f"opening table {uri}"):
        dt = DeltaTable(uri, storage_options=storage_options or None)
        if version is not None:
            latest = dt.version()
            if not 0 <= version <= latest:
                raise CommitNotFound(f"{uri} has no commit {version} (commits 0..{latest})")
            if version != latest:
                dt.load_as_version(version)
        return dt


def append(uri: str, data: pa.Table, metadata: dict[str, str], *,
           storage_options: dict[str, str] | None = None) -> int:
    """Append ``data`` as one atomic commit carrying ``metadata``; return the new version number."""
    from deltalake import CommitProperties, write_deltalake

    with translated(f"committing to {uri}"):
        write_deltalake(
            uri, data, mode="append", storage_options=storage_options or None,
            commit_properties=CommitProperties(custom_metadata=metadata, max_commit_retries=15),
        )
        # The commit just written is the newest one carrying our run id: find it (other writers may
        # have committed after it already).
        dt = open_table(uri, storage_options=storage_options)
        run_id = metadata.get(META_PREFIX + "run_id")
        for entry in dt.history(limit=64):
            if entry.get(META_PREFIX + "run_id") == run_id:
                return int(entry["version"])
        return int(dt.version())


def history(dt: Any) -> list[dict[str, Any]]:
    """The table's commits, oldest first, each a dict from Delta's commitInfo plus ``version``."""
    with translated(f"reading history of {dt.table_uri}"):
        entries = dt.history()
    return sorted(entries, key=lambda e: e["version"])


def version_at(dt: Any, when: datetime) -> int:
    """The newest version committed at or before ``when`` (commit timestamps, millisecond resolution)."""
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    ms = int(when.timestamp() * 1000)
    best = None
    for entry in history(dt):
        if entry["timestamp"] <= ms:
            best = entry["version"]
    if best is None:
        raise CommitNotFound(f"{dt.table_uri} has no commit at or before {when.isoformat()}")
    return int(best)


def file_uris(dt: Any) -> list[str]:
    with translated(f"listing files of {dt.table_uri}"):
        return list(dt.file_uris())
