"""The one exception tree of featurestore.

Every error the library raises on purpose derives from :class:`FeatureStoreError`; errors from the
backends (deltalake, DuckDB, pyarrow, great_expectations) are translated at the boundary with
``raise ... from exc`` so callers need to catch only this tree::

    FeatureStoreError
    ├── SpecError(ValueError)              a spec file or field is invalid (names the file and field)
    ├── SpecConflict                       a changed spec for an existing (name, version): bump the version
    ├── NotFound(KeyError)
    │   ├── FeatureGroupNotFound           unknown feature group or version
    │   ├── CommitNotFound                 no such commit / nothing committed at that time
    │   ├── KeyNotFound                    an online view has no row for that entity key
    │   ├── TrainingSetNotFound            no saved training dataset with that name or version
    │   ├── ServiceNotFound                no feature service with that name
    │   └── ReportNotFound                 no validation report with that id
    ├── InvalidData(ValueError)            a batch does not fit its spec; nothing was written
    │   ├── SchemaMismatch                 missing, extra or wrongly typed columns
    │   ├── BadVector                      wrong dimension, NaN/inf, null vector
    │   ├── NullKey                        null entity key or event time
    │   ├── DuplicateKey                   the same key twice within one event_time
    │   ├── InvalidQuery                   a lookup or similarity query is malformed (key type, dim, k, filter)
    │   └── SpineError                     a training-set spine lacks, or mistypes, a column it needs
    ├── EventsError(ValueError)            an event source is unusable (missing columns, null ids, bad times)
    ├── PipelineError                      a pipeline cannot run (bad parameters, too little data)
    ├── ValidationFailed                   a strict validation policy rejected the batch
    ├── ValidationError                    the validation could not run (great_expectations failed)
    ├── CommitConflict                     a concurrent writer won the race; retry
    ├── StorageError(OSError)              the table storage failed (I/O, corrupt log)
    │   ├── CorruptData                    a stored or derived file does not match its checksum
    │   ├── BucketNotFound                 an object-store root names a bucket that does not exist
    │   ├── StorageAccessDenied(PermissionError)  the object store refused the credentials
    │   └── StorageUnreachable(ConnectionError)   the object-store endpoint does not answer
    ├── QueryError                         DuckDB rejected a query
    ├── UnsafeOperation                    a command would delete or overwrite something it did not create
    └── ServeError                         the HTTP service cannot start as configured (no token off loopback)
"""

from __future__ import annotations

from typing import Any


class FeatureStoreError(Exception):
    """Root of every error raised by featurestore."""


class SpecError(FeatureStoreError, ValueError):
    """A feature-group spec is invalid. The message names the file and the field at fault."""

    def __init__(self, message: str, *, path: str | None = None, field: str | None = None):
        self.path = path
        self.field = field
        where = ": ".join(p for p in (path, field) if p)
        super().__init__(f"{where}: {message}" if where else message)


class SpecConflict(FeatureStoreError):
    """A spec differs from the one already registered for the same (name, version)."""


class NotFound(FeatureStoreError, KeyError):
    """Something looked up by name or number does not exist."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class FeatureGroupNotFound(NotFound):
    """No feature group (or no such version of it) is registered in this store."""


class CommitNotFound(NotFound):
    """No commit with that number, or none at or before that time."""


class KeyNotFound(NotFound):
    """An online view has no row for the entity key asked for (``view[key]``, ``nearest(key=...)``)."""


class TrainingSetNotFound(NotFound):
    """No saved training dataset with that name (or version)."""


class ServiceNotFound(NotFound):
    """No feature service with that name is registered (``schemas/services/<name>.yaml``, then apply)."""


class ReportNotFound(NotFound):
    """No validation report with that id in this store."""


class InvalidData(FeatureStoreError, ValueError):
    """A batch does not fit the feature group's spec. Nothing was written."""

    def __init__(self, message: str, *, column: str | None = None, rows: Any = None):
        self.column = column
        self.rows = rows
        super().__init__(message)


class SchemaMismatch(InvalidData):
    """Columns are missing, unexpected, or of a type that cannot be converted safely."""


class BadVector(InvalidData):
    """A vector has the wrong dimension, is null, or holds NaN or infinity."""


class NullKey(InvalidData):
    """An entity key or the event time is null."""


class DuplicateKey(InvalidData):
    """The same entity key appears more than once for one event_time."""


class InvalidQuery(InvalidData):
    """A lookup or similarity query is malformed: wrong key type, vector length, k, filter or column."""


class SpineError(InvalidData):
    """A training-set spine cannot be used: unreadable, or a key or time column is missing or mistyped."""


class EventsError(FeatureStoreError, ValueError):
    """An event source cannot be used: missing columns, null ids, unknown event types, bad times."""


class PipelineError(FeatureStoreError):
    """A pipeline cannot run: invalid parameters, too little data for the model, a bad pipeline file."""


class ValidationFailed(FeatureStoreError):
    """A strict validation policy rejected the batch; the report says why. Nothing was written."""

    def __init__(self, message: str, *, report: Any = None):
        self.report = report
        super().__init__(message)


class ValidationError(FeatureStoreError):
    """The validation itself could not run (e.g. great_expectations rejected the suite). Nothing was written."""


class CommitConflict(FeatureStoreError):
    """Another writer committed a conflicting change first. Nothing of this write is visible; retry."""


class StorageError(FeatureStoreError, OSError):
    """The table storage failed: I/O error, unreadable log, missing files."""


class CorruptData(StorageError):
    """A file does not match the checksum recorded for it (a damaged view, cache or data file). Nothing
    is served from it; derived files are rebuilt by ``featurestore check --repair``."""


class BucketNotFound(StorageError):
    """An object-store root (``s3://bucket/prefix``) names a bucket that does not exist at the endpoint."""


class StorageAccessDenied(StorageError, PermissionError):
    """The object store refused the request: missing, wrong or insufficient credentials."""


class StorageUnreachable(StorageError, ConnectionError):
    """The object-store endpoint does not answer (wrong ``AWS_ENDPOINT_URL``, server down, no network)."""


class QueryError(FeatureStoreError):
    """DuckDB rejected a query (syntax, unknown column, type error)."""


class UnsafeOperation(FeatureStoreError):
    """A command would delete or overwrite something it did not create (e.g. a demo into a real store)."""


class ServeError(FeatureStoreError):
    """The HTTP service cannot start as configured (e.g. a non-loopback address without a token)."""


__all__ = [
    "BadVector",
    "CommitConflict",
    "CommitNotFound",
    "CorruptData",
    "DuplicateKey",
    "EventsError",
    "FeatureGroupNotFound",
    "FeatureStoreError",
    "InvalidData",
    "InvalidQuery",
    "KeyNotFound",
    "NotFound",
    "NullKey",
    "PipelineError",
    "QueryError",
    "ReportNotFound",
    "SchemaMismatch",
    "ServeError",
    "SpecConflict",
    "SpecError",
    "SpineError",
    "StorageError",
    "TrainingSetNotFound",
    "UnsafeOperation",
    "ValidationError",
    "ValidationFailed",
]
