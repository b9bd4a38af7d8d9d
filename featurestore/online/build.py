"""Build an online view of one commit and publish it atomically.

A view holds every feature of a group. It lives in ``<table>/_online/c<commit>/`` (beside the Delta
table; Delta ignores ``_``-prefixed folders): ``manifest.json``, ``keys.npy`` (sorted keys; composite
keys encoded as in :class:`~featurestore.online.keys.CompositeKeyIndex`), ``keyhash.npy`` (string and
composite keys: the open-addressing key table of :mod:`featurestore.online.keys`), ``columns.arrow``
(key columns, event_time and scalar features, Arrow IPC), and per vector feature: ``vectors.npy``
(float32, rows in key order), ``search.npy`` (cosine features whose vectors are not unit length: the
normalised copy that is searched), ``sqnorms.npy`` (l2) and ``index.faiss`` (IVF/HNSW, chosen per
feature in the spec's ``online.indexes``). The default vector feature's files have these names, the
others' carry the feature name (``vectors.<feature>.npy``...); a group of scalars has none. It is
written to a temporary folder and renamed into place, so a reader sees a whole view or none. Stores
on object storage keep their views in the local cache folder: a view is downloaded from the bucket
when another machine built it, else built here and uploaded (see :mod:`featurestore.online.remote`).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from featurestore.errors import FeatureStoreError, StorageError
from featurestore.feature_group import FeatureGroup
from featurestore.online import index as ix
from featurestore.online import remote
from featurestore.online.integrity import checksums
from featurestore.online.keys import build_hash_table, encode_columns, needs_hash_map, sort_keys
from featurestore.schema import EntityKey, Feature
from featurestore.storage.fs import pid_alive, remove_dead_temporaries

log = logging.getLogger("featurestore.online")
FORMAT_VERSION = 3  # 2: every file's size and CRC-32 in the manifest; 3: every feature, composite keys
ONLINE_DIR = remote.ONLINE_DIR


def views_dir(fg: FeatureGroup) -> Path:
    """Where the views of a feature group version live (a local folder: beside the table, or for a store
    on object storage in its cache folder)."""
    if fg.root.local:
        return Path(fg.uri) / ONLINE_DIR
    return fg.root.cached(f"{fg.rel}/{ONLINE_DIR}")


def fetch(fg: FeatureGroup, commit: int) -> bool:
    """Whether ``commit``'s view is here: on a store on object storage, downloaded (and verified) when
    another machine uploaded it."""
    target = view_path(fg, commit)
    if (target / "manifest.json").exists():
        return True
    return not fg.root.local and remote.download(fg, commit, target)


def view_path(fg: FeatureGroup, commit: int) -> Path:
    return views_dir(fg) / f"c{commit}"


def served_vectors(fg: FeatureGroup) -> list[Feature]:
    """The vector features of a view, the default one (``online.vector``, else the first) first."""
    vectors = fg.spec.vector_features
    default = fg.spec.online.vector
    return sorted(vectors, key=lambda f: f.name != default) if default else vectors


def file_suffix(feature: str, default: str | None) -> str:
    """Files of the default vector feature are ``vectors.npy``, ``index.faiss``...; of the others
    ``vectors.<feature>.npy``, ``index.<feature>.faiss``..."""
    return "" if feature == default else f".{feature}"


def materialize(fg: FeatureGroup, commit: int, *, force: bool = False,
                progress: Callable[[str], None] | None = None) -> Path:
    """Build the view of ``commit`` unless it exists (``force`` rebuilds); return its folder."""
    say = progress or (lambda m: log.info("%s c%d: %s", fg.spec.key, commit, m))
    target = view_path(fg, commit)
    if not force and fetch(fg, commit):
        if _format(target) == FORMAT_VERSION:
            return target
        force = True  # built by an older version (fewer features, no checksums): derived data, so rebuilt
    remove_dead_temporaries(str(views_dir(fg)), ".build-")  # what builds killed midway left
    t0 = time.perf_counter()
    rows = read_latest(fg, commit, say)
    root = views_dir(fg)
    tmp = root / f".build-{os.getpid()}-c{commit}-{uuid.uuid4().hex[:8]}"
    try:
        tmp.mkdir(parents=True)
        hash_map = _write_keys(tmp, rows, fg.spec.entity_keys)
        _write_columns(tmp, rows.columns)
        default = rows.vectors[0][0].name if rows.vectors else None
        vectors = {f.name: _write_vector(fg, commit, tmp, f, m, file_suffix(f.name, default), say)
                   for f, m in rows.vectors}
        manifest = _manifest(fg, commit, rows, hash_map=hash_map, vectors=vectors, default=default, started=t0)
        manifest["files"] = checksums(tmp)  # verified whenever the view is opened
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2))
        _publish(tmp, target, force)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, OSError) and not isinstance(exc, FeatureStoreError):  # a full disk, a quota
            hint = built_views_hint(fg)
            raise StorageError(f"cannot write the online view of {fg.spec.key} commit {commit} under {root}: "
                               f"{exc}{hint}") from exc
        raise
    dims = ", ".join(f"{f.name} x {f.dim}" for f, _ in rows.vectors) or "scalars only"
    say(f"published {rows.n:,} rows ({dims}) to {target} in {time.perf_counter() - t0:.1f}s")
    if not fg.root.local:
        remote.upload(fg, commit, target)
    return target


def built_views_hint(fg: FeatureGroup) -> str:
    """For a view that cannot be built (a read-only store, a full disk): the views that exist."""
    built = list_views(fg)
    if not built:
        return ""
    return (f". Views built already: commit(s) {', '.join(map(str, built))} ("
            f"store.online(name, commit=N) serves one)")


@dataclass(frozen=True)
class LatestRows:
    """The latest rows of one commit, in key order, as a view stores them."""

    raw_keys: list[Any]  # as read (composite keys: encoded): numpy cannot hold every string key exactly
    keys: np.ndarray     # sorted
    vectors: list[tuple[Feature, np.ndarray]]  # each vector feature read (default first): (n, dim) float32
    columns: pa.Table    # keys, event time and scalar features

    @property
    def n(self) -> int:
        return len(self.keys)


def read_latest(fg: FeatureGroup, commit: int, say: Callable[[str], None] | None = None, *,
                vectors: list[Feature] | None = None) -> LatestRows:
    """Read the latest row of every key at ``commit`` and sort the rows by key: what a view of the
    commit holds (``vectors``: only these vector features; default: all, the default one first). Reads
    the table and writes nothing; a view build and the console's comparisons read commits through it."""
    spec = fg.spec
    features = served_vectors(fg) if vectors is None else vectors
    scalar_names = [*spec.key_names, spec.event_time] + [f.name for f in spec.features if not f.is_vector]
    t0 = time.perf_counter()
    table = fg.latest(commit, columns=[*scalar_names, *(f.name for f in features)])
    if say is not None:
        say(f"read {table.num_rows:,} latest rows in {time.perf_counter() - t0:.1f}s")
    n = table.num_rows
    if len(spec.entity_keys) == 1:
        key = spec.entity_keys[0]
        raw_keys = table[key.name].to_pylist()
        keys, order = sort_keys(raw_keys, key.type)
    else:
        raw_keys = encode_columns([table[k.name].to_pylist() for k in spec.entity_keys])
        keys, order = sort_keys(raw_keys, "string")
    in_order = bool(np.all(order[1:] > order[:-1]))  # as the engine sorted them: no row to move
    matrices = []
    for feature in features:
        vec_col = table[feature.name].combine_chunks()
        if vec_col.null_count:
            raise StorageError(f"{spec.key} commit {commit}: {vec_col.null_count} rows have a null {feature.name}")
        dim = int(feature.dim or 0)
        flat = vec_col.flatten().to_numpy(zero_copy_only=False) if n else np.zeros(0, np.float32)
        matrix = flat.reshape(n, dim) if in_order else flat.reshape(n, dim)[order]
        matrices.append((feature, np.ascontiguousarray(matrix, dtype=np.float32)))
    columns = table.select(scalar_names)
    columns = columns if in_order or not n else columns.take(pa.array(order))
    return LatestRows(raw_keys, keys, matrices, columns)


def _write_vector(fg: FeatureGroup, commit: int, tmp: Path, feature: Feature, vectors: np.ndarray, sfx: str,
                  say: Callable[[str], None]) -> dict[str, Any]:
    """Write one vector feature (its matrix, normalised copy, squared norms and index); its manifest entry."""
    spec = fg.spec
    normalised = normalised_copy(vectors, feature, f"{spec.key} commit {commit} {feature.name}")
    search = vectors if normalised is None else normalised
    kind, params = spec.online.index_of(feature.name)
    cfg = ix.resolve(kind, params, len(vectors), source=spec.source)
    sqnorms = _write_vectors(tmp, vectors, normalised, feature.metric, sfx)
    index = _write_index(tmp, search, feature.metric, cfg, sqnorms, sfx, say)
    return {"dim": int(feature.dim or 0), "metric": feature.metric, "normalised_copy": normalised is not None,
            "suffix": sfx, "index": index}


def normalised_copy(vectors: np.ndarray, feature: Feature, what: str) -> np.ndarray | None:
    """For a cosine view whose vectors are not unit length, the normalised copy that is searched; else None."""
    if feature.metric != "cosine" or not len(vectors):
        return None
    squared = np.einsum("ij,ij->i", vectors, vectors)  # a tenth of np.linalg.norm's time: no temporary matrix
    if np.any(squared == 0):
        raise StorageError(f"{what}: zero vectors have no cosine similarity")
    if np.allclose(np.sqrt(squared), 1.0, atol=1e-4):
        return None
    norms = np.linalg.norm(vectors, axis=1)
    return (vectors / norms[:, None]).astype(np.float32)


def _write_keys(tmp: Path, rows: LatestRows, keys: tuple[EntityKey, ...]) -> bool:
    """Write the sorted keys, and the hash table of string (and composite) keys; return whether readers
    need a dict instead."""
    np.save(tmp / "keys.npy", rows.keys)
    hash_map = needs_hash_map(rows.raw_keys)
    if (len(keys) > 1 or keys[0].type == "string") and not hash_map:
        np.save(tmp / "keyhash.npy", build_hash_table(rows.keys))
    return hash_map


def _write_vectors(tmp: Path, vectors: np.ndarray, normalised: np.ndarray | None,
                   metric: ix.Metric, sfx: str) -> np.ndarray | None:
    """Write the vectors, their normalised copy if any, and for l2 views their squared norms (returned)."""
    np.save(tmp / f"vectors{sfx}.npy", vectors)
    if normalised is not None:
        np.save(tmp / f"search{sfx}.npy", normalised)
    if metric != "l2":
        return None
    search = vectors if normalised is None else normalised
    sqnorms = (search * search).sum(axis=1).astype(np.float32)
    np.save(tmp / f"sqnorms{sfx}.npy", sqnorms)
    return sqnorms


def _write_columns(tmp: Path, columns: pa.Table) -> None:
    with pa.OSFile(str(tmp / "columns.arrow"), "wb") as sink, pa.ipc.new_file(sink, columns.schema) as writer:
        writer.write_table(columns)


def _write_index(tmp: Path, search: np.ndarray, metric: ix.Metric, cfg: ix.IndexConfig, sqnorms: np.ndarray | None,
                 sfx: str, say: Callable[[str], None]) -> dict[str, Any]:
    """Build, tune and write the similarity index (flat and empty views have none); return its manifest entry."""
    n = len(search)
    breadth, recall, build_s = 0, 1.0, 0.0
    if cfg.kind != "flat" and n:
        t = time.perf_counter()
        index = ix.build(search, metric, cfg, log=say)
        breadth, recall = ix.tune(index, cfg, search, metric, sqnorms=sqnorms, log=say)
        build_s = time.perf_counter() - t
        ix.write(index, str(tmp / f"index{sfx}.faiss"))
        say(f"{cfg.kind} index{sfx}: breadth {breadth}, recall@10 {recall:.3f}, built in {build_s:.1f}s")
    return {**cfg.to_dict(), "kind": cfg.kind if n else "flat", "breadth": breadth,
            "recall_at_10": recall, "build_seconds": round(build_s, 3)}


def _manifest(fg: FeatureGroup, commit: int, rows: LatestRows, *, hash_map: bool, vectors: dict[str, dict[str, Any]],
              default: str | None, started: float) -> dict[str, Any]:
    spec = fg.spec
    composite = len(spec.entity_keys) > 1
    main = vectors.get(default or "", {})
    return {
        "format_version": FORMAT_VERSION,
        "feature_group": spec.name,
        "version": spec.version,
        "commit": commit,
        "commit_timestamp": fg.commit(commit).timestamp.isoformat(),
        "spec_fingerprint": spec.fingerprint(),
        "rows": rows.n,
        "keys": spec.key_names,
        "key_types": [k.type for k in spec.entity_keys],
        "key": ",".join(spec.key_names),
        "key_type": "composite" if composite else spec.entity_keys[0].type,
        "key_hash_map": hash_map,
        "features": [f.name for f in spec.features],
        "vectors": vectors,
        # the default vector feature (nearest without feature=): as format 2 described its one vector
        "vector": default,
        "dim": main.get("dim", 0),
        "metric": main.get("metric"),
        "normalised_copy": main.get("normalised_copy", False),
        "index": main.get("index", {"kind": "flat", "breadth": 0}),
        "columns": rows.columns.column_names,
        "built_at": datetime.now(UTC).isoformat(),
        "build_seconds": round(time.perf_counter() - started, 3),
    }


def _publish(tmp: Path, target: Path, force: bool) -> None:
    """Rename the finished folder into place: readers see the whole view or none."""
    try:
        os.rename(tmp, target)
        return
    except OSError:
        if not target.exists():
            raise
    if not force:  # another builder published the same commit first: theirs is as good as ours
        shutil.rmtree(tmp, ignore_errors=True)
        return
    old = target.with_name(f".old-{target.name}-{uuid.uuid4().hex[:8]}")
    os.rename(target, old)  # open views keep their memory maps of the old files
    os.rename(tmp, target)
    shutil.rmtree(old, ignore_errors=True)


def _format(view: Path) -> int | None:
    try:
        return int(json.loads((view / "manifest.json").read_text()).get("format_version", 0))
    except (OSError, ValueError, AttributeError):
        return None


def read_manifest(view: Path) -> dict[str, Any]:
    """A view's manifest (StorageError naming it when it cannot be read)."""
    try:
        doc = json.loads((view / "manifest.json").read_text())
    except (OSError, ValueError) as exc:
        raise StorageError(f"the manifest of the online view at {view} cannot be read: {exc}") from exc
    if not isinstance(doc, dict):
        raise StorageError(f"the manifest of the online view at {view} is not a JSON object")
    return doc


_LEASE = ".served-"


def lease(fg: FeatureGroup, commits: set[int]) -> Path:
    """Record that this process serves the views of ``commits`` (``vacuum`` keeps them while the process
    lives); returns the lease file. An empty set drops the lease. A store that cannot be written (read
    only) keeps no lease: serving goes on, and the log says so."""
    root = views_dir(fg)
    path = root / f"{_LEASE}{os.getpid()}.json"
    try:
        if not commits:
            path.unlink(missing_ok=True)
            return path
        root.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{uuid.uuid4().hex[:8]}.tmp")
        tmp.write_text(json.dumps(sorted(commits)))
        os.replace(tmp, path)
    except OSError as exc:
        log.warning("%s: cannot record the served commits in %s (%s): vacuum will not see them", fg.spec.key,
                    path, exc)
    return path


def served_commits(fg: FeatureGroup) -> set[int]:
    """Commits whose views a live process serves (leases of dead processes are ignored)."""
    root = views_dir(fg)
    out: set[int] = set()
    if not root.is_dir():
        return out
    for p in root.glob(f"{_LEASE}*.json"):
        pid = p.name[len(_LEASE):-len(".json")]
        if not pid.isdigit() or not pid_alive(int(pid)):
            continue
        try:
            out.update(int(c) for c in json.loads(p.read_text()))
        except (OSError, ValueError, TypeError):
            continue
    return out


def list_views(fg: FeatureGroup) -> list[int]:
    """Commits that have a published view."""
    root = views_dir(fg)
    if not root.exists():
        return []
    return sorted(int(p.name[1:]) for p in root.iterdir()
                  if p.name.startswith("c") and p.name[1:].isdigit() and (p / "manifest.json").exists())


def prune(fg: FeatureGroup, keep: set[int], *, stale_after: float = 3600.0) -> list[int]:
    """Delete the views of commits not in ``keep`` (they are caches: any commit can be rebuilt), and
    temporary folders of builds that died more than ``stale_after`` seconds ago. Processes that still
    have a deleted view open keep reading it (its files stay until they are unmapped)."""
    root = views_dir(fg)
    removed = []
    for commit in list_views(fg):
        if commit not in keep:
            shutil.rmtree(root / f"c{commit}", ignore_errors=True)
            removed.append(commit)
    if root.exists():
        now = time.time()
        for p in root.iterdir():
            if p.name.startswith((".build-", ".old-")) and now - p.stat().st_mtime > stale_after:
                shutil.rmtree(p, ignore_errors=True)
    return removed
