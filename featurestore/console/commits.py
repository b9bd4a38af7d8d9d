"""What the console reads of a commit's online view to compare it with another: its sorted keys, scalar
columns and vectors, memory-mapped, each file checked against the view's checksums. The search index
(as large again as the vectors) is neither read nor checked: comparisons search small samples exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from featurestore.errors import CorruptData
from featurestore.feature_group import FeatureGroup
from featurestore.online.build import view_path
from featurestore.online.integrity import stored_manifest, verify
from featurestore.online.view import OnlineView


@dataclass(frozen=True)
class CommitData:
    """What a comparison reads of one commit's online view: its sorted keys, scalar columns and vectors
    (memory-mapped). :func:`read_commit` checks only these files against the view's checksums: the
    search index, as large again as the vectors, is neither read nor checked."""

    commit: int
    rows: int
    dim: int
    metric: str
    keys: np.ndarray  # sorted, one per row
    columns: pa.Table
    matrix: np.ndarray
    search_matrix: np.ndarray  # what searches compare (unit length for cosine)
    view: OnlineView | None = None  # the open view it came from (it decodes composite keys)

    @classmethod
    def of_view(cls, view: OnlineView) -> CommitData:
        return cls(view.commit, view.rows, view.dim, view.metric, view.keys.keys, view.columns, view.matrix,
                   view.search_matrix, view)

    def keys_at(self, rows: np.ndarray) -> list[Any]:
        if self.view is not None:
            return self.view.keys_at(rows)
        return self.keys[np.asarray(rows, np.int64)].tolist() if len(rows) else []


def read_commit(fg: FeatureGroup, commit: int) -> CommitData | None:
    """The keys, columns and vectors of ``commit``'s view, each file verified; None when the commit has
    no view, or a view this does not read alone (composite keys, keys numpy cannot hold, no default
    vector): open the whole view then. :class:`CorruptData` when a file does not match its checksum."""
    folder = view_path(fg, commit)
    m = stored_manifest(folder, "online view")
    if m is None:
        return None
    part = (m.get("vectors") or {}).get(m.get("vector") or "")
    if part is None or len(m.get("keys") or ()) != 1 or m.get("key_hash_map"):
        return None
    sfx = part.get("suffix", "")
    files = m.get("files") or {}
    wanted = ["keys.npy", "columns.arrow", f"vectors{sfx}.npy", *([f"search{sfx}.npy"] if f"search{sfx}.npy" in files
                                                                    else [])]
    if any(w not in files for w in wanted):
        return None
    verify(folder, {"files": {w: files[w] for w in wanted}})
    try:
        keys, matrix = _mapped(folder / "keys.npy"), _mapped(folder / f"vectors{sfx}.npy")
        search = _mapped(folder / wanted[3]) if len(wanted) > 3 else matrix
        columns = pa.ipc.open_file(pa.memory_map(str(folder / "columns.arrow"))).read_all()
    except (OSError, ValueError, pa.ArrowException) as exc:
        raise CorruptData(f"online view at {folder} is unreadable: {exc}") from exc
    rows = int(m["rows"])
    if len(keys) != rows or columns.num_rows != rows or matrix.shape != (rows, part["dim"]):
        raise CorruptData(f"online view at {folder}: files disagree with the manifest ({rows} rows)")
    return CommitData(int(m["commit"]), rows, int(part["dim"]), str(part["metric"]), keys, columns, matrix, search)


def _mapped(path: Path) -> np.ndarray:
    return np.load(path, mmap_mode="r").view(np.ndarray)


def rows_of(keys: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """Rows of the keys ``wanted`` in the sorted unique ``keys`` (-1 where missing)."""
    if not len(keys):
        return np.full(len(wanted), -1, np.int64)
    idx = np.searchsorted(keys, wanted)
    idx[idx >= len(keys)] = len(keys) - 1
    return np.where(keys[idx] == wanted, idx, -1).astype(np.int64)
