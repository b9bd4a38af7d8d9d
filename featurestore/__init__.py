"""featurestore: versioned embedding feature groups on Delta Lake, queried through DuckDB.

Example::

    from featurestore import FeatureStore
    store = FeatureStore("./featurestore_data")
    store.apply("schemas/")
    fg = store.feature_group("item_embeddings", version=1)
    fg.insert(df, cutoff=cutoff)
    fg.read()
"""

from featurestore.errors import (
    BadVector,
    CommitConflict,
    CommitNotFound,
    DuplicateKey,
    EngineError,
    EventsError,
    FeatureGroupNotFound,
    FeatureStoreError,
    InvalidData,
    InvalidQuery,
    KeyNotFound,
    NotFound,
    NullKey,
    PipelineError,
    QueryError,
    ReportNotFound,
    SchemaMismatch,
    ServeError,
    SpecConflict,
    SpecError,
    SpineError,
    StorageError,
    TrainingSetNotFound,
    UnsafeOperation,
    ValidationError,
    ValidationFailed,
)
from featurestore.feature_group import Commit, FeatureGroup
from featurestore.schema import EntityKey, Feature, FeatureGroupSpec, OnlineSpec, load_spec, load_specs
from featurestore.store import ApplyResult, FeatureStore
from featurestore.version import __version__

__all__ = [
    "ApplyResult",
    "BadVector",
    "Commit",
    "CommitConflict",
    "CommitNotFound",
    "DuplicateKey",
    "EngineError",
    "EntityKey",
    "EventsError",
    "Feature",
    "FeatureGroup",
    "FeatureGroupNotFound",
    "FeatureGroupSpec",
    "FeatureStore",
    "FeatureStoreError",
    "InvalidData",
    "InvalidQuery",
    "KeyNotFound",
    "NotFound",
    "NullKey",
    "OnlineSpec",
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
    "__version__",
    "load_spec",
    "load_specs",
]
