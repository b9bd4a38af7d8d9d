"""FeatureStore: the one entry object. A root folder (or URI), a registry of feature-group specs kept
inside it, one Delta table per (name, version), and DuckDB views over them.

Example::

    from featurestore import FeatureStore
    store = FeatureStore("./featurestore_data")
    store.apply("schemas/")
    fg = store.feature_group("user_embeddings", version=1)
    fg.insert(df, cutoff=cutoff)
    store.sql("SELECT user_id, n_events FROM user_embeddings LIMIT 5").df()
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any, Literal

import duckdb

from featurestore import operations
from featurestore.catalog import ApplyResult, Catalog, resolve_root
from featurestore.engine import resolve
from featurestore.engine.base import Engine, EngineName
from featurestore.engine.duckdb import DuckDBEngine
from featurestore.engine.duckdb_pairs import MAX_PAIRS
from featurestore.errors import FeatureGroupNotFound, InvalidData, QueryError
from featurestore.feature_group import Committed, FeatureGroup
from featurestore.online.open import open_online
from featurestore.online.service import FeatureService, service_features
from featurestore.online.view import OnlineView
from featurestore.operations import Problem, Upkeep
from featurestore.schema import FeatureGroupSpec
from featurestore.schema.service import check_service, group_specs
from featurestore.storage import delta
from featurestore.storage.checksums import verify_data_files
from featurestore.storage.duck import INGESTED_AT, Duck, quote, relation_sql
from featurestore.storage.fs import Root
from featurestore.training import (
    TRAINING_SET_NAME,
    SavedTrainingSet,
    TrainingSet,
    flush_cache_writes,
    install_training_hooks,
    load_training_set,
    plan,
    save_training_set,
)
from featurestore.validation.report import ValidationReport, checks_view_sql, reports_view_sql

__all__ = ["ApplyResult", "FeatureStore"]

_PINNED = re.compile(r"^(?P<name>[a-z_][a-z0-9_]*?)_v(?P<version>\d+)$")


class FeatureStore:
    """An embedding feature store rooted at a folder or URI (default ``$FEATURESTORE_ROOT`` or
    ``./featurestore_data``). Opening needs no ``schemas/`` folder: the specs live in the store.

    ``cache_vectors``: keep each data file's vectors as a raw float32 matrix under ``_cache/vectors``
    too, written behind each insert, so training sets gather vectors without decoding Parquet.
    ``join_caches``: keep each commit's narrow feature rows sorted by (keys, event time) under
    ``_cache/joins``, built by the first training set over that commit, so later ones skip the sort. Both
    live beside a local store, and in the local cache folder of a store on object storage (with the
    copies of its data files; see docs/object-storage.md). ``storage_options``: object-store settings
    (credentials, region, endpoint) over the AWS variables. ``engine``: what scans data in bulk
    (default: DuckDB, in this process).
    ``memory_limit`` (DuckDB units, ``"4GB"``) and ``temp_directory``: how much memory the default
    DuckDB engine may use and where it spills beyond that (pipelines' event reads, training-set
    joins); ``max_pairs``: the distinct item pairs its co-occurrence counts hold in memory before only
    each item's strongest pairs are kept (None: no bound); see docs/performance.md.
    """

    def __init__(self, root: str | os.PathLike[str] | None = None, *,
                 storage_options: dict[str, str] | None = None, echo: bool = False,
                 cache_vectors: bool = True, join_caches: bool = True, engine: Engine | None = None,
                 memory_limit: str | None = None, temp_directory: str | None = None,
                 max_pairs: int | None = MAX_PAIRS):
        location = Root(resolve_root(root), storage_options)
        location.check()  # an object store: a missing bucket, refused keys or a dead endpoint fail here, typed
        self.duck = Duck(echo=echo)
        if engine is None:
            engine = DuckDBEngine(self.duck, memory_limit=memory_limit, temp_directory=temp_directory,
                                  max_pairs=max_pairs)
        elif memory_limit is not None or temp_directory is not None or max_pairs != MAX_PAIRS:
            raise QueryError("memory_limit, temp_directory and max_pairs configure the default DuckDB engine: "
                             "give them to the engine you pass instead (DuckDBEngine(memory_limit=...))")
        self.catalog = Catalog(location, engine,
                               cache_vectors=cache_vectors, join_caches=join_caches)
        self.root = self.catalog.root
        self.engine = self.catalog.engine
        self._tables: dict[tuple[str, int], Any] = {}  # cached DeltaTables for view refresh
        #: further views of this store (name -> function of the store returning a SELECT)
        self._extra_views: dict[str, Callable[[FeatureStore], str]] = {
            "validation_reports": lambda store: reports_view_sql(store.root),
            "validation_checks": lambda store: checks_view_sql(store.root),
        }
        self.catalog.hooks.after.append(self._table_changed)
        install_training_hooks(self.catalog)

    def __repr__(self) -> str:
        return f"FeatureStore({self.root.uri!r})"

    # ---- registry (see featurestore.catalog) ------------------------------------------------
    table_path = staticmethod(Catalog.table_path)

    def init(self) -> bool:
        """Create the root (idempotent). Returns True when it was created now."""
        return self.catalog.init()

    def apply(self, specs: str | os.PathLike[str] | FeatureGroupSpec | list[Any]) -> list[ApplyResult]:
        """Register specs (a folder, file(s) or FeatureGroupSpec objects) and create their tables.

        Re-applying an unchanged spec does nothing; a change of descriptions only updates the registry.
        Any other change for an existing (name, version) raises :class:`SpecConflict`: a new
        dimension, model or breaking change is a new version. All specs are checked before any is registered.
        """
        return self.catalog.apply(specs)

    def specs(self) -> list[FeatureGroupSpec]:
        """Every registered spec, by name then version."""
        return self.catalog.specs()

    def versions(self, name: str) -> list[int]:
        """The registered versions of feature group ``name``, oldest first."""
        return self.catalog.versions(name)

    def feature_group(self, name: str, version: int | None = None) -> FeatureGroup:
        """The feature group ``name`` at ``version`` (default: its newest version)."""
        return self.catalog.feature_group(name, version)

    @property
    def cache_vectors(self) -> bool:
        """Whether inserts also write the training vector cache."""
        return self.catalog.cache_vectors

    @cache_vectors.setter
    def cache_vectors(self, on: bool) -> None:
        self.catalog.cache_vectors = on

    @property
    def join_caches(self) -> bool:
        """Whether training sets keep and use sorted join caches."""
        return self.catalog.join_caches

    @join_caches.setter
    def join_caches(self, on: bool) -> None:
        self.catalog.join_caches = on

    # ---- SQL --------------------------------------------------------------------------------
    def _table_changed(self, fg: FeatureGroup, done: Committed) -> None:
        """After a commit (a post-commit hook): this process's views see it without polling."""
        self._tables.pop((fg.name, fg.version), None)

    def refresh_views(self, only: str | None = None) -> list[str]:
        """Point every view at its table's newest commit; returns the view names.

        Per feature group: ``<name>_v<version>`` holds every row of that version's newest commit (each
        key's whole history), ``<name>`` the same for the newest version, and ``<name>_latest`` /
        ``<name>_v<version>_latest`` only the newest row per key (what serving returns). ``only``: just
        the feature groups whose name occurs in this text (a query), as :meth:`sql` does on object storage.
        """
        names: set[str] = set()
        newest: dict[str, FeatureGroupSpec] = {}
        for spec in self.specs():
            if only is not None and spec.name not in only:
                continue  # a query that never names the group cannot read its views
            key = (spec.name, spec.version)
            dt = self._tables.get(key)
            if dt is None:
                dt = self._tables[key] = delta.open_table(
                    self.root.uri_of(self.table_path(*key)), storage_options=self.root.storage_options)
            else:
                with delta.translated(f"refreshing {spec.key}"):
                    dt.update_incremental()
            files = self.root.readable(delta.file_uris(dt))
            # what DuckDB will read, checked against the commits' checksums (each file once per process)
            verify_data_files(self.root, self.table_path(*key), files, spec.key)
            select = relation_sql(spec, files)
            pinned = f"{spec.name}_v{spec.version}"
            self.duck.set_view(pinned, select)
            self.duck.set_view(f"{pinned}_latest", _latest_sql(spec, pinned))
            names.update((pinned, f"{pinned}_latest"))
            newest[spec.name] = spec
        for name, spec in newest.items():
            self.duck.set_view(name, self.duck_view_sql(spec.name, spec.version))
            self.duck.set_view(f"{name}_latest", _latest_sql(spec, name))
            names.update((name, f"{name}_latest"))
        for view, make_select in self._extra_views.items():
            self.duck.set_view(view, make_select(self))
            names.add(view)
        self.duck.drop_stale(names)
        return sorted(names)

    def validate(self, name: str, version: int | None = None, commit: int | None = None, *,
                 commit_time: datetime | None = None) -> ValidationReport:
        """Re-validate a stored commit (default: the newest) and store the report; see
        :meth:`FeatureGroup.validate`."""
        return self.feature_group(name, version).validate(commit, commit_time=commit_time)

    def add_view(self, name: str, select: Callable[[FeatureStore], str]) -> None:
        """Register a view of this store, re-created from ``select(store)`` before each query."""
        self._extra_views[name] = select

    def duck_view_sql(self, name: str, version: int, commit: int | None = None, *,
                      commit_time: datetime | None = None) -> str:
        """A SELECT over one feature group version at a commit (default: the view of the newest)."""
        if commit is None and commit_time is None:
            return f'SELECT * FROM "{name}_v{version}"'
        fg = self.feature_group(name, version)
        return relation_sql(fg.spec, fg.files(commit, commit_time=commit_time))

    def sql(self, query: str, *, params: Any = None, commits: Mapping[str, int] | None = None,
            commit_time: datetime | Mapping[str, datetime] | None = None) -> duckdb.DuckDBPyRelation:
        """Run DuckDB SQL over the store and return a DuckDB relation (``.df()``, ``.to_arrow_table()``,
        ``.fetchall()``, ``.write_parquet()``).

        Views: ``<name>`` is the newest version's newest commit, ``<name>_v<version>`` pins a version.
        Time travel for this query only: ``commits={"user_embeddings": 3}`` re-points views at commit
        numbers; ``commit_time={"user_embeddings_v1": t}`` at the commit current at wall-clock time ``t``,
        and a bare ``commit_time=t`` re-points every feature group. Set ``FeatureStore(..., echo=True)``
        or the ``featurestore.sql`` logger to DEBUG to see the SQL run.
        """
        # on an object store a view reads local copies of its files: refresh (and so download) only
        # the feature groups the query names
        self.refresh_views(None if self.root.local else query)
        temp = self._pinned_views(commits or {}, commit_time) if commits or commit_time is not None else None
        return self.duck.query(query, params=params, temp_views=temp)

    def _pinned_views(self, commits: Mapping[str, int],
                      commit_time: datetime | Mapping[str, datetime] | None) -> dict[str, str]:
        specs = self.specs()
        newest = {s.name: s.version for s in specs}
        times = ({s.name + f"_v{s.version}": commit_time for s in specs} if isinstance(commit_time, datetime)
                 else dict(commit_time or {}))
        views: dict[str, str] = {}
        wanted: list[tuple[str, dict[str, Any]]] = [(view, {"commit": c}) for view, c in commits.items()]
        wanted += [(view, {"commit_time": t}) for view, t in times.items()]
        for view, at in wanted:
            name, version = self._view_group(view, newest)
            select = self.duck_view_sql(name, version, **at)
            views[f"{name}_v{version}"] = select
            if newest[name] == version:
                views[name] = select
        return views

    def _view_group(self, view: str, newest: dict[str, int]) -> tuple[str, int]:
        """(feature group, version) a view name stands for: ``<name>`` (newest version) or ``<name>_v<n>``."""
        m = _PINNED.match(view)
        if view in newest:
            return view, newest[view]
        if m and m["name"] in newest:
            return m["name"], int(m["version"])
        raise FeatureGroupNotFound(self.catalog._unknown(view))

    # ---- online serving ---------------------------------------------------------------------
    def online(self, name: str, version: int | None = None, commit: int | None = None, *,
               commit_time: datetime | None = None, build: bool = True) -> OnlineView:
        """The materialised online view (:class:`featurestore.online.OnlineView`) of a feature group:
        its newest commit, a pinned ``commit``, or the commit current at wall-clock ``commit_time``
        (what serving would have returned then). Builds the view once per commit unless ``build=False``.
        """
        return open_online(self.feature_group(name, version), commit, commit_time, build=build)

    def service(self, name: str) -> FeatureService:
        """A feature service (``schemas/services/<name>.yaml``, registered by :meth:`apply`): several
        feature groups answered in one call from one set of commits, see
        :class:`featurestore.online.service.FeatureService`.

        Example::

            ans = store.service("ranking").get([{"user_id": "u1"}])
            ans.features["user_embeddings__embedding"], ans.found["user_embeddings"], ans.parts
        """
        spec = self.catalog.service_spec(name)
        specs = group_specs(spec, lambda n, v: self.feature_group(n, v).spec)
        return FeatureService(spec, specs, lambda n, v: open_online(self.feature_group(n, v)).warm())

    def services(self) -> list[str]:
        """Names of the registered feature services."""
        return self.catalog.service_names()

    # ---- training sets (logic in featurestore.training) -------------------------------------
    def training_set(self, spine: Any, features: Any = None, *, entity_keys: Any = None,
                     event_time: str = "event_time", ttl: Any = None,
                     known_at: Literal["latest", "spine"] = "latest", pins: dict[str, int] | None = None,
                     prefix: bool = True, service: str | None = None,
                     engine: Engine | EngineName | None = None) -> TrainingSet:
        """A point-in-time-correct training set (a :class:`~featurestore.training.TrainingSet`: call
        ``.to_arrow()``, ``.to_pandas()`` or ``.to_parquet(path)``). See :mod:`featurestore.training`.

        Example::

            ts = store.training_set(spine_df, ["user_embeddings:1", "item_embeddings:1:embedding"],
                                    event_time="label_time", ttl=timedelta(days=7))
            table, pins = ts.to_arrow(), ts.pins

        ``service`` takes the feature groups, features and entity-key mapping from a feature service
        (instead of ``features`` and ``entity_keys``): the columns a model trains on are exactly those the
        service serves (``<group>__<feature>``); the spine carries the service's entity fields.

        ``engine="spark"`` (or a :class:`~featurestore.engine.spark.SparkEngine`) runs the joins on Spark:
        the spine may then be a Spark DataFrame too, and ``ts.to_spark()`` returns the result as one
        (``to_arrow`` and ``to_parquet`` give the same rows as DuckDB).
        """
        if service is not None:
            if features is not None or entity_keys is not None:
                raise InvalidData("give features= and entity_keys=, or service=, not both")
            spec = self.catalog.service_spec(service)
            specs = group_specs(spec, lambda n, v: self.feature_group(n, v).spec)
            check_service(spec, specs)
            features, entity_keys = service_features(spec, specs)
            prefix = True
        if features is None:
            raise InvalidData("name the features (e.g. ['user_embeddings:1']) or a service=")
        return plan(self.catalog, spine, features, entity_keys=entity_keys, event_time=event_time, ttl=ttl,
                    known_at=known_at, pins=pins, prefix=prefix, engine=resolve(engine, self.engine))

    def save_training_set(self, name: str, spine: Any, features: Any, **kwargs: Any) -> SavedTrainingSet:
        """Write a versioned training dataset under the root (Parquet plus a manifest of the spine hash,
        pins and parameters) and return its :class:`~featurestore.training.saved.SavedTrainingSet`.
        Takes the arguments of :meth:`training_set`."""
        description = kwargs.pop("description", "")
        if not isinstance(name, str) or not TRAINING_SET_NAME.match(name):
            raise InvalidData(f"bad training set name {name!r}: use lower-case letters, digits, '_' and '-'")
        return save_training_set(self.catalog, name, self.training_set(spine, features, **kwargs),
                                 description=description)

    def load_training_set(self, name: str, version: int | None = None) -> SavedTrainingSet:
        """A saved training dataset (default: its newest version): manifest and Parquet path."""
        return load_training_set(self.catalog, name, version)

    # ---- upkeep (logic in featurestore.operations) ------------------------------------------
    def vacuum(self, retain: timedelta = timedelta(days=7), *, dry_run: bool = True) -> Upkeep:
        """Delete data files, online views and leftovers older than ``retain`` (a dry run unless
        ``dry_run=False``); commits pinned by saved training sets and views a server serves are kept."""
        return operations.vacuum(self.catalog, retain, dry_run=dry_run)

    def compact(self, *, target_size: int = 256 << 20, dry_run: bool = True) -> Upkeep:
        """Merge small data files (one new commit per feature group, rows unchanged; a dry run unless
        ``dry_run=False``)."""
        result = operations.compact(self.catalog, target_size=target_size, dry_run=dry_run)
        self._tables.clear()
        return result

    def check(self, *, repair: bool = False) -> list[Problem]:
        """Verify tables, views, caches and saved training sets; ``repair`` rebuilds what is derived."""
        return operations.check(self.catalog, repair=repair)

    def close(self) -> None:
        """Close the store's DuckDB database (also done at interpreter exit), after any queued
        vector-cache writes (see :mod:`featurestore.training.vectors`) are on disk."""
        flush_cache_writes()
        self.duck.close()

    def __enter__(self) -> FeatureStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _latest_sql(spec: FeatureGroupSpec, view: str) -> str:
    """The newest row per key of ``view`` (greatest event time; the later commit on a tie)."""
    keys = ", ".join(quote(k) for k in spec.key_names)
    return (f"SELECT * FROM {quote(view)} QUALIFY row_number() OVER (PARTITION BY {keys} "
            f"ORDER BY {quote(spec.event_time)} DESC, {INGESTED_AT} DESC) = 1")
