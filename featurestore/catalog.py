"""The catalog of one store: where its tables live, which feature-group specs are registered, and the
feature groups themselves, all sharing one engine and one set of commit hooks.

:class:`~featurestore.store.FeatureStore` is the public entry object and wraps a catalog; the layers
below the store (training sets, online views) receive the catalog, never the store.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from featurestore.engine.base import Engine
from featurestore.errors import FeatureGroupNotFound, ServiceNotFound, SpecConflict, SpecError, StorageError
from featurestore.feature_group import CommitHooks, FeatureGroup, GroupContext, storage_schema
from featurestore.schema import FeatureGroupSpec, ServiceSpec, load_services, load_specs
from featurestore.schema.service import check_service, group_specs
from featurestore.storage import delta
from featurestore.storage.fs import Root
from featurestore.validation.runner import write_suite

DEFAULT_ROOT = "./featurestore_data"
ROOT_ENV = "FEATURESTORE_ROOT"
_GROUPS = "feature_groups"
_SPEC_FILE = "_spec.json"
_SERVICES = "services"
STORE_MARKER = "featurestore.json"  # written by init: this folder is a store


@dataclass(frozen=True)
class ApplyResult:
    """What :meth:`FeatureStore.apply` did with one spec."""

    name: str
    version: int
    action: Literal["created", "unchanged", "updated"]  # updated: a service redefined, or descriptions only
    kind: Literal["feature_group", "service"] = "feature_group"


class Catalog:
    """The registry of a root folder (or URI): specs, tables and feature-group handles.

    ``cache_vectors`` and ``join_caches`` switch the training caches (see :mod:`featurestore.training`).
    """

    def __init__(self, root: Root, engine: Engine, *, cache_vectors: bool = True, join_caches: bool = True):
        self.root = root
        self.engine = engine
        self.cache_vectors = cache_vectors
        self.join_caches = join_caches
        #: work around every commit of this store's feature groups, registered by the layers that own it
        self.hooks = CommitHooks()
        self._lock = threading.RLock()
        self._groups: dict[tuple[str, int], FeatureGroup] = {}

    def __repr__(self) -> str:
        return f"Catalog({self.root.uri!r})"

    # ---- layout -----------------------------------------------------------------------------
    @staticmethod
    def table_path(name: str, version: int) -> str:
        """Where a feature group version's table lives, relative to the root."""
        return f"{_GROUPS}/{name}/v{version}"

    def is_store(self) -> bool:
        """Whether the root holds a store (``init`` or ``apply`` ran there)."""
        return self.root.exists(STORE_MARKER)

    def init(self) -> bool:
        """Create the root (idempotent). Returns True when it was created now."""
        if self.root.exists(STORE_MARKER):
            return False
        self.root.makedirs(_GROUPS)
        self.root.write_json(STORE_MARKER, {"format": "featurestore", "format_version": 1,
                                       "created": datetime.now().astimezone().isoformat()})
        return True

    # ---- registry ---------------------------------------------------------------------------
    def apply(self, specs: str | os.PathLike[str] | FeatureGroupSpec | list[Any]) -> list[ApplyResult]:
        """Register specs (a folder, file(s) or FeatureGroupSpec objects) and create their tables.

        Re-applying an unchanged spec does nothing; one whose only change is a description (of the
        group or of a feature: metadata, not schema) updates the registry ("updated"). Any other change
        for an existing (name, version) raises :class:`SpecConflict`: a new dimension, model or breaking
        change is a new version.
        All specs are checked before any is registered.
        """
        items = specs if isinstance(specs, list) else [specs]
        parsed: list[FeatureGroupSpec] = []
        services = [s for s in items if isinstance(s, ServiceSpec)]
        paths = [s for s in items if not isinstance(s, FeatureGroupSpec | ServiceSpec)]
        parsed.extend(s for s in items if isinstance(s, FeatureGroupSpec))
        if paths:
            parsed.extend(load_specs(paths))
            services.extend(s for p in paths if os.path.isdir(p) for s in load_services(os.fspath(p)))
        plan: list[tuple[FeatureGroupSpec, Literal["created", "updated", "unchanged"]]] = []
        for spec in parsed:
            existing = self._stored_spec(spec.name, spec.version)
            if existing is None:
                plan.append((spec, "created"))
            elif existing.to_dict() == spec.to_dict():
                plan.append((spec, "unchanged"))
            elif _without_descriptions(existing.to_dict()) == _without_descriptions(spec.to_dict()):
                plan.append((spec, "updated"))  # descriptions are metadata: the data's meaning is unchanged
            else:
                diff = _diff(existing.to_dict(), spec.to_dict())
                raise SpecConflict(
                    f"{spec.name} v{spec.version} is already registered with a different spec "
                    f"({diff}){' in ' + spec.source if spec.source else ''}. Registered versions are "
                    f"immutable: bump the version (v{spec.version + 1}) to change it."
                )
        results = []
        with self._lock:
            if any(action == "created" for _, action in plan):
                self.init()
            for spec, action in plan:
                rel = self.table_path(spec.name, spec.version)
                if action == "created":
                    delta.create(self.root.uri_of(rel), storage_schema(spec),
                                 name=f"{spec.name}_v{spec.version}", description=spec.description,
                                 storage_options=self.root.storage_options)
                if action != "unchanged":
                    self.root.write_json(f"{rel}/{_SPEC_FILE}", spec.to_dict())
                    write_suite(self.root, rel, spec)
                results.append(ApplyResult(spec.name, spec.version, action))
            results.extend(self._apply_service(s, parsed) for s in services)
        return results

    # ---- feature services -------------------------------------------------------------------
    def _apply_service(self, service: ServiceSpec, applied: list[FeatureGroupSpec]) -> ApplyResult:
        """Register a feature service, checked against its feature groups (registered, or applied with it).
        Every definition applied is kept (``<name>.<fingerprint>.json``); ``<name>.json`` is the current one."""
        fresh = {(s.name, s.version): s for s in applied}

        def spec_of(name: str, version: int) -> FeatureGroupSpec:
            found = fresh.get((name, version)) or self._stored_spec(name, version)
            if found is None:
                raise FeatureGroupNotFound(f"{name} v{version} is not registered")
            return found

        check_service(service, group_specs(service, spec_of))
        old = self._stored_service(service.name)
        if old is not None and old.to_dict() == service.to_dict():
            return ApplyResult(service.name, 0, "unchanged", "service")
        doc = service.to_dict()
        self.init()
        self.root.write_json(f"{_SERVICES}/{service.name}.{service.fingerprint()}.json", doc)
        self.root.write_json(f"{_SERVICES}/{service.name}.json", doc)
        return ApplyResult(service.name, 0, "created" if old is None else "updated", "service")

    def _stored_service(self, name: str) -> ServiceSpec | None:
        rel = f"{_SERVICES}/{name}.json"
        try:
            doc = self.root.read_json(rel)
        except FileNotFoundError:
            return None
        try:
            return ServiceSpec.from_dict(doc, source=self.root.uri_of(rel))
        except SpecError as exc:
            raise StorageError(f"the registry entry {self.root.uri_of(rel)} is unreadable: {exc}") from exc

    def service_names(self) -> list[str]:
        """Registered feature services."""
        return sorted(n[:-5] for n in self.root.listdir(_SERVICES) if n.endswith(".json") and n.count(".") == 1)

    def service_spec(self, name: str) -> ServiceSpec:
        """The current definition of a feature service (:class:`ServiceNotFound` when none)."""
        spec = self._stored_service(name) if isinstance(name, str) and name.isidentifier() else None
        if spec is None:
            known = self.service_names()
            hint = ", ".join(known) if known else "none (write schemas/services/<name>.yaml, then apply)"
            raise ServiceNotFound(f"no feature service {name!r} in {self.root.uri}; registered: {hint}")
        return spec

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
                context = GroupContext(spec, self.root, self.table_path(name, version), self.engine, self.hooks)
                fg = self._groups[(name, version)] = FeatureGroup(context)
            return fg

    def _unknown(self, name: str) -> str:
        known = sorted({s.name for s in self.specs()})
        return (f"no feature group {name!r} in {self.root.uri}; registered: "
                f"{', '.join(known) if known else 'none (run apply first)'}")


def _diff(old: dict[str, Any], new: dict[str, Any]) -> str:
    changed = [k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
    return "changed: " + ", ".join(changed)


def resolve_root(root: str | os.PathLike[str] | None) -> str:
    """The root to open: ``root``, else ``$FEATURESTORE_ROOT``, else ``./featurestore_data``."""
    return os.fspath(root) if root is not None else os.environ.get(ROOT_ENV) or DEFAULT_ROOT


def _without_descriptions(doc: dict[str, Any]) -> dict[str, Any]:
    """A spec's canonical form without its descriptions (the group's and each feature's)."""
    out = {k: v for k, v in doc.items() if k != "description"}
    out["features"] = [{k: v for k, v in f.items() if k != "description"} for f in doc.get("features", [])]
    return out
