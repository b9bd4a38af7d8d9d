"""Feature-group specs: plain data (a loaded YAML document) checked and parsed into frozen dataclasses.

:meth:`FeatureGroupSpec.from_dict` checks every field and raises :class:`~featurestore.errors.SpecError`
naming the file and the field at fault; :mod:`featurestore.schema.load` reads spec files.
:meth:`FeatureGroupSpec.arrow_schema` compiles a spec to the Arrow schema its rows have.

Example::

    spec = FeatureGroupSpec.from_dict(yaml.safe_load(text), source="schemas/user_embeddings.v1.yaml")
    spec.vector_features[0].dim   # 64
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal, get_args

import pyarrow as pa

from featurestore.errors import SpecError
from featurestore.schema.columns import TIMESTAMP, EntityKey, Feature, FeatureType, KeyType, Metric
from featurestore.schema.expectations import check_expectations

Policy = Literal["strict", "warn"]
IndexKind = Literal["auto", "flat", "ivf", "hnsw"]
_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")


def _frozen(value: Any) -> Any:
    """Deep-freeze plain YAML data so specs stay immutable."""
    if isinstance(value, Mapping):
        return MappingProxyType({str(k): _frozen(v) for k, v in value.items()})
    if isinstance(value, list | tuple):
        return tuple(_frozen(v) for v in value)
    return value


def thaw(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: thaw(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [thaw(v) for v in value]
    return value


@dataclass(frozen=True)
class OnlineSpec:
    """Settings of the online (serving) view: similarity index kind and its parameters."""

    index: IndexKind = "auto"
    params: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    vector: str | None = None  # the default vector feature of nearest; default: the first one
    # per vector feature, its own index kind and parameters (features not named use index/params)
    indexes: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    def index_of(self, feature: str) -> tuple[str, Mapping[str, Any]]:
        """(index kind, parameters) of one vector feature's similarity index."""
        own = self.indexes.get(feature)
        if own is None:
            return self.index, self.params
        return own.get("index", self.index), own.get("params", self.params)


@dataclass(frozen=True)
class FeatureGroupSpec:
    """The declared shape of one feature group version. Build with :func:`load_spec` or directly."""

    name: str
    version: int
    entity_keys: tuple[EntityKey, ...]
    features: tuple[Feature, ...]
    event_time: str = "event_time"
    description: str = ""
    expectations: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    policy: Policy = "strict"
    online: OnlineSpec = field(default_factory=OnlineSpec)
    source: str | None = field(default=None, compare=False)  # file it came from, for messages

    # ---- derived views ------------------------------------------------------------------------
    @property
    def key(self) -> str:
        """``name:version``, the form used in ``features=[...]`` lists."""
        return f"{self.name}:{self.version}"

    @property
    def key_names(self) -> list[str]:
        return [k.name for k in self.entity_keys]

    @property
    def vector_features(self) -> list[Feature]:
        return [f for f in self.features if f.is_vector]

    @property
    def columns(self) -> list[str]:
        return [*self.key_names, self.event_time, *(f.name for f in self.features)]

    def feature(self, name: str) -> Feature:
        for f in self.features:
            if f.name == name:
                return f
        raise KeyError(name)

    def arrow_schema(self) -> pa.Schema:
        """The Arrow schema of this group's rows as :meth:`FeatureGroup.read` returns them."""
        return self._schema(storage=False)

    def storage_schema(self) -> pa.Schema:
        """The Arrow schema written to the Delta table."""
        return self._schema(storage=True)

    def _schema(self, *, storage: bool) -> pa.Schema:
        fields = [pa.field(k.name, k.arrow_type, nullable=False) for k in self.entity_keys]
        fields.append(pa.field(self.event_time, TIMESTAMP, nullable=False))
        for f in self.features:
            fields.append(pa.field(f.name, f.storage_type if storage else f.arrow_type))
        return pa.schema(fields)

    # ---- serialisation ------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Canonical plain-data form (what the registry stores and what re-apply compares)."""
        features = []
        for f in self.features:
            d: dict[str, Any] = {"name": f.name, "type": f.type}
            if f.is_vector:
                d.update(dim=f.dim, metric=f.metric, normalized=f.normalized)
            if f.description:
                d["description"] = f.description
            features.append(d)
        online: dict[str, Any] = {"index": self.online.index, "params": thaw(self.online.params)}
        if self.online.vector:
            online["vector"] = self.online.vector
        if self.online.indexes:
            online["indexes"] = thaw(self.online.indexes)
        return {
            "name": self.name,
            "version": self.version,
            "description": self.description,
            "entity_keys": [{"name": k.name, "type": k.type} for k in self.entity_keys],
            "event_time": self.event_time,
            "features": features,
            "expectations": thaw(self.expectations),
            "policy": self.policy,
            "online": online,
        }

    def fingerprint(self) -> str:
        """A hash of the canonical form: equal specs have equal fingerprints."""
        blob = json.dumps(self.to_dict(), sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str | None = None) -> FeatureGroupSpec:
        """Parse and check plain data (a loaded YAML document); errors name ``source`` and the field."""
        return _parse(data, source)


# ---- parsing ----------------------------------------------------------------------------------
_TOP = {
    "name", "version", "description", "entity_keys", "event_time", "features",
    "expectations", "policy", "online",
}
_FEATURE = {"name", "type", "dim", "metric", "normalized", "description"}
_ONLINE = {"index", "params", "vector", "indexes"}


def _choice(value: Any, allowed: Any, path: str | None, fld: str) -> Any:
    options = get_args(allowed)
    if value not in options:
        raise SpecError(f"must be one of {', '.join(map(str, options))}; got {value!r}", path=path, field=fld)
    return value


def _name(value: Any, path: str | None, fld: str) -> str:
    if not isinstance(value, str) or not _NAME.match(value):
        raise SpecError(
            f"must be a lower-case identifier ([a-z_][a-z0-9_]*); got {value!r}", path=path, field=fld
        )
    return value


def _unknown(data: Mapping[str, Any], allowed: set[str], path: str | None, where: str) -> None:
    extra = sorted(set(data) - allowed)
    if extra:
        raise SpecError(
            f"unknown field(s) {', '.join(map(repr, extra))}; allowed: {', '.join(sorted(allowed))}",
            path=path, field=where or None,
        )


def _mapping(value: Any, path: str | None, fld: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise SpecError("must be a mapping", path=path, field=fld)
    return value


def _version(value: Any, path: str | None) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise SpecError(f"must be a positive integer; got {value!r}", path=path, field="version")
    return value


def _entity_keys(raw: Any, path: str | None) -> list[EntityKey]:
    """``entity_keys``: one column name or ``{name, type}``, or a non-empty list of them."""
    if isinstance(raw, str | Mapping):
        raw = [raw]
    if not isinstance(raw, list) or not raw:
        raise SpecError("must list at least one key column", path=path, field="entity_keys")
    return [_entity_key(k, path, f"entity_keys[{i}]") for i, k in enumerate(raw)]


def _entity_key(raw: Any, path: str | None, fld: str) -> EntityKey:
    if isinstance(raw, str):
        raw = {"name": raw}
    if not isinstance(raw, Mapping):
        raise SpecError("must be a column name or {name, type}", path=path, field=fld)
    _unknown(raw, {"name", "type"}, path, fld)
    return EntityKey(
        name=_name(raw.get("name"), path, f"{fld}.name"),
        type=_choice(raw.get("type", "string"), KeyType, path, f"{fld}.type"),
    )


def _features(raw: Any, path: str | None) -> list[Feature]:
    if not isinstance(raw, list) or not raw:
        raise SpecError("must list at least one feature", path=path, field="features")
    return [_feature(f, path, f"features[{i}]") for i, f in enumerate(raw)]


def _feature(raw: Any, path: str | None, fld: str) -> Feature:
    if not isinstance(raw, Mapping):
        raise SpecError("must be a mapping with name and type", path=path, field=fld)
    _unknown(raw, _FEATURE, path, fld)
    name = _name(raw.get("name"), path, f"{fld}.name")
    ftype = _choice(raw.get("type"), FeatureType, path, f"{fld}.type")
    if ftype == "vector":
        return _vector_feature(raw, name, path, fld)
    for vector_only in ("dim", "metric", "normalized"):
        if vector_only in raw:
            raise SpecError(f"only vector features take {vector_only}", path=path, field=f"{fld}.{vector_only}")
    return Feature(name=name, type=ftype, description=str(raw.get("description", "")))


def _vector_feature(raw: Mapping[str, Any], name: str, path: str | None, fld: str) -> Feature:
    dim = raw.get("dim")
    if isinstance(dim, bool) or not isinstance(dim, int) or not 1 <= dim <= 65536:
        raise SpecError(f"a vector needs an integer dim in 1..65536; got {dim!r}", path=path, field=f"{fld}.dim")
    normalized = raw.get("normalized", False)
    if not isinstance(normalized, bool):
        raise SpecError(f"must be true or false; got {normalized!r}", path=path, field=f"{fld}.normalized")
    return Feature(
        name=name, type="vector", dim=dim,
        metric=_choice(raw.get("metric", "cosine"), Metric, path, f"{fld}.metric"),
        normalized=normalized, description=str(raw.get("description", "")),
    )


def _check_unique_columns(keys: list[EntityKey], event_time: str, features: list[Feature], path: str | None) -> None:
    names = [k.name for k in keys] + [event_time] + [f.name for f in features]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise SpecError(f"column name(s) used twice: {', '.join(dupes)}", path=path, field="features")


def _online(raw: Any, features: list[Feature], path: str | None) -> OnlineSpec:
    online = _mapping(raw, path, "online")
    _unknown(online, _ONLINE, path, "online")
    params = _mapping(online.get("params") or {}, path, "online.params")
    vector = online.get("vector")
    vector_names = [f.name for f in features if f.is_vector]
    if vector is not None and vector not in vector_names:
        raise SpecError(f"names no vector feature (have: {vector_names})", path=path, field="online.vector")
    return OnlineSpec(
        index=_choice(online.get("index", "auto"), IndexKind, path, "online.index"),
        params=_frozen(params),
        vector=vector,
        indexes=_frozen(_indexes(online.get("indexes") or {}, vector_names, path)),
    )


def _indexes(raw: Any, vector_names: list[str], path: str | None) -> dict[str, Any]:
    """``online.indexes``: vector feature -> {index, params}, each feature a vector of this spec."""
    out: dict[str, Any] = {}
    for name, cfg in _mapping(raw, path, "online.indexes").items():
        fld = f"online.indexes.{name}"
        if name not in vector_names:
            raise SpecError(f"names no vector feature (have: {vector_names})", path=path, field=fld)
        cfg = _mapping(cfg, path, fld)
        _unknown(cfg, {"index", "params"}, path, fld)
        entry: dict[str, Any] = {"index": _choice(cfg.get("index", "auto"), IndexKind, path, f"{fld}.index")}
        if "params" in cfg:
            entry["params"] = dict(_mapping(cfg["params"] or {}, path, f"{fld}.params"))
        out[str(name)] = entry
    return out


def _parse(data: Any, path: str | None) -> FeatureGroupSpec:
    if not isinstance(data, Mapping):
        raise SpecError("a spec must be a mapping of fields", path=path)
    _unknown(data, _TOP, path, "")
    for required in ("name", "version", "entity_keys", "features"):
        if required not in data:
            raise SpecError("is required", path=path, field=required)
    name = _name(data["name"], path, "name")
    version = _version(data["version"], path)
    keys = _entity_keys(data["entity_keys"], path)
    event_time = _name(data.get("event_time", "event_time"), path, "event_time")
    features = _features(data["features"], path)
    _check_unique_columns(keys, event_time, features, path)
    expectations = _mapping(data.get("expectations") or {}, path, "expectations")
    online = _online(data.get("online") or {}, features, path)
    description = data.get("description", "")
    spec = FeatureGroupSpec(
        name=name,
        version=version,
        description=str(description) if description is not None else "",
        entity_keys=tuple(keys),
        event_time=event_time,
        features=tuple(features),
        expectations=_frozen(expectations),
        policy=_choice(data.get("policy", "strict"), Policy, path, "policy"),
        online=online,
        source=path,
    )
    # the expectations block has its own schema, checked against the columns the spec declares
    check_expectations(spec.expectations, spec, path)
    return spec
