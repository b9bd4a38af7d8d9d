"""Saved training datasets: ``<root>/training_sets/<name>/v<N>/`` holding ``data.parquet`` and
``manifest.json`` (spine hash, the commit read per feature group, the parameters, a hash of the data).

Rebuilding from a manifest's ``pins`` and ``params`` with the same spine gives the same bytes, however
many commits have landed since. Versions are numbered 1, 2, ... and never overwritten.

Example::

    saved = store.save_training_set("ctr", spine, ["user_embeddings:1", "item_embeddings:1"],
                                    event_time="label_time")
    saved.version, saved.manifest["pins"], saved.path
    store.load_training_set("ctr").to_arrow()
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa

from featurestore.catalog import Catalog
from featurestore.errors import CommitConflict, CorruptData, InvalidData, StorageError, TrainingSetNotFound
from featurestore.storage import delta
from featurestore.storage.fs import Root, remove_dead_temporaries
from featurestore.storage.staging import append
from featurestore.training.plan import _ROW, TrainingSet, rechunk

DIR = "training_sets"
_STAGING = ".staging"
_TMP_PREFIX = "fs-training-"
MANIFEST = "manifest.json"
DATA = "data.parquet"
NAME = re.compile(r"^[a-z_][a-z0-9_\-]*$")
_CHUNK = 1 << 16
#: what every manifest holds (see :func:`save`)
_MANIFEST_KEYS = ["name", "version", "rows", "columns", "spine", "pins", "params", "data"]


@dataclass(frozen=True)
class SavedTrainingSet:
    """One saved version of a training dataset: where its Parquet file is and what built it."""

    name: str
    version: int
    path: str  # URI of data.parquet
    manifest: dict[str, Any]
    root: Root | None = field(default=None, repr=False, compare=False)  # the store it was saved in

    @property
    def pins(self) -> dict[str, int]:
        return dict(self.manifest["pins"])

    @property
    def local_path(self) -> str:
        """A local file with the saved rows: ``path`` itself, or for a store on object storage its copy
        in the cache folder (downloaded the first time; a saved version never changes)."""
        if self.root is None or self.root.local:
            return self.path
        return self.root.readable([self.path])[0]

    def verify(self) -> None:
        """Check ``data.parquet`` against the size and SHA-256 its manifest recorded (CorruptData
        naming the file when they differ: the set would no longer be the one its pins reproduce)."""
        want = self.manifest.get("data") or {}
        try:
            local = self.local_path
            size = os.path.getsize(local)
            digest = _file_sha256(local) if size == want.get("bytes") else None
        except OSError as exc:
            raise StorageError(f"training set {self.name!r} v{self.version}: cannot read {self.path}: {exc}") from exc
        if size != want.get("bytes") or digest != want.get("sha256"):
            raise CorruptData(f"training set {self.name!r} v{self.version}: {self.path} does not match the size "
                              f"and sha256 its manifest recorded (changed or damaged since it was saved)")

    def to_arrow(self) -> pa.Table:
        """The saved rows, after checking the file against its manifest's sha256."""
        import pyarrow.parquet as pq

        self.verify()
        try:
            return pq.read_table(self.local_path)
        except (OSError, pa.ArrowException) as exc:
            raise StorageError(f"cannot read training set {self.name!r} v{self.version} from {self.path}: "
                               f"{exc}") from exc


def spine_hash(ts: TrainingSet) -> tuple[str, int]:
    """SHA-256 of the spine as Arrow (schema, then fixed-size record batches in spine order), and
    its row count: the same rows and types give the same hash, whatever their chunking or source."""
    import pyarrow.parquet as pq


    source = ts._spine
    if source.table is not None or source.frame is not None:
        table = source.table.drop_columns([_ROW]) if source.table is not None else source.read_all()
        parts: Iterable[pa.Table] = [table]
        schema = table.schema
    else:
        files = [pq.ParquetFile(f) for f in source.files]
        schema = files[0].schema_arrow
        parts = (pa.Table.from_batches([b]) for f in files for b in f.iter_batches(batch_size=_CHUNK))
    h = hashlib.sha256(schema.remove_metadata().serialize().to_pybytes())
    rows = 0
    for chunk in rechunk(parts, _CHUNK):
        batch = chunk.combine_chunks().to_batches()[0].replace_schema_metadata(None)
        h.update(batch.serialize().to_pybytes())
        rows += chunk.num_rows
    return h.hexdigest(), rows


def _file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _versions(store: Catalog, name: str) -> list[int]:
    if not store.root.local:  # a version is complete once its manifest is there (written last)
        rels = [store.root.rel_of(i.path) for i in store.root.walk(f"{DIR}/{name}")]
        return sorted(int(r.split("/")[2][1:]) for r in rels if r.count("/") == 3 and r.endswith("/" + MANIFEST)
                      and r.split("/")[2][:1] == "v" and r.split("/")[2][1:].isdigit())
    return sorted(int(d[1:]) for d in store.root.listdir(f"{DIR}/{name}") if d[:1] == "v" and d[1:].isdigit())


def save(store: Catalog, name: str, ts: TrainingSet, *, description: str = "") -> SavedTrainingSet:
    """Write training set ``ts`` as the next version of ``name`` (see module docstring)."""
    if not isinstance(name, str) or not NAME.match(name):
        raise InvalidData(f"bad training set name {name!r}: use lower-case letters, digits, '_' and '-'")
    digest, rows = spine_hash(ts)
    store.init()
    # the result is written in a staging folder named after this process (inside the store when it is
    # local), so one a killed save left behind is recognised, and removed, by the next save
    base = store.root._path(f"{DIR}/{_STAGING}") if store.root.local else tempfile.gettempdir()
    os.makedirs(base, exist_ok=True)
    remove_dead_temporaries(base, _TMP_PREFIX)
    try:
        return _stage_and_claim(store, name, ts, base, description, digest, rows)
    finally:
        if store.root.local:
            with contextlib.suppress(OSError):
                os.rmdir(base)  # only when empty: another save may be staging there


def _stage_and_claim(store: Catalog, name: str, ts: TrainingSet, base: str, description: str, digest: str,
                     rows: int) -> SavedTrainingSet:
    with tempfile.TemporaryDirectory(prefix=f"{_TMP_PREFIX}{os.getpid()}-", dir=base) as tmp:
        local = os.path.join(tmp, DATA)
        written = ts.to_parquet(local)
        manifest = {
            "format_version": 1,
            "name": name,
            "description": description,
            "created": datetime.now(UTC).isoformat(),
            "rows": written,
            "columns": ts.columns,
            "spine": {"sha256": digest, "rows": rows,
                      "source": ts._spine.files if ts._spine.files is not None else
                      "Spark DataFrame" if ts._spine.frame is not None else "in-memory table"},
            "pins": ts.pins,
            "params": ts.params,
            "data": {"file": DATA, "sha256": _file_sha256(local), "bytes": os.path.getsize(local)},
        }
        if not store.root.local:
            version = _claim_number(store, name)
            manifest["version"] = version
            rel = f"{DIR}/{name}/v{version}"
            _publish_remote(store, rel, local, manifest)
            return SavedTrainingSet(name, version, store.root.uri_of(f"{rel}/{DATA}"), manifest, store.root)
        for _ in range(100):  # claim the next version number; a racing writer makes us take the next
            version = (_versions(store, name) or [0])[-1] + 1
            manifest["version"] = version
            rel = f"{DIR}/{name}/v{version}"
            if _claim(store, rel, local, manifest):
                return SavedTrainingSet(name, version, store.root.uri_of(f"{rel}/{DATA}"), manifest, store.root)
    raise StorageError(f"could not claim a version number for training set {name!r}")


_CLAIMS = "_versions"  # object stores: a Delta table whose commit numbers are the version numbers handed out


def _claim_number(store: Catalog, name: str) -> int:
    """The next version number of ``name`` on an object store: the number of a new commit to a small
    Delta table, so two savers racing on two machines get different numbers (Delta's atomic commit:
    a conditional PUT of the log entry) without any lock service."""
    rel = f"{DIR}/{name}/{_CLAIMS}"
    uri, opts = store.root.uri_of(rel), store.root.storage_options
    if not store.root.exists(f"{rel}/_delta_log/{0:020d}.json"):
        with contextlib.suppress(StorageError, CommitConflict):  # a racing saver created it first
            delta.create(uri, pa.schema([("claim", pa.string())]), name=f"{name}_versions",
                         description=f"version numbers of training set {name}", storage_options=opts)
    claim = uuid.uuid4().hex
    info = append(store.root, rel, pa.table({"claim": [claim]}), {delta.META_PREFIX + "run_id": claim})
    # the rank of this claim among the claims: two savers racing to create the table can leave a second
    # creation commit, which takes a commit number but hands out no version
    mine = int(info["version"])
    return sum(1 for c in delta.history(store.root, rel)
               if c.get(delta.META_PREFIX + "run_id") and int(c["version"]) <= mine)


def _publish_remote(store: Catalog, rel: str, data: str, manifest: dict[str, Any]) -> None:
    """Upload the data, then the manifest that makes the version visible (nothing to see until then)."""
    try:
        store.root.upload(data, f"{rel}/{DATA}")
        store.root.write_json(f"{rel}/{MANIFEST}", manifest)
    except BaseException:
        with contextlib.suppress(StorageError):
            store.root.delete_tree(rel)
        raise
    cached = store.root.cached(f"{rel}/{DATA}")  # this machine reads it back without a download
    tmp = cached.with_name(f".{uuid.uuid4().hex[:8]}.part")
    with contextlib.suppress(OSError):
        cached.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(data, tmp)
        os.replace(tmp, cached)
    with contextlib.suppress(OSError):
        os.remove(tmp)


def _claim(store: Catalog, rel: str, data: str, manifest: dict[str, Any]) -> bool:
    """Publish data + manifest as folder ``rel`` atomically; False when ``rel`` exists already."""
    root = store.root
    if root.local:
        final = root._path(rel)
        staging = f"{os.path.dirname(final)}/.{uuid.uuid4().hex}.tmp"
        os.makedirs(staging)
        try:
            shutil.copyfile(data, f"{staging}/{DATA}")
            with open(f"{staging}/{MANIFEST}", "w") as f:
                json.dump(manifest, f, indent=2, sort_keys=True, default=str)
            try:
                os.rename(staging, final)  # fails if a racing writer took this version
            except OSError:
                if os.path.exists(final):
                    return False
                raise
            return True
        finally:
            if os.path.exists(staging):
                shutil.rmtree(staging)
    raise StorageError(f"{root.uri}: version claims by rename need a local store root")


def load(store: Catalog, name: str, version: int | None = None) -> SavedTrainingSet:
    """A saved training dataset (default: its newest version)."""
    versions = _versions(store, name)
    if not versions:
        raise TrainingSetNotFound(f"no training set {name!r} in {store.root.uri}")
    version = versions[-1] if version is None else version
    if version not in versions:
        raise TrainingSetNotFound(f"training set {name!r} has no version {version} (versions: {versions})")
    rel = f"{DIR}/{name}/v{version}"
    try:
        manifest = store.root.read_json(f"{rel}/{MANIFEST}")
    except FileNotFoundError as exc:
        raise TrainingSetNotFound(f"training set {name!r} v{version} has no manifest") from exc
    except StorageError as exc:
        raise StorageError(f"training set {name!r} v{version}: {exc}") from exc
    missing = [k for k in _MANIFEST_KEYS if k not in manifest] if isinstance(manifest, dict) else _MANIFEST_KEYS
    if missing:
        raise StorageError(f"training set {name!r} v{version}: {store.root.uri_of(f'{rel}/{MANIFEST}')} is "
                           f"damaged (no {', '.join(missing)})")
    return SavedTrainingSet(name, version, store.root.uri_of(f"{rel}/{DATA}"), manifest, store.root)


def saved_versions(store: Catalog) -> list[tuple[str, int]]:
    """(name, version) of every saved training dataset, without reading their manifests."""
    return [(n, v) for n in store.root.listdir(DIR) if not n.startswith(".") for v in _versions(store, n)]


def list_training_sets(store: Catalog) -> list[SavedTrainingSet]:
    """Every saved training dataset version, by name then version."""
    return [load(store, n, v) for n in store.root.listdir(DIR) if not n.startswith(".")
            for v in _versions(store, n)]
