"""What the console reads of a commit to compare it with another: its sorted keys, scalar columns and
vectors. From the commit's online view when it has one (memory-mapped, each file checked against the
view's checksums; the search index, as large again as the vectors, is neither read nor checked), else
from the table itself (the latest row per key, as a view of the commit would hold it): a page read never
builds a view nor writes anything to the store.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from featurestore.errors import CorruptData
from featurestore.feature_group import FeatureGroup
from featurestore.online.build import FORMAT_VERSION, normalised_copy, read_latest, served_vectors, view_path
from featurestore.online.integrity import stored_manifest, verify
from featurestore.online.keys import decode_key, needs_hash_map
from featurestore.online.view import OnlineView
from featurestore.storage import npy


@dataclass(frozen=True)
class CommitData:
    """What a comparison reads of one commit: its sorted keys, scalar columns and default vector
    feature (:func:`read_commit` from its view's files, :func:`read_table_commit` from the table)."""

    commit: int
    rows: int
    dim: int
    metric: str
    keys: np.ndarray  # sorted, one per row (composite keys: encoded as a view stores them)
    columns: pa.Table
    matrix: np.ndarray
    search_matrix: np.ndarray  # what searches compare (unit length for cosine)
    view: OnlineView | None = None  # the open view it came from
    key_names: tuple[str, ...] = ()
    raw_keys: bool = False  # keys numpy cannot hold exactly: shown from the key column

    @classmethod
    def of_view(cls, view: OnlineView) -> CommitData:
        return cls(view.commit, view.rows, view.dim, view.metric, view.keys.keys, view.columns, view.matrix,
                   view.search_matrix, view, tuple(view.key_names))

    def keys_at(self, rows: np.ndarray) -> list[Any]:
        """The entity keys of some rows, as callers see them (tuples for a composite key)."""
        if self.view is not None:
            return self.view.keys_at(rows)
        rows = np.asarray(rows, np.int64)
        if not len(rows):
            return []
        if self.raw_keys:
            return self.columns[self.key_names[0]].take(pa.array(rows)).to_pylist()
        keys = self.keys[rows].tolist()
        return [decode_key(k) for k in keys] if len(self.key_names) > 1 else keys


def read_commit(fg: FeatureGroup, commit: int) -> CommitData | None:
    """The keys, columns and default vectors of ``commit``'s view, each file verified; None when the
    commit has no view (or one of an older format, which a build would replace: the table is read
    then). :class:`CorruptData` when a file does not match its checksum."""
    folder = view_path(fg, commit)
    m = stored_manifest(folder, "online view")
    if m is None or m.get("format_version") != FORMAT_VERSION:
        return None
    part = (m.get("vectors") or {}).get(m.get("vector") or "")
    sfx = (part or {}).get("suffix", "")
    files = m.get("files") or {}
    wanted = ["keys.npy", "columns.arrow"]
    if part is not None:
        wanted += [f"vectors{sfx}.npy", *([f"search{sfx}.npy"] if f"search{sfx}.npy" in files else [])]
    missing = [w for w in wanted if w not in files]
    if missing:
        raise CorruptData(f"online view at {folder}: its manifest lists no {', '.join(missing)}")
    verify(folder, {"files": {w: files[w] for w in wanted}})
    rows, dim = int(m["rows"]), int((part or {}).get("dim", 0))
    try:
        keys = _mapped(folder / "keys.npy")
        matrix = _mapped(folder / wanted[2]) if part is not None else np.zeros((rows, 0), np.float32)
        search = _mapped(folder / wanted[3]) if len(wanted) > 3 else matrix
        columns = pa.ipc.open_file(pa.memory_map(str(folder / "columns.arrow"))).read_all()
    except (OSError, ValueError, pa.ArrowException) as exc:
        raise CorruptData(f"online view at {folder} is unreadable: {exc}") from exc
    if len(keys) != rows or columns.num_rows != rows or matrix.shape != (rows, dim):
        raise CorruptData(f"online view at {folder}: files disagree with the manifest ({rows} rows)")
    return CommitData(int(m["commit"]), rows, dim, str((part or {}).get("metric") or "cosine"), keys, columns,
                      matrix, search, None, tuple(m.get("keys") or fg.spec.key_names), bool(m.get("key_hash_map")))


def read_table_commit(fg: FeatureGroup, commit: int) -> CommitData:
    """What :func:`read_commit` reads, for a commit with no view: the latest row per key at ``commit``,
    read from the table as a view build reads it (:func:`~featurestore.online.build.read_latest`: the
    same keys, columns and vectors in the same order), the default vector feature only, into memory
    (a 1M x 64-d commit: 256 MB of vectors, and as much again for the unit-length copy of a cosine
    feature whose vectors are not normalised). Nothing is written."""
    vectors = served_vectors(fg)[:1]
    got = read_latest(fg, commit, vectors=vectors)
    if vectors:
        feature, matrix = got.vectors[0]
        normalised = normalised_copy(matrix, feature, f"{fg.spec.key} commit {commit} {feature.name}")
        search, dim, metric = matrix if normalised is None else normalised, int(feature.dim or 0), feature.metric
    else:
        matrix = search = np.zeros((got.n, 0), np.float32)
        dim, metric = 0, "cosine"
    names = tuple(fg.spec.key_names)
    raw = len(names) == 1 and needs_hash_map(got.raw_keys)
    # decoding the table's list columns took several times the vectors' size: give what is free back to
    # the system, or a server's memory stays at that peak (Arrow's allocator keeps freed pages)
    pa.default_memory_pool().release_unused()
    return CommitData(commit, got.n, dim, metric, got.keys, got.columns, matrix, search, None, names, raw)


def _mapped(path: Path) -> np.ndarray:
    return npy.mapped(path).view(np.ndarray)


def rows_of(keys: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """Rows of the keys ``wanted`` in the sorted unique ``keys`` (-1 where missing)."""
    if not len(keys):
        return np.full(len(wanted), -1, np.int64)
    idx = np.searchsorted(keys, wanted)
    idx[idx >= len(keys)] = len(keys) - 1
    return np.where(keys[idx] == wanted, idx, -1).astype(np.int64)
