"""Events on an object store (``s3://bucket/events/*.parquet``): the Parquet files behind a path, glob or
prefix, opened as a pyarrow dataset over pyarrow's S3 client with the store's credential and endpoint
handling (:mod:`featurestore.storage.objectstore`). DuckDB scans the dataset as a stream of Arrow
batches, reading only the columns and row groups a query needs, so no file is downloaded whole first
(DuckDB's own ``httpfs`` extension is not needed)."""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from typing import Any

from featurestore.errors import EventsError
from featurestore.storage import objectstore

_GLOB = "*?["


def is_remote(path: str) -> bool:
    """Whether ``path`` names an object store (``s3://``, ``s3a://``)."""
    return objectstore.is_object_store(path)


def parquet_dataset(uri: str, storage_options: Mapping[str, str] | None = None) -> Any:
    """A ``pyarrow.dataset.Dataset`` of the Parquet files ``uri`` names: one file, every ``*.parquet``
    under a prefix, or the files matching a glob (``*``, ``?``, ``[...]`` in the key; ``**`` crosses
    folders). Raises :class:`EventsError` when nothing matches, and the storage errors of
    :func:`featurestore.storage.objectstore.translate` when the store refuses or does not answer."""
    import pyarrow.dataset as ds
    import pyarrow.fs as pafs

    opts = objectstore.resolve(uri, dict(storage_options) if storage_options else None)
    fs = objectstore.filesystem(uri, opts)
    bucket, key = objectstore.split(uri)
    try:
        files = _files(fs, pafs, bucket, key)
        if not files:
            raise EventsError(f"no events file matches {uri!r}")
        return ds.dataset(files, format="parquet", filesystem=fs)
    except OSError as exc:
        raise objectstore.translate(uri, opts, f"reading events from {uri}", exc) from exc
    except Exception as exc:  # pyarrow.ArrowInvalid: not Parquet
        if isinstance(exc, EventsError):
            raise
        raise EventsError(f"cannot read events from {uri}: {exc}") from exc


def _files(fs: Any, pafs: Any, bucket: str, key: str) -> list[str]:
    """The object paths (``bucket/key``) of the Parquet files a key, prefix or glob names, sorted."""
    parts = key.split("/")
    first = next((n for n, p in enumerate(parts) if any(c in p for c in _GLOB)), None)
    if first is None:
        info = fs.get_file_info(f"{bucket}/{key}" if key else bucket)
        if info.type == pafs.FileType.File:
            return [info.path]
        if info.type == pafs.FileType.NotFound:
            return []
        base, pattern = "/".join(parts), None
    else:
        base, pattern = "/".join(parts[:first]), key
    listed = fs.get_file_info(pafs.FileSelector(f"{bucket}/{base}".rstrip("/"), recursive=True,
                                                allow_not_found=True))
    out = []
    for info in listed:
        if info.type != pafs.FileType.File:
            continue
        rel = info.path[len(bucket) + 1:]
        if pattern is None:
            if rel.endswith(".parquet"):
                out.append(info.path)
        elif _match(rel, pattern):
            out.append(info.path)
    return sorted(out)


def _match(path: str, pattern: str) -> bool:
    """Glob match where ``*`` and ``?`` stay within a folder and ``**`` crosses folders."""
    p, q = path.split("/"), pattern.split("/")
    if "**" not in q:
        return len(p) == len(q) and all(fnmatch.fnmatchcase(a, b) for a, b in zip(p, q))
    i = q.index("**")
    head, tail = q[:i], q[i + 1:]
    if len(p) < len(head) + len(tail):
        return False
    return (all(fnmatch.fnmatchcase(a, b) for a, b in zip(p[:len(head)], head))
            and all(fnmatch.fnmatchcase(a, b) for a, b in zip(p[len(p) - len(tail):], tail)))
