"""One feature group version: a Delta table of rows (keys, event_time, features) and its commits.

Example::

    fg = store.feature_group("user_embeddings", version=1)
    commit = fg.insert(df, cutoff=datetime(2026, 11, 1, tzinfo=UTC))   # check, then one atomic commit
    fg.read()                        # newest commit, as a pyarrow Table
    fg.read(commit=commit.commit)    # exactly that commit
    fg.read(commit_time=yesterday)   # the newest commit at or before that wall-clock time
    fg.latest()                      # newest row per key
    fg.history()                     # [Commit, ...] with their metadata

Words (docs/concepts.md): a *commit* is one atomic write (a Delta version number); its *commit time*
is when it landed; a run's *cutoff* is the instant up to which it read events, stamped on its rows as
their *event time*.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

import numpy as np
import pyarrow as pa

from featurestore.conform import conform, to_utc
from featurestore.engine import frame_engine
from featurestore.engine.base import Engine, FrameEngine
from featurestore.errors import CommitNotFound, InvalidData
from featurestore.schema import TIMESTAMP, FeatureGroupSpec
from featurestore.storage import delta
from featurestore.storage.checksums import recorded_checksums, verify_data_files
from featurestore.storage.delta import META_PREFIX
from featurestore.storage.duck import INGESTED_AT
from featurestore.storage.fs import Root, remove_dead_temporaries
from featurestore.storage.staging import AdoptedFiles, StagedAppend, StagedBatches, WrittenObjects
from featurestore.validation.batches import BatchChecks
from featurestore.validation.frames import FrameGate
from featurestore.validation.report import ValidationReport
from featurestore.validation.runner import InsertGate, check_batch, validate_commit

FRAME_STAGING = "_staging"  # inside a table's folder: where Spark writes a batch before its commit
_FRAME_PREFIX = "spark-"

#: called with (feature_group, conformed batch) before a commit (a Spark insert: its Spark DataFrame);
#: may raise to refuse it, or return
#: extra commit metadata (str -> str)
BeforeCommit = Callable[["FeatureGroup", pa.Table], Mapping[str, str] | None]


@dataclass(frozen=True)
class Committed:
    """What a post-commit hook is told: the commit's number, the conformed batch it wrote, and the data
    files it added (local paths: on an object store, the copies in its cache folder)."""

    commit: int
    batch: pa.Table
    files: tuple[tuple[str, int, int], ...] | None  # (path, first row in batch, rows)


#: called after a commit landed; must not raise (a failure there cannot undo the commit): the layer
#: that registers it owns its errors
AfterCommit = Callable[["FeatureGroup", Committed], None]
#: called as each batch of :meth:`FeatureGroup.insert_batches` is written, with the batch (conformed, still
#: in memory) and its files ((path, first row in the batch, rows)): work that needs the rows and may be done
#: before the commit lands (training caches); :data:`Discarded` undoes it if the insert then fails
BatchStaged = Callable[["FeatureGroup", pa.Table, list[tuple[str, int, int]]], None]
#: called with the paths of the data files an insert wrote and deleted (it failed): nothing refers to them
Discarded = Callable[["FeatureGroup", list[str]], None]
Metadata = Mapping[str, Any] | Callable[[int], Mapping[str, Any]] | None  # a commit's, or a function of its rows


@dataclass
class CommitHooks:
    """Work around a commit, registered by the layer that owns it (validation runs inside the commit
    itself): ``before`` may refuse a batch or add commit metadata; ``after`` follows each commit
    (training caches, SQL view refresh). Shared by every feature group of one store."""

    before: list[BeforeCommit] = field(default_factory=list)
    after: list[AfterCommit] = field(default_factory=list)
    staged: list[BatchStaged] = field(default_factory=list)
    discarded: list[Discarded] = field(default_factory=list)


@dataclass(frozen=True)
class GroupContext:
    """All a :class:`FeatureGroup` needs: its spec, where its table lives, the storage and the engine,
    and the commit hooks. Never the store: a feature group knows nothing of the layers above it."""

    spec: FeatureGroupSpec
    root: Root
    rel: str  # the table's folder, relative to the root
    engine: Engine
    hooks: CommitHooks = field(default_factory=CommitHooks)


@dataclass(frozen=True)
class Commit:
    """One commit of a feature group's table, with the metadata its writer recorded."""

    feature_group: str
    version: int  # the feature group's (schema) version
    commit: int  # the table's commit number (Delta version), 0 = creation
    timestamp: datetime  # when it was committed (UTC, millisecond resolution)
    operation: str  # "create", "insert" or "compact" (or Delta's own name for another writer's)
    row_count: int = 0
    run_id: str | None = None
    cutoff: datetime | None = None  # the writer's data cutoff (a pipeline run's), if it gave one
    metadata: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    extra: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))  # other featurestore.* keys

    def to_dict(self) -> dict[str, Any]:
        return {
            "feature_group": self.feature_group,
            "version": self.version,
            "commit": self.commit,
            "timestamp": self.timestamp.isoformat(),
            "operation": self.operation,
            "row_count": self.row_count,
            "run_id": self.run_id,
            "cutoff": self.cutoff.isoformat() if self.cutoff else None,
            "metadata": dict(self.metadata),
            **{k: v for k, v in self.extra.items()},
        }


def _commit_from_entry(spec: FeatureGroupSpec, entry: Mapping[str, Any]) -> Commit:
    ours = {k[len(META_PREFIX):]: v for k, v in entry.items() if k.startswith(META_PREFIX)}
    cutoff = ours.pop("cutoff", None) or ours.pop("as_of", None)  # "as_of": tables written before 0.2
    user = ours.pop("metadata", None)
    op = entry.get("operation", "")
    rows = ours.pop("row_count", None)
    if rows is None:
        rows = (entry.get("operationMetrics") or {}).get("num_added_rows", 0)
    return Commit(
        feature_group=spec.name,
        version=spec.version,
        commit=int(entry["version"]),
        timestamp=datetime.fromtimestamp(entry["timestamp"] / 1000, tz=UTC),
        operation=ours.pop("operation", None)
        or ("create" if op == "CREATE TABLE" else "insert" if op == "WRITE" else op.lower()),
        row_count=int(rows),
        run_id=ours.pop("run_id", None),
        cutoff=datetime.fromisoformat(cutoff) if cutoff else None,
        metadata=MappingProxyType(json.loads(user) if user else {}),
        extra=MappingProxyType(ours),
    )


class FeatureGroup:
    """A handle on one (name, version) of a store. Get it from :meth:`FeatureStore.feature_group`."""

    def __init__(self, context: GroupContext):
        self.context = context
        self.spec = context.spec
        self.root = context.root
        self.engine = context.engine
        self.rel = context.rel
        self.uri = context.root.uri_of(self.rel)
        #: hooks run on this group's conformed batches before they commit (besides the store's)
        self.before_commit: list[BeforeCommit] = []

    def __repr__(self) -> str:
        return f"FeatureGroup({self.spec.name!r}, version={self.spec.version}, uri={self.uri!r})"

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def version(self) -> int:
        return self.spec.version

    # ---- write ------------------------------------------------------------------------------
    def insert(self, data: Any, cutoff: datetime | None = None, metadata: Metadata = None) -> Commit:
        """Check ``data`` against the spec, then write it as one atomic commit and return it.

        ``data`` is a pandas DataFrame, a pyarrow Table, a Parquet path or a Spark DataFrame (checked,
        written and validated by Spark, committed by delta-rs: see docs/scale-out.md). ``cutoff`` (the instant up to
        which the writer read its inputs) is recorded in the commit and fills ``event_time`` when the
        batch has no such column.
        ``metadata`` (JSON-serialisable) is stored with the commit; it may be a function of the number of
        rows, called once they are written (a Spark job's counts). A batch that does not fit raises
        an :class:`~featurestore.errors.InvalidData` subclass and writes nothing.
        """
        frames = frame_engine(data, self.engine)
        if frames is not None:  # a Spark DataFrame: checked, written and validated by Spark
            return self._insert_frame(frames, data, cutoff, metadata)
        batch = conform(self.spec, data, cutoff=cutoff)
        return self.commit_batch(batch, cutoff=cutoff, metadata=metadata)

    def check(self, data: Any, cutoff: datetime | None = None) -> ValidationReport:
        """Check ``data`` as :meth:`insert` would (conform, then every validation check against the
        newest commit) without committing or storing anything; returns the report (``.success``,
        ``.summary()``)."""
        return check_batch(self, conform(self.spec, data, cutoff=cutoff))

    def validate(self, commit: int | None = None, *, commit_time: datetime | None = None,
                 save: bool = True) -> ValidationReport:
        """Re-validate a stored commit (default: the newest) against the commit before it, and store the
        report unless ``save=False``."""
        return validate_commit(self, self.commit_of(commit, commit_time=commit_time), save=save)

    def commit_batch(self, batch: pa.Table, *, cutoff: datetime | None = None, metadata: Metadata = None,
                     extra: Mapping[str, str] | None = None) -> Commit:
        """Validate an already conformed batch (see :func:`featurestore.conform.conform`), then commit it.

        The spec's checks run first (:mod:`featurestore.validation`); the report is stored and linked
        from the commit (``validation_report``, ``validation_status``). Under ``policy: strict`` a
        failing batch raises :class:`~featurestore.errors.ValidationFailed` and nothing is committed.
        """
        run_id, meta = self._commit_metadata(batch.num_rows, cutoff, metadata)
        # the data files are written in the background while the batch is checked; only the commit
        # waits for the checks (and is skipped, the files deleted, when they or a hook refuse the batch)
        staged = StagedAppend(self.root, self.rel, lambda: self._storage_table(batch))
        try:
            meta.update(self._hooked(batch))
            for k, v in (extra or {}).items():
                meta[META_PREFIX + k] = str(v)
            # every batch is validated last, on exactly what will be written; strict failures raise here
            gate = InsertGate(self, batch)
            info = self._land(staged, gate, run_id, meta)
        except BaseException:
            staged.discard()
            raise
        return self._landed(gate, info, batch, tuple(staged.files))

    def insert_batches(self, batches: Iterable[Any], cutoff: datetime | None = None,
                       metadata: Metadata = None) -> Commit:
        """Insert the rows of several batches as one atomic commit, holding one batch at a time.

        Each batch (anything :meth:`insert` takes but a Spark DataFrame) is conformed, passed to the
        pre-commit hooks and written to data files as it arrives; only its keys, event times and its
        vectors' norms are kept (on disk past two million rows, inside the engine's ``temp_directory``
        when set; :mod:`featurestore.validation.batches`). Then keys are
        checked unique across the batches and every check runs over all the rows, exactly as
        :meth:`insert` runs them on one batch holding them all; the commit follows, or (a failed batch,
        strict validation, an error) every file is deleted and nothing is committed. ``metadata`` may be
        a function of the number of rows: it is called once every batch has been read (a streaming
        writer's counts).
        Post-commit hooks are told the files (``Committed.files``) as None: there is no batch in memory;
        the ``staged`` hooks are told each batch and its files as they are written instead (the training
        caches copy its vectors then), and the ``discarded`` hooks the files of a failed insert.
        """
        checks = BatchChecks(self.spec, spill_dir=self.engine.temp_directory)  # makes no folder until it spills
        staged = StagedBatches(self.root, self.rel, storage_schema(self.spec))
        now = datetime.now(UTC)
        try:
            hooked: dict[str, str] = {}
            for data in batches:
                batch = conform(self.spec, data, cutoff=cutoff)
                hooked.update(self._hooked(batch))
                files = staged.add(self._storage_table(batch, now))
                checks.add(batch, files)
                if files:
                    first = files[0][1]  # rows numbered within the append: within the batch for the hooks
                    for hook in self.context.hooks.staged:
                        hook(self, batch, [(path, start - first, n) for path, start, n in files])
                del batch, data
                pa.default_memory_pool().release_unused()  # the batch's buffers, not kept for the next
            if not checks.added:  # no batch: an empty insert, validated as such
                empty = conform(self.spec, self.spec.arrow_schema().empty_table())
                checks.add(empty, staged.add(self._storage_table(empty, now)))
            table, derived = checks.finish()
            run_id, meta = self._commit_metadata(table.num_rows, cutoff, metadata)
            meta.update(hooked)
            gate = InsertGate(self, table, derived, lambda: checks.suite.results(table))
            info = self._land(staged, gate, run_id, meta)
        except BaseException:
            staged.discard()
            for undo in self.context.hooks.discarded:
                undo(self, list(staged.paths))
            raise
        finally:
            checks.keys.close()  # the keys spilled to disk, if any
        return self._landed(gate, info, storage_schema(self.spec).empty_table(), None)

    def _hooked(self, batch: Any) -> dict[str, str]:
        """The commit metadata the pre-commit hooks (the store's, then this group's) add for ``batch``."""
        out: dict[str, str] = {}
        for hook in [*self.context.hooks.before, *self.before_commit]:
            out.update({META_PREFIX + k: str(v) for k, v in (hook(self, batch) or {}).items()})
        return out

    def _land(self, staged: Any, gate: InsertGate | FrameGate, run_id: str, meta: dict[str, str]) -> dict[str, Any]:
        """Commit the staged files with the validation verdict in the metadata; the new commit's log entry."""
        meta.update({META_PREFIX + k: v for k, v in gate.metadata.items()})
        staged.commit(meta)
        return delta.commit_of_run(self.root, self.rel, run_id)

    def _landed(self, gate: InsertGate | FrameGate, info: dict[str, Any], batch: pa.Table,
                files: tuple[tuple[str, int, int], ...] | None) -> Commit:
        """After a commit: the validation report linked to it, the post-commit hooks told; the Commit."""
        gate.committed(int(info["version"]))
        done = Committed(int(info["version"]), batch, files)
        for after in self.context.hooks.after:
            after(self, done)
        return _commit_from_entry(self.spec, info)

    def _commit_metadata(self, rows: int, cutoff: datetime | None, metadata: Metadata
                         ) -> tuple[str, dict[str, str]]:
        """A new run id and the commit metadata every insert records (``metadata`` a mapping, or a function
        of ``rows`` giving one)."""
        if callable(metadata):
            metadata = metadata(rows)
        try:
            user_meta = json.dumps(dict(metadata or {}), sort_keys=True, default=_json_default)
        except (TypeError, ValueError) as exc:
            raise InvalidData(f"commit metadata must be JSON-serialisable: {exc}") from exc
        run_id = uuid.uuid4().hex
        meta = {
            META_PREFIX + "run_id": run_id,
            META_PREFIX + "row_count": str(rows),
            META_PREFIX + "metadata": user_meta,
            META_PREFIX + "spec": self.spec.fingerprint(),
        }
        if cutoff is not None:
            meta[META_PREFIX + "cutoff"] = to_utc(cutoff).isoformat()
        return run_id, meta

    def _insert_frame(self, engine: FrameEngine, data: Any, cutoff: datetime | None, metadata: Metadata) -> Commit:
        """Insert an engine's frame (a Spark DataFrame): the engine checks it and writes its files into a
        staging folder inside the table's (named after this process, so a killed writer's is removed by
        the next) or, on object storage, as new objects directly under the table's prefix (an engine
        that reads objects itself; a killed writer's are referenced by no commit, removed by ``vacuum``),
        the frame is validated where it lives, then the files are committed by delta-rs as one ordinary
        Delta commit, exactly as :meth:`commit_batch` commits a batch's files."""
        folder = base = None
        if self.root.local:
            base = self.root._path(f"{self.rel}/{FRAME_STAGING}")
            os.makedirs(base, exist_ok=True)
            remove_dead_temporaries(base, _FRAME_PREFIX)
            folder = os.path.join(base, f"{_FRAME_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:12]}")
        elif isinstance(engine, Engine) and engine.reads_objects:
            folder = self.root.uri_of(self.rel)
            engine.use_objects(folder, self.root.storage_options, {})
        else:
            raise InvalidData(f"{self.spec.key}: {type(engine).__name__} cannot write to {self.root.uri} (it "
                              f"reads no object store itself)")
        staged: AdoptedFiles | WrittenObjects | None = None
        try:
            written = engine.stage_frame(self.spec, data, cutoff=cutoff, folder=folder, ingested_at=datetime.now(UTC))
            run_id, meta = self._commit_metadata(written.rows, cutoff, metadata)
            schema = storage_schema(self.spec)
            staged = AdoptedFiles(self.root, self.rel, list(written.files), schema) if base is not None else \
                WrittenObjects(self.root, self.rel, written.objects, schema)
            frame = engine.read_frame(self.spec, staged.paths if base is not None else list(written.files))
            meta.update(self._hooked(frame))  # exactly the rows the commit adds
            gate = FrameGate(self, frame, engine, written.rows)
            info = self._land(staged, gate, run_id, meta)
        except BaseException:
            if staged is not None:
                staged.discard()
            raise
        finally:
            if base is not None:
                shutil.rmtree(folder, ignore_errors=True)
                with contextlib.suppress(OSError):
                    os.rmdir(base)  # only when empty: another writer may be staging there
        return self._landed(gate, info, storage_schema(self.spec).empty_table(), None)

    def _storage_table(self, batch: pa.Table, now: datetime | None = None) -> pa.Table:
        """``batch`` in the table's schema, each row stamped ``_ingested_at`` with ``now`` (default: the
        writer's clock now, just before its files are written and committed)."""
        schema = storage_schema(self.spec)
        cols = [batch[f.name].cast(f.type) for f in schema if f.name != INGESTED_AT]
        stamp = pa.repeat(pa.scalar(now or datetime.now(UTC), TIMESTAMP), batch.num_rows)
        return pa.Table.from_arrays([*cols, stamp], schema=schema)

    # ---- read -------------------------------------------------------------------------------
    def _table(self, commit: int | None = None, commit_time: datetime | None = None) -> Any:
        """The Delta table at ``commit``, or at the newest commit at or before ``commit_time``, or newest."""
        opts = self.root.storage_options
        if commit is not None and commit_time is not None:
            raise InvalidData(f"{self.spec.key}: give commit= or commit_time=, not both")
        if commit_time is not None:
            if not isinstance(commit_time, datetime):
                raise InvalidData(f"{self.spec.key}: commit_time must be a datetime (wall-clock time); "
                                  f"got {commit_time!r}")
            return delta.open_table(self.uri, delta.version_at(self.root, self.rel, commit_time),
                                    storage_options=opts)
        if commit is not None and (isinstance(commit, bool) or not isinstance(commit, int)):
            hint = " (for a wall-clock time, pass commit_time=)" if isinstance(commit, datetime) else ""
            raise InvalidData(f"{self.spec.key}: commit must be a commit number; got {commit!r}{hint}")
        return delta.open_table(self.uri, commit, storage_options=opts)

    def commit_of(self, commit: int | None = None, *, commit_time: datetime | None = None) -> int:
        """The commit number that ``commit`` / ``commit_time`` resolves to (neither: the newest)."""
        return int(self._table(commit, commit_time).version())

    def files(self, commit: int | None = None, *, commit_time: datetime | None = None,
              verify: bool = True) -> list[str]:
        """Local paths of the Parquet files making up one commit (what the engine reads for it), each
        checked against the checksum its commit recorded (once per process; ``verify=False``: the caller
        checks them with :meth:`verify_files` before it reads them). On an object store these are copies
        in the store's cache folder, downloaded on first use; see :meth:`file_uris` for where the files
        are stored."""
        return self.commit_files(commit, commit_time=commit_time, verify=verify)[1]

    def file_uris(self, commit: int | None = None, *, commit_time: datetime | None = None) -> list[str]:
        """Where the Parquet files of one commit are stored (``s3://...`` on an object store): what an
        engine with its own object-store access (a Spark cluster) reads."""
        return delta.file_uris(self._table(commit, commit_time))

    def commit_files(self, commit: int | None = None, *, commit_time: datetime | None = None,
                     verify: bool = True) -> tuple[int, list[str]]:
        """:meth:`commit_of` and :meth:`files` together, reading the log once."""
        dt = self._table(commit, commit_time)
        files = self.root.readable(delta.file_uris(dt))
        if verify:
            self.verify_files(files)
        return int(dt.version()), files

    def engine_files(self, engine: Engine, commit: int | None = None, *, verify: bool = False
                     ) -> tuple[int, list[str]]:
        """:meth:`commit_files` in the form ``engine`` reads: on an object store, an engine that reads
        objects itself (Spark) gets their URIs, having been told the store's settings and the recorded
        checksums (it checks each file as it reads it); otherwise local paths (checked if ``verify``)."""
        if self.root.local or not engine.reads_objects:
            return self.commit_files(commit, verify=verify)
        dt = self._table(commit, None)
        uris = delta.file_uris(dt)
        sums = recorded_checksums(self.root, self.rel)
        if any(u.rsplit("/", 1)[-1] not in sums for u in uris):
            sums = recorded_checksums(self.root, self.rel, refresh=True)  # commits made since the log was read
        engine.use_objects(self.root.uri_of(self.rel), self.root.storage_options, sums)
        return int(dt.version()), uris

    def verify_files(self, files: list[str]) -> None:
        """Check data files of this table against the checksums their commits recorded (each once per
        process while it is unchanged): :class:`~featurestore.errors.CorruptData` names a damaged one."""
        verify_data_files(self.root, self.rel, files, self.spec.key)

    def read(self, commit: int | None = None, *, commit_time: datetime | None = None,
             columns: list[str] | None = None, system_columns: bool = False) -> pa.Table:
        """All rows of one commit as a pyarrow Table in the spec's schema: ``commit`` (a number), or the
        newest commit at or before wall-clock ``commit_time``, or (neither) the newest commit.

        ``system_columns=True`` adds ``_ingested_at``, the writer's clock just before each row's commit.
        """
        schema = self.spec.arrow_schema()
        wanted = columns or schema.names
        unknown = [c for c in wanted if c not in schema.names and c != INGESTED_AT]
        if unknown:
            raise InvalidData(f"{self.spec.key} has no column(s) {', '.join(unknown)}")
        dt = self._table(commit, commit_time)
        if self.root.local:
            self.verify_files(delta.file_uris(dt))
        stored = storage_schema(self.spec)
        asked = list(dict.fromkeys([*wanted, *([INGESTED_AT] if system_columns else [])]))
        names = None if len(asked) == len(stored) else asked  # only the columns asked for are decoded
        with delta.translated(f"reading {self.uri}", self.uri, self.root.storage_options):
            if self.root.local:
                raw = dt.to_pyarrow_table(columns=names)
            else:  # the cached copies of the (immutable) data files: downloaded once per machine
                import pyarrow.parquet as pq

                files = self.root.readable(delta.file_uris(dt))
                self.verify_files(files)
                raw = pq.read_table(files, schema=stored, columns=names) if files else stored.empty_table()
        arrays, fields = [], []
        for name in wanted:
            f = schema.field(name) if name in schema.names else pa.field(INGESTED_AT, TIMESTAMP)
            arrays.append(raw[name].cast(f.type))
            fields.append(f)
        if system_columns and INGESTED_AT not in wanted:
            arrays.append(raw[INGESTED_AT])
            fields.append(pa.field(INGESTED_AT, TIMESTAMP))
        return pa.Table.from_arrays(arrays, schema=pa.schema(fields))

    def latest(self, commit: int | None = None, *, commit_time: datetime | None = None,
               columns: list[str] | None = None) -> pa.Table:
        """The newest row per key (greatest event_time; a later commit wins a tie) of one commit (as in
        :meth:`read`), sorted by key; ``columns``: only these (default: every column of the spec).

        The engine chooses the rows from the keys and times alone; the other columns (vectors) are then
        taken by position, so each is held once as read and once as returned, never copied by the engine.
        """
        spec = self.spec
        chooser = [*spec.key_names, spec.event_time]
        wanted = columns or spec.arrow_schema().names
        table = self.read(commit, commit_time=commit_time, columns=list(dict.fromkeys([*chooser, *wanted])),
                          system_columns=True)
        position = pa.array(np.arange(table.num_rows, dtype=np.int64))
        narrow = table.select([*chooser, INGESTED_AT]).append_column(_POSITION, position)
        chosen = self.engine.latest(narrow, spec.key_names, spec.event_time, INGESTED_AT)[_POSITION]
        return table.select(wanted).take(chosen)

    def history(self) -> list[Commit]:
        """Every commit of this table, oldest first, with the metadata recorded by its writer."""
        return [_commit_from_entry(self.spec, e) for e in delta.history(self.root, self.rel)]

    def commit(self, number: int) -> Commit:
        """Commit ``number`` with its metadata."""
        for c in self.history():
            if c.commit == number:
                return c
        raise CommitNotFound(f"{self.spec.key} has no commit {number}")

    def count(self, commit: int | None = None, *, commit_time: datetime | None = None) -> int:
        """Rows in one commit (as in :meth:`read`; default: the newest)."""
        return self.read(commit, commit_time=commit_time, columns=[self.spec.event_time]).num_rows


_POSITION = "__fs_position"  # a row's position in what :meth:`FeatureGroup.latest` read


def storage_schema(spec: FeatureGroupSpec) -> pa.Schema:
    """The Delta table's schema: the spec's columns (vectors as lists) plus ``_ingested_at``."""
    fields = [f.with_nullable(True) for f in spec.storage_schema()]
    return pa.schema([*fields, pa.field(INGESTED_AT, TIMESTAMP)])


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")
