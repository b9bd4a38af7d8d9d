"""Model artifacts: files a commit needs besides its rows (a sequence model's weights), kept next to the table.

An artifact is written once under ``<table>/_models/`` with its SHA-256 in the name (the same bytes
always land at the same path, so a re-run writes nothing new) and is recorded in the commit's metadata
as ``{"path", "sha256", "bytes"}``. Reading verifies the checksum: a mismatch or a missing file is
:class:`~featurestore.errors.CorruptData`, never a wrong model. The folder starts with ``_``, which
Delta vacuum skips, and no upkeep command removes an artifact, so one is never lost while a commit
refers to it.
"""

from __future__ import annotations

import hashlib
from typing import Any

from featurestore.errors import CorruptData
from featurestore.storage.fs import Root

MODELS_DIR = "_models"


def save(root: Root, table_rel: str, data: bytes, *, kind: str) -> dict[str, Any]:
    """Write ``data`` under the table's models folder (if not there already); returns its record."""
    digest = hashlib.sha256(data).hexdigest()
    rel = f"{MODELS_DIR}/{kind}-{digest}.bin"
    full = f"{table_rel}/{rel}"
    if not (root.exists(full) and hashlib.sha256(root.read_bytes(full)).hexdigest() == digest):
        root.write_bytes(full, data)
    return {"path": rel, "sha256": digest, "bytes": len(data)}


def load(root: Root, table_rel: str, record: dict[str, Any]) -> bytes:
    """The artifact's bytes, verified against the record's SHA-256 and size."""
    try:
        rel, digest, size = str(record["path"]), str(record["sha256"]), int(record["bytes"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CorruptData(f"a model artifact record lacks path/sha256/bytes: {record!r}") from exc
    full = f"{table_rel}/{rel}"
    try:
        data = root.read_bytes(full)
    except FileNotFoundError as exc:
        raise CorruptData(f"the model artifact {root.uri_of(full)} is missing") from exc
    if len(data) != size or hashlib.sha256(data).hexdigest() != digest:
        raise CorruptData(f"the model artifact {root.uri_of(full)} does not match its checksum "
                          f"(sha256 {digest[:12]}..., {size} bytes recorded; {len(data)} bytes found)")
    return data


def listed(root: Root, table_rel: str) -> list[str]:
    """The artifact files of a table (paths relative to the table folder)."""
    return [f"{MODELS_DIR}/{n}" for n in root.listdir(f"{table_rel}/{MODELS_DIR}") if n.endswith(".bin")]
