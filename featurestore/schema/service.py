"""Feature services: ``schemas/services/<name>.yaml`` parsed into a frozen :class:`ServiceSpec`.

A service names what one model reads at inference time: a list of ``group:version`` parts, the
features it takes from each (default: all) and how the request's entity fields map onto each group's
entity keys (default: same names), and optionally a ``nearest`` step (candidate generation: a vector
feature of one part searched against an item group, filtered, returning the item features named)::

    name: ranking
    description: user features and candidate items for the ranking model
    groups:
      - feature_group: user_embeddings:1
        features: [embedding, n_events]
      - feature_group: user_region_stats:1
        features: [clicks_7d]
        entity_keys: {user_id: user_id, region: region}   # group key -> request field
    nearest:
      feature_group: item_embeddings:1
      query: user_embeddings.embedding     # <part group>.<vector feature>: the query vector
      k: 10
      filter: {n_events: {ge: 5}}
      features: [n_events]

Features come back named ``<group>__<feature>``, as :meth:`FeatureStore.training_set` names them, so
a training set built from a service has exactly the columns the service serves. Checking the parts
against the registered feature groups happens when the service is opened (names, features, keys).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from featurestore.errors import FeatureGroupNotFound, SpecError
from featurestore.schema.spec import FeatureGroupSpec, thaw

_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")
_REF = re.compile(r"^(?P<name>[a-z_][a-z0-9_]*):(?P<version>[1-9][0-9]*)$")
_TOP = {"name", "description", "groups", "nearest"}
_PART = {"feature_group", "features", "entity_keys"}
_NEAREST = {"feature_group", "query", "vector", "k", "filter", "features"}
MAX_K = 1000


@dataclass(frozen=True)
class ServicePart:
    """One feature group of a service: ``group:version``, the features taken (empty: all) and the map
    from the group's entity key columns to the request's entity fields (empty: same names)."""

    name: str
    version: int
    features: tuple[str, ...] = ()
    entity_keys: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def key(self) -> str:
        return f"{self.name}:{self.version}"


@dataclass(frozen=True)
class NearestStep:
    """Candidate generation: the vector ``query_feature`` of part ``query_group`` searched against
    ``vector`` of the item group, ``filter`` applied before ranking, ``features`` of the items returned."""

    name: str
    version: int
    query_group: str
    query_feature: str
    vector: str | None = None
    k: int = 10
    filter: Mapping[str, Any] | None = None
    features: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        return f"{self.name}:{self.version}"


@dataclass(frozen=True)
class ServiceSpec:
    """A feature service (see the module docstring). Build with :func:`load_service` or ``from_dict``."""

    name: str
    parts: tuple[ServicePart, ...]
    description: str = ""
    nearest: NearestStep | None = None
    source: str | None = field(default=None, compare=False)

    def part(self, group: str) -> ServicePart:
        for p in self.parts:
            if p.name == group:
                return p
        raise KeyError(group)

    def to_dict(self) -> dict[str, Any]:
        """Canonical plain-data form (what the store registers)."""
        doc: dict[str, Any] = {"name": self.name, "description": self.description, "groups": [
            {"feature_group": p.key, "features": list(p.features), "entity_keys": dict(p.entity_keys)}
            for p in self.parts]}
        if self.nearest is not None:
            n = self.nearest
            doc["nearest"] = {"feature_group": n.key, "query": f"{n.query_group}.{n.query_feature}",
                              "vector": n.vector, "k": n.k, "filter": thaw(n.filter),
                              "features": list(n.features)}
        return doc

    def fingerprint(self) -> str:
        blob = json.dumps(self.to_dict(), sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    @classmethod
    def from_dict(cls, data: Any, *, source: str | None = None) -> ServiceSpec:
        """Parse and check plain data; errors name ``source`` and the field."""
        return _parse(data, source)


def _frozen(value: Any) -> Any:
    if isinstance(value, Mapping):
        return MappingProxyType({str(k): _frozen(v) for k, v in value.items()})
    if isinstance(value, list | tuple):
        return tuple(_frozen(v) for v in value)
    return value


def _unknown(data: Mapping[str, Any], allowed: set[str], path: str | None, where: str | None) -> None:
    extra = sorted(set(data) - allowed)
    if extra:
        raise SpecError(f"unknown field(s) {', '.join(map(repr, extra))}; allowed: {', '.join(sorted(allowed))}",
                        path=path, field=where)


def _ref(value: Any, path: str | None, fld: str) -> tuple[str, int]:
    m = _REF.match(value) if isinstance(value, str) else None
    if m is None:
        raise SpecError(f"must be '<feature group>:<version>', e.g. 'user_embeddings:1'; got {value!r}",
                        path=path, field=fld)
    return m["name"], int(m["version"])


def _names(value: Any, path: str | None, fld: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) and _NAME.match(v) for v in value):
        raise SpecError(f"must be a list of feature names; got {value!r}", path=path, field=fld)
    if len(set(value)) != len(value):
        raise SpecError(f"names a feature twice: {value}", path=path, field=fld)
    return tuple(value)


def _key_map(value: Any, path: str | None, fld: str) -> Mapping[str, str]:
    if value is None:
        return MappingProxyType({})
    if not isinstance(value, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) and _NAME.match(k) and _NAME.match(v)
            for k, v in value.items()):
        raise SpecError(f"must map each entity key column of the group to a request field, e.g. "
                        f"{{user_id: user_id}}; got {value!r}", path=path, field=fld)
    return MappingProxyType(dict(value))


def _part(raw: Any, path: str | None, fld: str) -> ServicePart:
    if isinstance(raw, str):
        raw = {"feature_group": raw}
    if not isinstance(raw, Mapping):
        raise SpecError("must be a mapping with feature_group (and features, entity_keys)", path=path, field=fld)
    _unknown(raw, _PART, path, fld)
    name, version = _ref(raw.get("feature_group"), path, f"{fld}.feature_group")
    return ServicePart(name, version, _names(raw.get("features"), path, f"{fld}.features"),
                       _key_map(raw.get("entity_keys"), path, f"{fld}.entity_keys"))


def _nearest(raw: Any, parts: list[ServicePart], path: str | None) -> NearestStep:
    if not isinstance(raw, Mapping):
        raise SpecError("must be a mapping with feature_group and query", path=path, field="nearest")
    _unknown(raw, _NEAREST, path, "nearest")
    name, version = _ref(raw.get("feature_group"), path, "nearest.feature_group")
    query = raw.get("query")
    group, _, feature = query.partition(".") if isinstance(query, str) else ("", "", "")
    if not feature or group not in {p.name for p in parts}:
        raise SpecError(f"must be '<group of this service>.<vector feature>' (groups: "
                        f"{', '.join(p.name for p in parts)}); got {query!r}", path=path, field="nearest.query")
    k = raw.get("k", 10)
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_K:
        raise SpecError(f"must be an integer in 1..{MAX_K}; got {k!r}", path=path, field="nearest.k")
    flt = raw.get("filter")
    if flt is not None and not isinstance(flt, Mapping):
        raise SpecError("must be a mapping of column -> condition", path=path, field="nearest.filter")
    vector = raw.get("vector")
    if vector is not None and not (isinstance(vector, str) and _NAME.match(vector)):
        raise SpecError(f"must be a vector feature name; got {vector!r}", path=path, field="nearest.vector")
    return NearestStep(name, version, group, feature, vector, k, _frozen(flt) if flt else None,
                       _names(raw.get("features"), path, "nearest.features"))


def _parse(data: Any, path: str | None) -> ServiceSpec:
    if not isinstance(data, Mapping):
        raise SpecError("a service must be a mapping of fields", path=path)
    _unknown(data, _TOP, path, None)
    name = data.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise SpecError(f"must be a lower-case identifier ([a-z_][a-z0-9_]*); got {name!r}", path=path, field="name")
    raw = data.get("groups")
    if not isinstance(raw, list) or not raw:
        raise SpecError("must list at least one feature group", path=path, field="groups")
    parts = [_part(p, path, f"groups[{i}]") for i, p in enumerate(raw)]
    seen = [p.name for p in parts]
    dupes = sorted({n for n in seen if seen.count(n) > 1})
    if dupes:
        raise SpecError(f"lists feature group(s) twice: {', '.join(dupes)}", path=path, field="groups")
    nearest = _nearest(data["nearest"], parts, path) if data.get("nearest") is not None else None
    description = data.get("description") or ""
    return ServiceSpec(name, tuple(parts), str(description), nearest, source=path)


def check_service(spec: ServiceSpec, specs: Mapping[str, FeatureGroupSpec]) -> None:
    """The service fits its feature groups: features exist, key maps name the groups' keys, the nearest
    step's query is a vector of the right dimension. :class:`SpecError` names the service and field."""
    path = spec.source or f"service {spec.name}"
    for i, part in enumerate(spec.parts):
        g = specs[part.name]
        _check_features(part.features, g, path, f"groups[{i}].features", vectors_only=False)
        extra = sorted(set(part.entity_keys) - set(g.key_names))
        if extra:
            raise SpecError(f"{g.key} has no entity key(s) {extra} (keys: {g.key_names})", path=path,
                            field=f"groups[{i}].entity_keys")
    step = spec.nearest
    if step is None:
        return
    items, source = specs[step.name], specs[step.query_group]
    _check_features(step.features, items, path, "nearest.features", vectors_only=False)
    try:
        query = source.feature(step.query_feature)
    except KeyError:
        query = None
    if query is None or not query.is_vector:
        raise SpecError(f"{source.key} has no vector feature {step.query_feature!r}", path=path, field="nearest.query")
    part = spec.part(step.query_group)
    if part.features and step.query_feature not in part.features:
        raise SpecError(f"the query feature {step.query_feature!r} must be among the features the service takes "
                        f"from {source.key}", path=path, field="nearest.query")
    vectors = {f.name: f for f in items.vector_features}
    target = vectors.get(step.vector or items.online.vector or next(iter(vectors), ""))
    if target is None:
        raise SpecError(f"{items.key} has no vector feature {step.vector or ''!r} to search "
                        f"(vector features: {list(vectors)})", path=path, field="nearest.vector")
    if target.dim != query.dim:
        raise SpecError(f"the query {step.query_group}.{step.query_feature} has dim {query.dim}; "
                        f"{items.key}.{target.name} has dim {target.dim}", path=path, field="nearest.query")


def _check_features(names: Sequence[str], g: FeatureGroupSpec, path: str, fld: str, *,
                    vectors_only: bool) -> None:
    have = [f.name for f in g.features if f.is_vector or not vectors_only]
    bad = [n for n in names if n not in have]
    if bad:
        raise SpecError(f"{g.key} has no feature {bad[0]!r} (features: {', '.join(have)})", path=path, field=fld)


def group_specs(spec: ServiceSpec, spec_of: Callable[[str, int], FeatureGroupSpec]) -> dict[str, FeatureGroupSpec]:
    """The spec of every feature group a service reads, by name (FeatureGroupNotFound names the service)."""
    refs = [(p.name, p.version) for p in spec.parts]
    if spec.nearest is not None:
        refs.append((spec.nearest.name, spec.nearest.version))
    out: dict[str, FeatureGroupSpec] = {}
    for name, version in refs:
        if name in out and out[name].version != version:
            raise SpecError(f"reads {name} at two versions ({out[name].version} and {version})",
                            path=spec.source or f"service {spec.name}", field="nearest.feature_group")
        try:
            out[name] = spec_of(name, version)
        except FeatureGroupNotFound as exc:
            raise FeatureGroupNotFound(f"service {spec.name!r}: {exc}") from exc
    return out
