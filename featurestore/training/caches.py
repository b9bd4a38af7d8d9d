"""The training caches as a whole: what they hold (``featurestore cache``), pruning them, and the
post-commit hook that keeps them warm (vector copies of each insert, join caches of new commits)."""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from featurestore.catalog import Catalog
from featurestore.errors import CorruptData
from featurestore.feature_group import Committed, FeatureGroup
from featurestore.training.join_cache import JOIN_CACHE_DIR, join_cache_sources, open_join_cache, refresh_behind
from featurestore.training.vectors import CACHE_DIR, cache_inserted, cache_path, file_rows, load_sealed_npy
from featurestore.training.writer import flush_cache_writes


def install_training_hooks(catalog: Catalog) -> None:
    """Register the training caches' post-commit hook on ``catalog``'s feature groups."""

    def after_commit(fg: FeatureGroup, done: Committed) -> None:
        if done.files is not None and catalog.cache_vectors and fg.spec.vector_features:
            cache_inserted(catalog, f"{fg.name}/v{fg.version}", done.batch,
                           [f.name for f in fg.spec.vector_features], list(done.files))
        refresh_behind(catalog, fg, done.commit)

    def batch_staged(fg: FeatureGroup, batch: pa.Table, files: list[tuple[str, int, int]]) -> None:
        """A batched insert's batch: its vectors cached as its files are written (the commit has no
        batch in memory). The previous batch's copies are on disk first, so at most one batch waits."""
        if catalog.cache_vectors and fg.spec.vector_features:
            flush_cache_writes()
            cache_inserted(catalog, f"{fg.name}/v{fg.version}", batch,
                           [f.name for f in fg.spec.vector_features], files)

    def discarded(fg: FeatureGroup, paths: list[str]) -> None:
        """A failed insert's files are gone: so are their cached copies."""
        if catalog.cache_vectors and fg.spec.vector_features:
            with contextlib.suppress(Exception):  # never in place of the error that failed the insert
                flush_cache_writes()
            for path in paths:
                for f in fg.spec.vector_features:
                    target = cache_path(catalog, f"{fg.name}/v{fg.version}", path, f.name)
                    if target is not None:
                        with contextlib.suppress(OSError):  # a copy left behind is only an orphan
                            os.remove(target)

    catalog.hooks.after.append(after_commit)
    catalog.hooks.staged.append(batch_staged)
    catalog.hooks.discarded.append(discarded)


@dataclass(frozen=True)
class CacheUsage:
    """The training-set cache of one feature group version, of one kind (vector copies or join
    caches): files, bytes, and those whose data files are gone."""

    table: str  # "<name>/v<version> (vectors)" or "<name>/v<version> (joins)"
    files: int
    bytes: int
    orphans: int  # cache files whose Parquet data file no longer exists (e.g. after a vacuum)
    orphan_bytes: int


def _cache_entries(store: Catalog) -> dict[str, list[tuple[str, bool]]]:
    """"<name>/v<version> (<kind>)" -> [(cache file path, its data files still exist)] for a local
    store: the vector copies ("vectors") and the sorted join caches ("joins")."""
    out: dict[str, list[tuple[str, bool]]] = {}
    for kind, sub in (("vectors", CACHE_DIR), ("joins", JOIN_CACHE_DIR)):
        base = os.path.join(store.root.local_dir, sub)
        if not os.path.isdir(base):
            continue
        for name in sorted(os.listdir(base)):
            for version in sorted(os.listdir(os.path.join(base, name))):
                folder = os.path.join(base, name, version)
                if not version.removeprefix("v").isdigit() or not os.path.isdir(folder):
                    continue
                data = str(store.root.cached(store.table_path(name, int(version.removeprefix("v")))))
                entries = out.setdefault(f"{name}/{version} ({kind})", [])
                for f in sorted(os.listdir(folder)):
                    path = os.path.join(folder, f)
                    if f.endswith(".tmp"):  # being written, or left by a killed writer an hour ago or more
                        entries.append((path, time.time() - os.path.getmtime(path) < 3600))
                    elif kind == "joins":  # alive while every data file it was built from exists
                        built_from = join_cache_sources(path)
                        entries.append((path, built_from is not None and all(
                            os.path.exists(os.path.join(data, d)) for d in built_from)))
                    else:  # "<data file name without .parquet>.<column>[.valid].npy"
                        stem = f.removesuffix(".npy").removesuffix(".valid").rsplit(".", 1)[0]
                        entries.append((path, os.path.exists(os.path.join(data, f"{stem}.parquet"))))
    return out


def cache_usage(store: Catalog) -> list[CacheUsage]:
    """What the training-set cache holds, per feature group version and kind."""
    usage = []
    for table, entries in _cache_entries(store).items():
        sizes = [(os.path.getsize(p), alive) for p, alive in entries]
        usage.append(CacheUsage(table, len(sizes), sum(n for n, _ in sizes), sum(not a for _, a in sizes),
                                sum(n for n, a in sizes if not a)))
    return usage


def prune_cache(store: Catalog, *, everything: bool = False) -> tuple[int, int]:
    """Delete cache files whose data file is gone (``everything``: the whole cache); returns (files,
    bytes) deleted. Safe at any time: a missing cache file is decoded again when a training set needs it."""
    flush_cache_writes()
    files = size = 0
    for entries in _cache_entries(store).values():
        for path, alive in entries:
            if everything or not alive:
                with contextlib.suppress(FileNotFoundError):
                    n = os.path.getsize(path)
                    os.remove(path)
                    files, size = files + 1, size + n
    return files, size


def cache_problems(store: Catalog) -> list[tuple[str, str]]:
    """(file, what is wrong) for every training-cache file that cannot serve: one that does not match
    the checksum in its trailer, a vector copy that is not a float32 matrix with its data file's row
    count, a join cache that does not read as Arrow, or one whose data files are gone."""
    flush_cache_writes()
    out = []
    for table, entries in _cache_entries(store).items():
        for path, alive in entries:
            if path.endswith(".tmp"):
                continue
            if not alive:
                out.append((path, "its data file is gone (an orphan: `featurestore cache --prune`)"))
            elif table.endswith("(joins)"):
                try:
                    open_join_cache(path)
                except (CorruptData, OSError) as exc:
                    out.append((path, str(exc)))
            else:
                problem = _vector_copy_problem(store, table, path)
                if problem:
                    out.append((path, problem))
    return out


def _vector_copy_problem(store: Catalog, table: str, path: str) -> str | None:
    name, version = table.split(" ")[0].split("/")
    mask = path.endswith(".valid.npy")
    stem = os.path.basename(path).removesuffix(".npy").removesuffix(".valid").rsplit(".", 1)[0]
    data = os.path.join(store.root.cached(store.table_path(name, int(version.removeprefix("v")))), f"{stem}.parquet")
    try:
        rows = file_rows([data])[0]
    except (OSError, ValueError):  # the data file itself is damaged: the table's check reports it
        return None
    try:
        mat = load_sealed_npy(path, mmap=True)
    except CorruptData as exc:
        return str(exc)
    except (OSError, ValueError) as exc:
        return f"unreadable: {exc}"
    want = (np.bool_, 1) if mask else (np.float32, 2)
    if mat.dtype != want[0] or mat.ndim != want[1] or mat.shape[0] != rows:
        return f"holds {mat.dtype} {mat.shape}; its data file has {rows} rows"
    return None
