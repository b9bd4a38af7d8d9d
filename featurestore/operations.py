"""Store upkeep: ``vacuum`` (delete what is older than a retention period), ``compact`` (merge small data
files) and ``check`` (verify every table, view, cache and saved training set; repair what is derived).

Each is safe by default: ``vacuum`` and ``compact`` only report what they would do unless told to act
(``dry_run=False``), and name every file they remove. Nothing a pin needs is ever removed: a saved
training set pins (feature group, version, commit), and so does a running server for the views it
serves (a lease file beside the views, see :func:`featurestore.online.build.lease`). ``check`` never
touches committed data; with ``repair`` it rebuilds derived files (online views, caches) that fail.

Example::

    report = store.vacuum(retain=timedelta(days=7))          # dry run: what would be deleted
    store.vacuum(retain=timedelta(days=7), dry_run=False)    # delete it
    problems = store.check()                                 # [] when everything verifies
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from featurestore.catalog import Catalog
from featurestore.errors import CorruptData, FeatureStoreError, InvalidData, StorageError
from featurestore.feature_group import FeatureGroup, storage_schema
from featurestore.online import build as views
from featurestore.online import remote
from featurestore.online.integrity import verify
from featurestore.online.view import OnlineView
from featurestore.storage import delta
from featurestore.storage.checksums import CHECKSUMS, data_file_matches, recorded_checksums
from featurestore.storage.delta import META_PREFIX
from featurestore.storage.staging import compact_files
from featurestore.training import list_training_sets, load_training_set, prune_cache
from featurestore.training.caches import cache_problems
from featurestore.training.saved import saved_versions


@dataclass
class Upkeep:
    """What an upkeep operation did (or, in a dry run, would do)."""

    operation: str
    dry_run: bool
    removed: list[str] = field(default_factory=list)      # paths deleted (or that would be)
    kept: list[str] = field(default_factory=list)         # what was kept and why (pins, leases)
    compacted: dict[str, Any] = field(default_factory=dict)  # group -> optimize metrics
    bytes: int = 0

    def summary(self) -> str:
        verb = "would remove" if self.dry_run else "removed"
        lines = [f"{self.operation}: {verb} {len(self.removed)} file(s)/folder(s), {self.bytes / 1e6:.1f} MB"
                 + (" (dry run: pass --apply to do it)" if self.dry_run else "")]
        lines += [f"  {verb}: {p}" for p in self.removed[:50]]
        if len(self.removed) > 50:
            lines.append(f"  ... and {len(self.removed) - 50} more")
        lines += [f"  kept: {k}" for k in self.kept]
        lines += [f"  {g}: {m}" for g, m in self.compacted.items()]
        return "\n".join(lines)


def _size(path: str) -> int:
    p = Path(path)
    if p.is_dir():
        return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
    return p.stat().st_size if p.exists() else 0


def _pins(catalog: Catalog) -> dict[tuple[str, int], dict[int, str]]:
    """(name, version) -> {commit: who pins it}: saved training sets' pins."""
    out: dict[tuple[str, int], dict[int, str]] = {}
    for saved in list_training_sets(catalog):
        for ref, commit in saved.pins.items():
            name, _, version = ref.partition(":")
            out.setdefault((name, int(version)), {})[int(commit)] = f"training set {saved.name} v{saved.version}"
    return out


def vacuum(catalog: Catalog, retain: timedelta = timedelta(days=7), *, dry_run: bool = True) -> Upkeep:
    """Delete what is older than ``retain``: data files no commit within it needs (and files a killed
    insert left), online views of older commits, build leftovers and orphaned cache files. Commits that
    a saved training set pins, and views a running server serves, are kept and named."""
    if not isinstance(retain, timedelta) or retain < timedelta(0):
        raise InvalidData(f"retain must be a non-negative timedelta; got {retain!r}")
    report = Upkeep("vacuum", dry_run)
    pins = _pins(catalog)
    for spec in catalog.specs():
        fg = catalog.feature_group(spec.name, spec.version)
        pinned = pins.get((spec.name, spec.version), {})
        _vacuum_table(fg, retain, pinned, report)
        _vacuum_views(fg, retain, report)
    if not dry_run:
        files, size = prune_cache(catalog)
        if files:
            report.removed.append(f"{files} orphaned training-cache file(s)")
            report.bytes += size
    return report


def _vacuum_table(fg: FeatureGroup, retain: timedelta, pinned: dict[int, str], report: Upkeep) -> None:
    dt = delta.open_table(fg.uri, storage_options=fg.root.storage_options)
    hours = max(0, int(retain.total_seconds() // 3600))
    with delta.translated(f"vacuuming {fg.uri}", fg.uri, fg.root.storage_options):
        files = dt.vacuum(retention_hours=hours, dry_run=True, enforce_retention_duration=False, full=True,
                          keep_versions=sorted(pinned) or None)
    for commit, who in sorted(pinned.items()):
        report.kept.append(f"{fg.spec.key} commit {commit}: pinned by {who}")
    paths = [f if f.startswith(("/", "s3://")) else f"{fg.uri}/{f}" for f in files]
    report.bytes += sum(_size(p) for p in paths) if fg.root.local else 0
    report.removed.extend(paths)
    if not report.dry_run and files:
        with delta.translated(f"vacuuming {fg.uri}", fg.uri, fg.root.storage_options):
            dt.vacuum(retention_hours=hours, dry_run=False, enforce_retention_duration=False, full=True,
                      keep_versions=sorted(pinned) or None)
    if not report.dry_run and not fg.root.local:
        _prune_cached_copies(fg, report)


def _prune_cached_copies(fg: FeatureGroup, report: Upkeep) -> None:
    """A store on object storage: delete this machine's cached copies of data files the bucket no longer has."""
    folder = fg.root.cached(fg.rel)
    if not folder.is_dir():
        return
    stored = set(fg.root.listdir(fg.rel))
    gone = [p for p in folder.iterdir() if p.is_file() and p.suffix == ".parquet" and p.name not in stored]
    size = sum(p.stat().st_size for p in gone)
    for p in gone:
        p.unlink(missing_ok=True)
    if gone:
        report.removed.append(f"{len(gone)} cached cop(ies) of deleted data files of {fg.spec.key} in {folder}")
        report.bytes += size


def _vacuum_views(fg: FeatureGroup, retain: timedelta, report: Upkeep) -> None:
    """Views are caches (training sets read the tables): the newest commit's and the served ones stay."""
    root = views.views_dir(fg)
    newest = fg.commit_of()
    if not fg.root.local:
        _vacuum_uploaded_views(fg, newest, retain, report)
    if not root.is_dir():
        return
    served = views.served_commits(fg)
    cutoff = time.time() - retain.total_seconds()
    for commit in views.list_views(fg):
        path = views.view_path(fg, commit)
        if commit == newest or commit in served or path.stat().st_mtime > cutoff:
            if commit in served and commit != newest:
                report.kept.append(f"{fg.spec.key} view of commit {commit}: served by a running server")
            continue
        _remove(path, report)
    for p in root.iterdir():  # leftovers of builds that died and of replaced views
        if p.name.startswith((".build-", ".old-")) and p.stat().st_mtime < cutoff:
            _remove(p, report)


def _vacuum_uploaded_views(fg: FeatureGroup, newest: int, retain: timedelta, report: Upkeep) -> None:
    """A store on object storage: uploaded views of older commits built before the retention period.
    Servers serve local copies, so deleting an uploaded view never pulls one from under a server."""
    cutoff = time.time() - retain.total_seconds()
    for commit in remote.remote_views(fg):
        manifest = remote.remote_manifest(fg, commit) or {}
        try:
            built = datetime.fromisoformat(str(manifest.get("built_at"))).timestamp()
        except ValueError:
            built = 0.0
        if commit == newest or built > cutoff:
            continue
        uri = fg.root.uri_of(f"{fg.rel}/{remote.ONLINE_DIR}/c{commit}")
        report.removed.append(uri)
        if not report.dry_run:
            remote.delete(fg, commit)
    for folder, mtime in remote.stray_builds(fg):  # uploads that died midway, builds replaced by others
        if mtime < cutoff:
            report.removed.append(fg.root.uri_of(folder))
            if not report.dry_run:
                fg.root.delete_tree(folder)


def _remove(path: Path, report: Upkeep) -> None:
    report.removed.append(str(path))
    report.bytes += _size(str(path))
    if not report.dry_run:
        shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)


def compact(catalog: Catalog, *, target_size: int = 256 << 20, dry_run: bool = True) -> Upkeep:
    """Merge each feature group's small data files into files of about ``target_size`` bytes (as Delta
    optimize does: one new commit per group, the rows unchanged, ``dataChange`` false). The small files
    are verified against their checksums first (a damaged one is a :class:`CorruptData`, never
    rewritten), and the new files' checksums are recorded in the commit, as an insert's are, so reads
    and ``check`` verify them. A dry run names the groups and files."""
    report = Upkeep("compact", dry_run)
    for spec in catalog.specs():
        fg = catalog.feature_group(spec.name, spec.version)
        small = [f for f in fg.files() if _size(f) < target_size] if fg.root.local else fg.file_uris()
        if len(small) < 2:
            continue
        if dry_run:
            report.compacted[spec.key] = f"{len(small)} small file(s) would be merged"
            continue
        if not fg.root.local:  # the local copies (verified below), to read and measure
            small = [f for f in fg.files(verify=False) if _size(f) < target_size]
            if len(small) < 2:
                continue
        fg.verify_files(small)  # a damaged file is refused, never rewritten under a new checksum
        report.compacted[spec.key] = compact_files(
            fg.root, fg.rel, small, storage_schema(fg.spec), target_bytes=target_size,
            metadata={META_PREFIX + "run_id": uuid.uuid4().hex, META_PREFIX + "operation": "compact",
                      META_PREFIX + "row_count": "0"})
    return report


@dataclass(frozen=True)
class Problem:
    """One thing ``check`` found wrong, and what ``repair`` did about it."""

    what: str      # "table", "view", "cache", "training set"
    where: str     # the file or folder
    detail: str
    repaired: bool = False

    def __str__(self) -> str:
        return f"{self.what} {self.where}: {self.detail}" + (" (repaired)" if self.repaired else "")


def check(catalog: Catalog, *, repair: bool = False) -> list[Problem]:
    """Verify every feature group's log and data files (the checksum each commit recorded, compactions
    included, and that every page decodes; on an object store the local copies, a damaged copy fetched
    again; that each commit's files hold the rows it states), every online view and
    cache against its checksums, and every saved training set against its manifest's sha256. With
    ``repair``, damaged views are rebuilt and damaged cache files deleted (rebuilt on use); committed
    data and saved training sets are never changed, only reported."""
    problems: list[Problem] = []
    for spec in catalog.specs():
        fg = catalog.feature_group(spec.name, spec.version)
        problems += _check_table(fg)
        problems += _check_views(fg, repair)
    problems += [Problem("cache", path, detail, repaired=repair and _delete(path))
                 for path, detail in cache_problems(catalog)]
    for name, version in saved_versions(catalog):
        try:
            load_training_set(catalog, name, version).verify()
        except FeatureStoreError as exc:
            problems.append(Problem("training set", f"{name} v{version}", str(exc)))
    return problems


def _check_table(fg: FeatureGroup) -> list[Problem]:
    try:
        files = fg.files(verify=False)  # each verified below, all of them reported
        commits = delta.history(fg.root, fg.rel)
        recorded = recorded_checksums(fg.root, fg.rel, refresh=True, commits=commits)
    except FeatureStoreError as exc:
        return [Problem("table", fg.uri, f"the Delta log cannot be read: {exc}")]
    out = []
    rows: dict[str, int] = {}  # file name -> rows, of the files that verify
    for f in files:
        want = recorded.get(os.path.basename(f))
        try:
            if want is not None and not data_file_matches(fg.root, f, want):  # a damaged copy is fetched again
                where = f if fg.root.local else fg.root.uri_of(f"{fg.rel}/{os.path.basename(f)}")
                out.append(Problem("table", where, "data file does not match the checksum its commit recorded "
                                                   "(damaged)"))
                continue
            with pq.ParquetFile(f, page_checksum_verification=True) as pf:
                for i in range(pf.num_row_groups):
                    pf.read_row_group(i)
                rows[os.path.basename(f)] = pf.metadata.num_rows
        except (OSError, pa.ArrowException) as exc:
            out.append(Problem("table", f, f"data file damaged or missing: {exc}"))
    return out + _short_commits(fg, commits, rows)


def _short_commits(fg: FeatureGroup, commits: list[dict[str, Any]], rows_of: dict[str, int]) -> list[Problem]:
    """Commits whose data files do not hold the rows the commit states: one that added no file for its
    rows, or whose files (while they are all still in the table, and verify: ``rows_of``) hold another
    number. Before the row check at commit time, a Spark insert could land without its files (its rows
    missing, the files left unreferenced in the table folder)."""
    out = []
    for info in commits:
        stated, named = info.get(META_PREFIX + "row_count"), info.get(CHECKSUMS)
        if stated is None or named is None:
            continue  # not this library's insert: nothing to compare
        try:
            rows, names = int(stated), list(json.loads(named))
        except (TypeError, ValueError):
            continue
        if rows <= 0:  # an empty insert, or a compaction (no rows added)
            continue
        where = f"{fg.uri} commit {info['version']}"
        if not names:
            out.append(Problem("table", where, f"the commit states {rows} rows but added no data file: its rows "
                                               f"are not in the table"))
        elif all(n in rows_of for n in names) and (held := sum(rows_of[n] for n in names)) != rows:
            out.append(Problem("table", where, f"the commit states {rows} rows but its {len(names)} data "
                                               f"file(s) hold {held}"))
    return out


def _check_views(fg: FeatureGroup, repair: bool) -> list[Problem]:
    out = []
    for commit in views.list_views(fg):
        path = views.view_path(fg, commit)
        try:
            verify(path, views.read_manifest(path))
            OnlineView(path, verify=False)  # the files also open as a view
        except (CorruptData, StorageError) as exc:
            fixed, detail = False, str(exc)
            if repair:
                try:
                    views.materialize(fg, commit, force=True)
                    fixed = True
                except FeatureStoreError as why:  # e.g. the commit's data file is damaged too
                    detail += f" (not rebuilt: {why})"
            out.append(Problem("view", str(path), detail, repaired=fixed))
    return out


def _delete(path: str) -> bool:
    try:
        os.remove(path)
    except OSError:
        return False
    return True
