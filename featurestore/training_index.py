"""Join indexes: a commit's narrow feature rows, sorted by (keys, event time), kept on disk.

An ASOF join sorts both of its sides by (key, time). The feature side is the big one (every row of
every commit: 3M rows for 30 commits of 100k keys) and it is the same for every training set read
from one commit, so it is sorted once and kept: a join index holds the keys, event time, ingestion
time, every scalar feature and the row position (where the vectors are gathered from) of one
commit's files, sorted, as an uncompressed Arrow IPC file that is memory-mapped on reuse. DuckDB's
ASOF join over already-sorted rows measured 1.5x less CPU than over the Parquet files, which it has to
decode and sort each time; the ASOF join and its semantics are unchanged (the index is its input).

Delta data files are immutable, so an index named by its commit's file list is valid for as long as
those files exist. For a local store it lives in ``<root>/_cache/joins/<name>/v<version>/``; the first
training set over a commit builds it (and uses it at once, while the cache writer thread of
:mod:`featurestore.training_vectors` saves it), later ones map it. At most
:data:`KEEP` indexes are kept per feature group version, the most recently used; ``featurestore cache``
shows them and ``--prune`` / ``--clear`` delete them. Object-store roots keep no index and read the
Parquet files directly.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import uuid
from typing import TYPE_CHECKING

import duckdb
import pyarrow as pa

from featurestore.training_sql import JoinGroup, index_sql
from featurestore.training_vectors import write_behind

if TYPE_CHECKING:
    from featurestore.store import FeatureStore

INDEX_DIR = "_cache/joins"
KEEP = 4  # join indexes kept per feature group version (most recently used first)
_FORMAT = "1"  # bump when the stored columns change: older indexes are then rebuilt


def index_path(store: FeatureStore, g: JoinGroup) -> str | None:
    """Where the join index of ``g``'s commit lives (None: object stores keep none)."""
    if not store.root.local or not g.files:
        return None
    names = "\n".join(os.path.basename(f) for f in g.files)
    digest = hashlib.sha256(f"{_FORMAT}\n{names}".encode()).hexdigest()[:32]
    return os.path.join(store.root.uri, INDEX_DIR, g.spec.name, f"v{g.spec.version}", f"{digest}.arrow")


def index_files(path: str) -> list[str] | None:
    """The data file names an index was built from (None: not a readable index)."""
    try:
        with pa.memory_map(path) as source:
            meta = pa.ipc.open_file(source).schema.metadata or {}
        return list(json.loads(meta[b"featurestore.files"]))
    except (OSError, pa.ArrowException, KeyError, ValueError):
        return None


def join_index(store: FeatureStore, g: JoinGroup, cur: duckdb.DuckDBPyConnection) -> pa.Table | None:
    """The join index of ``g``'s commit: mapped from disk, or built now (and saved). None when the
    store keeps no index."""
    path = index_path(store, g)
    if path is None:
        return None
    names = [os.path.basename(f) for f in g.files]
    if os.path.exists(path):
        try:
            with pa.memory_map(path) as source:
                reader = pa.ipc.open_file(source)
                meta = reader.schema.metadata or {}
                if json.loads(meta.get(b"featurestore.files", b"null")) == names:
                    table = reader.read_all()
                    with contextlib.suppress(OSError):
                        os.utime(path)  # most recently used
                    return table
        except (OSError, pa.ArrowException, ValueError):
            pass  # unreadable (a foreign or damaged file): built again below
    table = cur.sql(index_sql(g)).to_arrow_table()
    table = table.replace_schema_metadata({"featurestore.files": json.dumps(names)})
    write_behind(_save, path, table)  # this training set uses the table in memory meanwhile
    return table


def _save(path: str, table: pa.Table) -> None:
    """Write ``table`` atomically at ``path``, then keep only the :data:`KEEP` newest indexes there."""
    folder = os.path.dirname(path)
    tmp = f"{path}.{uuid.uuid4().hex}.tmp"
    try:
        os.makedirs(folder, exist_ok=True)
        with pa.OSFile(tmp, "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table, max_chunksize=1 << 20)
        os.replace(tmp, path)
    except OSError:  # an index that cannot be written is only a missed speed-up
        with contextlib.suppress(OSError):
            os.remove(tmp)
        return
    kept = sorted((f for f in os.listdir(folder) if f.endswith(".arrow")),
                  key=lambda f: _mtime(os.path.join(folder, f)), reverse=True)
    for old in kept[KEEP:]:
        with contextlib.suppress(OSError):
            os.remove(os.path.join(folder, old))


def _mtime(path: str) -> float:
    try:
        return os.path.getmtime(path)
    except OSError:  # deleted meanwhile (another process pruning)
        return 0.0
