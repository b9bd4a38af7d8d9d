"""Online views of a store on object storage: built on one machine, uploaded beside the table, and
downloaded into the local cache folder of every machine that serves them.

Views are memory-mapped local files, so a server always serves a local copy. In the bucket a view lives
at ``<table>/_online/c<commit>/``: its files under ``b-<build id>/`` and ``manifest.json`` (with every
file's size and CRC-32, and the build id) beside them, written last. A manifest only ever names a build
whose files were all uploaded before it, so a reader never sees half a view; two machines building the
same commit each upload their own build folder, the last manifest wins and the other build folder is
deleted. A download goes to a temporary folder, is verified against the manifest's checksums (a
mismatch is :class:`~featurestore.errors.CorruptData`, never a wrong vector) and is then renamed into
place.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

from featurestore.errors import StorageError
from featurestore.feature_group import FeatureGroup
from featurestore.online.integrity import MANIFEST, verify

log = logging.getLogger("featurestore.online")
ONLINE_DIR = "_online"


def _rel(fg: FeatureGroup, commit: int) -> str:
    return f"{fg.rel}/{ONLINE_DIR}/c{commit}"


def remote_manifest(fg: FeatureGroup, commit: int) -> dict[str, Any] | None:
    """The uploaded manifest of ``commit``'s view, or None when no view of it was uploaded."""
    try:
        doc = fg.root.read_json(f"{_rel(fg, commit)}/{MANIFEST}")
    except FileNotFoundError:
        return None
    if not isinstance(doc, dict) or not isinstance(doc.get("files"), dict) or "build" not in doc:
        raise StorageError(f"the manifest of the online view at {fg.root.uri_of(_rel(fg, commit))} is damaged")
    return doc


def upload(fg: FeatureGroup, commit: int, view: Path) -> None:
    """Upload a built view (files first, then the manifest naming them); the older build, if any, is deleted."""
    rel = _rel(fg, commit)
    previous = remote_manifest(fg, commit)
    build = uuid.uuid4().hex[:12]
    manifest = json.loads((view / MANIFEST).read_text())
    manifest["build"] = build
    try:
        for name in sorted(manifest["files"]):
            fg.root.upload(view / name, f"{rel}/b-{build}/{name}")
        fg.root.write_json(f"{rel}/{MANIFEST}", manifest)
    except BaseException:
        with contextlib.suppress(StorageError):  # best effort: the upload's own error is the one to report
            fg.root.delete_tree(f"{rel}/b-{build}")
        raise
    tmp = view / f".{MANIFEST}.{uuid.uuid4().hex[:8]}.tmp"  # the local copy names its build too
    tmp.write_text(json.dumps(manifest, indent=2))
    os.replace(tmp, view / MANIFEST)
    now = remote_manifest(fg, commit)
    stale = build if now is not None and now["build"] != build else (  # another machine published after us
        previous["build"] if previous is not None and previous["build"] != build else None)
    if stale is not None:
        with contextlib.suppress(StorageError):  # an unreferenced folder left behind is only wasted space
            fg.root.delete_tree(f"{rel}/b-{stale}")
    log.info("%s c%d: uploaded the view to %s", fg.spec.key, commit, fg.root.uri_of(rel))


def download(fg: FeatureGroup, commit: int, target: Path) -> bool:
    """Download ``commit``'s uploaded view into ``target`` (verified); False when none was uploaded."""
    manifest = remote_manifest(fg, commit)
    if manifest is None:
        return False
    rel = _rel(fg, commit)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".build-{os.getpid()}-c{commit}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        for name in sorted(manifest["files"]):
            fg.root.download(f"{rel}/b-{manifest['build']}/{name}", tmp / name)
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2))
        verify(tmp, manifest)  # CorruptData naming the file: nothing of it is served
        try:
            os.rename(tmp, target)
        except OSError:
            if not (target / MANIFEST).exists():
                raise
            shutil.rmtree(tmp, ignore_errors=True)  # another process of this machine downloaded it first
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("%s c%d: downloaded the view from %s", fg.spec.key, commit, fg.root.uri_of(rel))
    return True


def remote_views(fg: FeatureGroup) -> list[int]:
    """Commits that have an uploaded view."""
    names = fg.root.listdir(f"{fg.rel}/{ONLINE_DIR}")
    return sorted(int(n[1:]) for n in names if n.startswith("c") and n[1:].isdigit()
                  and fg.root.exists(f"{fg.rel}/{ONLINE_DIR}/{n}/{MANIFEST}"))


def delete(fg: FeatureGroup, commit: int) -> str:
    """Delete ``commit``'s uploaded view (servers keep serving their local copies); returns its URI."""
    rel = _rel(fg, commit)
    fg.root.delete(f"{rel}/{MANIFEST}")  # first: no reader starts downloading what is about to go
    fg.root.delete_tree(rel)
    return fg.root.uri_of(rel)


def stray_builds(fg: FeatureGroup) -> list[tuple[str, float]]:
    """Build folders that no manifest names (an upload killed midway, or a build another machine's
    replaced), with the time of their newest file: (root-relative folder, mtime in seconds)."""
    wanted: dict[str, str | None] = {}
    newest: dict[str, float] = {}
    for info in fg.root.walk(f"{fg.rel}/{ONLINE_DIR}"):
        parts = fg.root.rel_of(info.path).split("/")
        if len(parts) < 2 or not parts[-2].startswith("b-"):
            continue
        folder = "/".join(parts[:-1])
        commit_dir = parts[-3]
        if commit_dir not in wanted:
            manifest = remote_manifest(fg, int(commit_dir[1:])) if commit_dir[1:].isdigit() else None
            wanted[commit_dir] = None if manifest is None else f"b-{manifest['build']}"
        if parts[-2] != wanted[commit_dir]:
            mtime = info.mtime.timestamp() if info.mtime is not None else 0.0
            newest[folder] = max(newest.get(folder, 0.0), mtime)
    return sorted(newest.items())

