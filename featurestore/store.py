"""FeatureStore: the one entry object. A root folder (or URI), a registry of feature-group specs kept
inside it, one Delta table per (name, version), and DuckDB views over them.

Example::

    from featurestore import FeatureStore
    store = FeatureStore("./featurestore_data")
    store.apply("schemas/")
    fg = store.feature_group("user_embeddings", version=1)
    fg.insert(df, as_of=cutoff)
    store.sql("SELECT user_id, n_events FROM user_embeddings LIMIT 5").df()
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import duckdb

from featurestore.errors import FeatureGroupNotFound, SpecConflict, StorageError
from featurestore.feature_group import AsOf, FeatureGroup, storage_schema
from featurestore.schema import FeatureGroupSpec, load_specs
from featurestore.storage import delta
from featurestore.storage.duck import Duck, relation_sql
from featurestore.storage.fs import Root
from featurestore.validation import report as validation_views
from featurestore.validation import runner as validation
from featurestore.validation.report import ValidationReport

DEFAULT_ROOT = "./featurestore_data"
ROOT_ENV = "FEATURESTORE_ROOT"
_GROUPS = "feature_groups"
_SPEC_FILE = "_spec.json"
_MARKER = "featurestore.json"
_PINNED = re.compile(r"^(?P<name>[a-z_][a-z0-9_]*?)_v(?P<version>\d+)$")


@dataclass(frozen=True)
class ApplyResult:
    """What :meth:`FeatureStore.apply` did with one spec."""

    name: str
    version: int
    action: Literal["created", "unchanged"]


class FeatureStore:
    """An embedding feature store rooted at a folder or URI (default ``$FEATURESTORE_ROOT`` or
    ``./featurestore_data``). Opening needs no ``schemas/`` folder: the specs live in the store."""

    def __init__(self, root: str | os.PathLike[str] | None = None, *,
                 storage_options: dict[str, str] | None = None, echo: bool = False,
                 cache_vectors: bool = True, join_indexes: bool = True):
        raw = os.fspath(root) if root is not None else os.environ.get(ROOT_ENV) or DEFAULT_ROOT
        self.root = Root(raw, storage_options)
        #: local stores keep each data file's vectors as a raw float32 matrix under ``_cache/vectors``
        #: too, written behind each insert, so training sets gather vectors without decoding Parquet
        #: (False: decode on first use instead; the cache then fills on the first training set)
        self.cache_vectors = cache_vectors
        #: local stores keep each commit's narrow feature rows sorted by (keys, event time) under
        #: ``_cache/joins``, built by the first training set over that commit, so later ones skip the
        #: sort (False: read and sort the Parquet files every time)
        self.join_indexes = join_indexes
        self.duck = Duck(echo=echo)
        self._lock = threading.RLock()
        self._groups: dict[tuple[str, int], FeatureGroup] = {}
        self._tables: dict[tuple[str, int], Any] = {}  # cached DeltaTables for view refresh
        #: further views of this store (name -> function of the store returning a SELECT)
        self._extra_views: dict[str, Callable[[FeatureStore], str]] = {}
        validation_views.register(self)

    def __repr__(self) -> str:
        return f"FeatureStore({self.root.uri!r})"

    # ---- layout -----------------------------------------------------------------------------
    @staticmethod
    def table_path(name: str, version: int) -> str:
        """Where a feature group version's table lives, relative to the root."""
        return f"{_GROUPS}/{name}/v{version}"

    def init(self) -> bool:
        """Create the root (idempotent). Returns True when it was created now."""
        if self.root.exists(_MARKER):
            return False
        self.root.makedirs(_GROUPS)
        self.root.write_json(_MARKER, {"format": "featurestore", "format_version": 1,
                                       "created": datetime.now().astimezone().isoformat()})
        return True

    # ---- registry ---------------------------------------------------------------------------
    def apply(self, specs: str | os.PathLike[str] | FeatureGroupSpec | list[Any]) -> list[ApplyResult]:
        """Register specs (a folder, file(s) or FeatureGroupSpec objects) and create their tables.

        Re-applying an unchanged spec does nothing. A changed spec for an existing (name, version)
        raises :class:`SpecConflict`: a new dimension, model or breaking change is a new version.
        All specs are checked before any is registered.
        """
        items = specs if isinstance(specs, list) else [specs]
        parsed: list[FeatureGroupSpec] = []
        paths = [s for s in items if not isinstance(s, FeatureGroupSpec)]
        parsed.extend(s for s in items if isinstance(s, FeatureGroupSpec))
        if paths:
            parsed.extend(load_specs(paths))
        plan: list[tuple[FeatureGroupSpec, bool]] = []
        for spec in parsed:
            existing = self._stored_spec(spec.name, spec.version)
            if existing is None:
                plan.append((spec, True))
            elif existing.to_dict() != spec.to_dict():
                diff = _diff(existing.to_dict(), spec.to_dict())
                raise SpecConflict(
                    f"{spec.name} v{spec.version} is already registered with a different spec "
                    f"({diff}){' in ' + spec.source if spec.source else ''}. Registered versions are "
                    f"immutable: bump the version (v{spec.version + 1}) to change it."
                )
            else:
                plan.append((spec, False))
        results = []
        with self._lock:
            if any(create for _, create in plan):
                self.init()
            for spec, create in plan:
                if create:
                    rel = self.table_path(spec.name, spec.version)
                    delta.create(self.root.uri_of(rel), storage_schema(spec),
                                 name=f"{spec.name}_v{spec.version}", description=spec.description,
                                 storage_options=self.root.storage_options)
                    self.root.write_json(f"{rel}/{_SPEC_FILE}", spec.to_dict())
                    validation.write_suite(self, spec)
                results.append(ApplyResult(spec.name, spec.version, "created" if create else "unchanged"))
        return results

    def _stored_spec(self, name: str, version: int) -> FeatureGroupSpec | None:
        rel = f"{self.table_path(name, version)}/{_SPEC_FILE}"
        try:
            doc = self.root.read_json(rel)
        except FileNotFoundError:
            return None
        except (ValueError, StorageError) as exc:
            raise StorageError(f"the registry entry {self.root.uri_of(rel)} is unreadable: {exc}") from exc
        return FeatureGroupSpec.from_dict(doc, source=self.root.uri_of(rel))

    def specs(self) -> list[FeatureGroupSpec]:
        """Every registered spec, by name then version."""
        out = []
        for name in self.root.listdir(_GROUPS):
            for vdir in self.root.listdir(f"{_GROUPS}/{name}"):
                if vdir.startswith("v") and vdir[1:].isdigit():
                    spec = self._stored_spec(name, int(vdir[1:]))
                    if spec is not None:
                        out.append(spec)
        return sorted(out, key=lambda s: (s.name, s.version))

    def versions(self, name: str) -> list[int]:
        return [s.version for s in self.specs() if s.name == name]

    def feature_group(self, name: str, version: int | None = None) -> FeatureGroup:
        """The feature group ``name`` at ``version`` (default: its newest version)."""
        if version is None:
            versions = self.versions(name)
            if not versions:
                raise FeatureGroupNotFound(self._unknown(name))
            version = versions[-1]
        with self._lock:
            fg = self._groups.get((name, version))
            if fg is None:
                spec = self._stored_spec(name, version)
                if spec is None:
                    known = self.versions(name)
                    raise FeatureGroupNotFound(
                        f"{name} has no version {version} (registered: {known})" if known
                        else self._unknown(name))
                fg = self._groups[(name, version)] = FeatureGroup(self, spec)
            return fg

    def _unknown(self, name: str) -> str:
        known = sorted({s.name for s in self.specs()})
        return (f"no feature group {name!r} in {self.root.uri}; registered: "
                f"{', '.join(known) if known else 'none (run apply first)'}")

    # ---- SQL --------------------------------------------------------------------------------
    def _table_changed(self, spec: FeatureGroupSpec) -> None:
        """Called after a commit so this process's views see it without polling."""
        self._tables.pop((spec.name, spec.version), None)

    def refresh_views(self) -> list[str]:
        """Point every view at its table's newest commit; returns the view names."""
        names: set[str] = set()
        newest: dict[str, FeatureGroupSpec] = {}
        for spec in self.specs():
            key = (spec.name, spec.version)
            dt = self._tables.get(key)
            if dt is None:
                dt = self._tables[key] = delta.open_table(
                    self.root.uri_of(self.table_path(*key)), storage_options=self.root.storage_options)
            else:
                with delta.translated(f"refreshing {spec.key}"):
                    dt.update_incremental()
            select = relation_sql(spec, delta.file_uris(dt))
            pinned = f"{spec.name}_v{spec.version}"
            self.duck.set_view(pinned, select)
            names.add(pinned)
            newest[spec.name] = spec
        for name, spec in newest.items():
            self.duck.set_view(name, self.duck_view_sql(spec.name, spec.version))
            names.add(name)
        for view, make_select in self._extra_views.items():
            self.duck.set_view(view, make_select(self))
            names.add(view)
        self.duck.drop_stale(names)
        return sorted(names)

    def validate(self, name: str, version: int | None = None, commit: AsOf = None) -> ValidationReport:
        """Re-validate a stored commit (default: the newest) and store the report; see
        :func:`featurestore.validation.validate_commit`."""
        number = self.feature_group(name, version).commit_of(commit)
        return validation.validate_commit(self, name, version, number)

    def add_view(self, name: str, select: Callable[[FeatureStore], str]) -> None:
        """Register a view of this store, re-created from ``select(store)`` before each query."""
        self._extra_views[name] = select

    def duck_view_sql(self, name: str, version: int, commit: AsOf = None) -> str:
        """A SELECT over one feature group version at a commit (default: the view of the newest)."""
        if commit is None:
            return f'SELECT * FROM "{name}_v{version}"'
        fg = self.feature_group(name, version)
        return relation_sql(fg.spec, fg.files(commit))

    def sql(self, query: str, *, params: Any = None,
            as_of: dict[str, AsOf] | datetime | None = None) -> duckdb.DuckDBPyRelation:
        """Run DuckDB SQL over the store and return a DuckDB relation (``.df()``, ``.to_arrow_table()``,
        ``.fetchall()``, ``.write_parquet()``).

        Views: ``<name>`` is the newest version's newest commit, ``<name>_v<version>`` pins a version.
        Query an older commit with ``as_of``: ``{"user_embeddings": 3}`` or ``{"user_embeddings_v1":
        datetime(...)}`` re-points those views for this query only; a bare datetime re-points every
        feature group to its commit current at that time. Set ``FeatureStore(..., echo=True)`` or the
        ``featurestore.sql`` logger to DEBUG to see the SQL run.
        """
        self.refresh_views()
        temp = self._pinned_views(as_of) if as_of is not None else None
        return self.duck.query(query, params=params, temp_views=temp)

    def _pinned_views(self, as_of: dict[str, AsOf] | datetime) -> dict[str, str]:
        specs = self.specs()
        newest = {s.name: s.version for s in specs}
        if isinstance(as_of, datetime):
            as_of = {s.name + f"_v{s.version}": as_of for s in specs}
        views: dict[str, str] = {}
        for view, commit in as_of.items():
            m = _PINNED.match(view)
            if view in newest:
                name, version = view, newest[view]
            elif m and m["name"] in newest:
                name, version = m["name"], int(m["version"])
            else:
                raise FeatureGroupNotFound(self._unknown(view))
            select = self.duck_view_sql(name, version, commit)
            views[f"{name}_v{version}"] = select
            if newest[name] == version:
                views[name] = select
        return views

    # ---- online serving ---------------------------------------------------------------------
    def online(self, name: str, version: int | None = None, commit: int | None = None,
               as_of: datetime | None = None, *, build: bool = True) -> Any:
        """The materialised online view (:class:`featurestore.online.OnlineView`) of a feature group:
        its newest commit, a pinned ``commit``, or the commit current at wall-clock time ``as_of``
        (what serving would have returned then). Builds the view once per commit unless ``build=False``.
        """
        from featurestore.online.open import open_online

        return open_online(self.feature_group(name, version), commit, as_of, build=build)

    # ---- training sets (logic in featurestore.training) -------------------------------------
    def training_set(self, spine: Any, features: Any, *, entity_keys: Any = None,
                     event_time: str = "event_time", ttl: Any = None,
                     known_at: Literal["latest", "spine"] = "latest", pins: dict[str, int] | None = None,
                     prefix: bool = True) -> Any:
        """A point-in-time-correct training set (a :class:`~featurestore.training.TrainingSet`: call
        ``.to_arrow()``, ``.to_pandas()`` or ``.to_parquet(path)``). See :mod:`featurestore.training`.

        Example::

            ts = store.training_set(spine_df, ["user_embeddings:1", "item_embeddings:1:embedding"],
                                    event_time="label_time", ttl=timedelta(days=7))
            table, pins = ts.to_arrow(), ts.pins
        """
        from featurestore.training import plan

        return plan(self, spine, features, entity_keys=entity_keys, event_time=event_time, ttl=ttl,
                    known_at=known_at, pins=pins, prefix=prefix)

    def save_training_set(self, name: str, spine: Any, features: Any, **kwargs: Any) -> Any:
        """Write a versioned training dataset under the root (Parquet plus a manifest of the spine hash,
        pins and parameters) and return its :class:`~featurestore.training_sets.SavedTrainingSet`.
        Takes the arguments of :meth:`training_set`."""
        from featurestore.training_sets import save

        return save(self, name, spine, features, **kwargs)

    def load_training_set(self, name: str, version: int | None = None) -> Any:
        """A saved training dataset (default: its newest version): manifest and Parquet path."""
        from featurestore.training_sets import load

        return load(self, name, version)

    def close(self) -> None:
        """Close the store's DuckDB database (also done at interpreter exit), after any queued
        vector-cache writes (see :mod:`featurestore.training_vectors`) are on disk."""
        from featurestore.training_vectors import flush_cache_writes

        flush_cache_writes()
        self.duck.close()

    def __enter__(self) -> FeatureStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _diff(old: dict[str, Any], new: dict[str, Any]) -> str:
    changed = [k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
    return "changed: " + ", ".join(changed)

