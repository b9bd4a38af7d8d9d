"""Feature services: several feature groups (and an optional nearest step) answered in one call, from
one consistent set of commits.

A :class:`ServiceSnapshot` is a service's definition plus one opened view per part: answers read a
snapshot once and use it to the end, and a reload replaces the whole snapshot in one reference
assignment, so one answer never mixes the commit of one reload with that of another.

Example::

    svc = store.service("ranking")
    ans = svc.get([{"user_id": "u1", "region": "eu"}, {"user_id": "u2", "region": "us"}])
    ans.features["user_embeddings__embedding"]     # (2, 64) float32, NaN rows where missing
    ans.found["user_embeddings"]                   # bool mask per group
    ans.parts                                      # (group, version, commit) of every part
    ans.neighbors[0].keys                          # the nearest step's candidates for the first entity
    ans.to_pandas()
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from featurestore.errors import InvalidQuery
from featurestore.online.view import OnlineView
from featurestore.schema import FeatureGroupSpec, ServicePart, ServiceSpec
from featurestore.schema.service import check_service

Entities = Sequence[Mapping[str, Any]] | Mapping[str, Sequence[Any]] | Any  # rows, columns or a DataFrame


@dataclass(frozen=True)
class Part:
    """Where one part of an answer came from."""

    feature_group: str
    version: int
    commit: int

    def to_dict(self) -> dict[str, Any]:
        return {"feature_group": self.feature_group, "version": self.version, "commit": self.commit}


@dataclass(frozen=True)
class Candidates:
    """The nearest step's answer for one entity: item keys and scores (best first) and item features."""

    keys: list[Any]
    scores: np.ndarray
    features: dict[str, Any]

    def __len__(self) -> int:
        return len(self.keys)


@dataclass(frozen=True)
class ServiceAnswer:
    """One row per entity: ``features`` by ``<group>__<feature>`` (as training sets name them; vectors
    are (n, dim) float32 with NaN rows, scalars lists with None), a ``found`` mask per group, the
    ``parts`` served and, for a service with a nearest step, ``neighbors`` per entity."""

    service: str
    entities: dict[str, list[Any]]
    features: dict[str, Any]
    found: dict[str, np.ndarray]
    parts: list[Part]
    generation: int
    neighbors: list[Candidates] | None = None

    def __len__(self) -> int:
        return len(next(iter(self.found.values()))) if self.found else 0

    def to_pandas(self) -> Any:
        """The entities and features as a DataFrame (vectors as one list per cell, None where missing)."""
        import pandas as pd

        data: dict[str, Any] = dict(self.entities)
        for name, values in self.features.items():
            if isinstance(values, np.ndarray):
                ok: list[bool] = (np.isfinite(values).all(axis=1) & (values.shape[1] > 0)).tolist()
                data[name] = [row if good else None for row, good in zip(values, ok)]
            else:
                data[name] = values
        return pd.DataFrame(data)


@dataclass(frozen=True)
class ServiceSnapshot:
    """A service and the views of its parts (and of its nearest step's item group), opened together."""

    spec: ServiceSpec
    views: Mapping[str, OnlineView]  # group name -> view
    generation: int = 0
    fields: tuple[str, ...] = field(default=())  # the request's entity fields

    @functools.cached_property
    def parts(self) -> list[Part]:
        """The (group, version, commit) of every part, computed once per snapshot."""
        names = [p.name for p in self.spec.parts]
        if self.spec.nearest is not None and self.spec.nearest.name not in names:
            names.append(self.spec.nearest.name)
        return [Part(n, self.views[n].version, self.views[n].commit) for n in names]

    def field_types(self) -> dict[str, str]:
        """The type (``int64`` or ``string``) of each entity field, from the key columns it maps onto."""
        out: dict[str, str] = {}
        for part in self.spec.parts:
            view = self.views[part.name]
            for k, t in zip(view.key_names, view.manifest["key_types"]):
                out.setdefault(part.entity_keys.get(k, k), t)
        return {f: out[f] for f in self.fields}

    def get(self, entities: Entities) -> ServiceAnswer:
        """Every feature of every part for each entity (see :class:`ServiceAnswer`)."""
        columns = entity_columns(entities, self.fields, self.spec.name)
        n = len(next(iter(columns.values()))) if columns else 0
        features: dict[str, Any] = {}
        found: dict[str, np.ndarray] = {}
        for part in self.spec.parts:
            view = self.views[part.name]
            keys = part_keys(part, view, columns, n)
            try:
                hit = view.get(keys, features=list(part.features) or None)
            except InvalidQuery as exc:
                raise InvalidQuery(f"service {self.spec.name!r}, feature group {part.key}: {exc}") from exc
            found[part.name] = hit.found
            features.update({f"{part.name}__{f}": v for f, v in hit.features.items()})
        neighbors = self._nearest(features, found) if self.spec.nearest is not None else None
        return ServiceAnswer(self.spec.name, columns, features, found, list(self.parts), self.generation, neighbors)

    def _nearest(self, features: Mapping[str, Any], found: Mapping[str, np.ndarray]) -> list[Candidates]:
        """The nearest step: each entity's query vector against the item group, then the items' features."""
        step = self.spec.nearest
        assert step is not None
        items = self.views[step.name]
        queries = features[f"{step.query_group}__{step.query_feature}"]
        ok = found[step.query_group]
        results: list[Any] = [None] * len(ok)
        rows = np.flatnonzero(ok)
        if len(rows):
            try:
                answers = items.nearest_many(queries[rows], k=step.k, filter=step.filter, feature=step.vector)
            except InvalidQuery as exc:
                raise InvalidQuery(f"service {self.spec.name!r}, nearest step on {step.key}: {exc}") from exc
            for r, a in zip(rows, answers):
                results[int(r)] = a
        every = [k for a in results if a is not None for k in a.keys]
        hit = items.get(every, features=list(step.features)) if step.features else None
        out, start = [], 0
        for a in results:
            keys = a.keys if a is not None else []
            scores = a.scores if a is not None else np.zeros(0, np.float32)
            feats = {} if hit is None else {f: _slice(v, start, start + len(keys)) for f, v in hit.features.items()}
            out.append(Candidates(keys, scores, feats))
            start += len(keys)
        return out


def _slice(values: Any, start: int, stop: int) -> Any:
    return values[start:stop]


def entity_columns(entities: Entities, fields: Sequence[str], service: str) -> dict[str, list[Any]]:
    """The request's entities as columns (field -> values), each field the service needs present."""
    if type(entities) is list and all(type(r) is dict for r in entities):  # JSON rows: the common case
        return _row_columns(entities, fields, service)
    if hasattr(entities, "to_dict") and hasattr(entities, "columns"):  # a pandas DataFrame
        frame: Any = entities
        entities = {str(c): frame[c].tolist() for c in frame.columns}
    cols: dict[str, Any]
    if isinstance(entities, Mapping):
        cols = {str(k): list(v) if not isinstance(v, str | bytes) and hasattr(v, "__len__") else v
                for k, v in entities.items()}
        bad = [k for k, v in cols.items() if not isinstance(v, list)]
        if bad:
            raise InvalidQuery(f"service {service!r}: entity field {bad[0]!r} must be a list of values (one per "
                               f"entity); got {cols[bad[0]]!r}")
        if len({len(v) for v in cols.values()}) > 1:
            raise InvalidQuery(f"service {service!r}: entity fields have different lengths "
                               f"({', '.join(f'{k}: {len(v)}' for k, v in cols.items())})")
    elif isinstance(entities, Sequence) and not isinstance(entities, str | bytes):
        rows = list(entities)
        if not all(isinstance(r, Mapping) for r in rows):
            raise InvalidQuery(f"service {service!r}: entities are mappings of field -> value, e.g. "
                               f"[{{{', '.join(f'{f!r}: ...' for f in fields)}}}]")
        return _row_columns(rows, fields, service)
    else:
        raise InvalidQuery(f"service {service!r}: entities are a list of mappings, a mapping of field -> list or "
                           f"a DataFrame; got {type(entities).__name__}")
    missing = [f for f in fields if f not in cols]
    if missing:
        raise InvalidQuery(f"service {service!r} needs entity field(s) {', '.join(map(repr, missing))} "
                           f"(fields: {', '.join(fields)})")
    return {f: cols[f] for f in fields}


_MISSING = object()


def _row_columns(rows: Sequence[Mapping[str, Any]], fields: Sequence[str], service: str) -> dict[str, list[Any]]:
    """Entities given as rows (mappings of field -> value) as columns, every field present in every row."""
    cols = {f: [r.get(f, _MISSING) for r in rows] for f in fields}
    for f, values in cols.items():
        if any(v is _MISSING for v in values):
            i = next(i for i, v in enumerate(values) if v is _MISSING)
            raise InvalidQuery(f"service {service!r}: entity {i} has no field {f!r} (fields: {', '.join(fields)})")
    return cols


def part_keys(part: ServicePart, view: OnlineView, columns: Mapping[str, list[Any]], n: int) -> list[Any]:
    """The keys of one part: its entity key columns' request fields, as one value or a tuple per entity."""
    fields = [part.entity_keys.get(k, k) for k in view.key_names]
    if len(fields) == 1:
        return columns[fields[0]] if n else []
    return list(zip(*(columns[f] for f in fields)))


def request_fields(spec: ServiceSpec, specs: Mapping[str, FeatureGroupSpec]) -> tuple[str, ...]:
    """The entity fields a service's requests carry (every part's mapped key columns, in order)."""
    out: list[str] = []
    for part in spec.parts:
        for k in specs[part.name].key_names:
            f = part.entity_keys.get(k, k)
            if f not in out:
                out.append(f)
    return tuple(out)


class FeatureService:
    """A feature service in this process: ``get(entities)`` answers from one snapshot of views;
    :meth:`refresh` opens the newest commits and swaps the whole snapshot at once."""

    def __init__(self, spec: ServiceSpec, specs: Mapping[str, FeatureGroupSpec],
                 open_view: Callable[[str, int], OnlineView]):
        check_service(spec, specs)
        self.spec = spec
        self._specs = dict(specs)
        self._open = open_view
        self._fields = request_fields(spec, specs)
        self._lock = threading.Lock()
        self._snapshot = self._opened(0)

    def __repr__(self) -> str:
        parts = ", ".join(f"{p.feature_group}:{p.version}@c{p.commit}" for p in self.snapshot.parts)
        return f"FeatureService({self.spec.name!r}, {parts})"

    @property
    def snapshot(self) -> ServiceSnapshot:
        return self._snapshot

    @property
    def fields(self) -> tuple[str, ...]:
        """The entity fields each request carries."""
        return self._fields

    def _opened(self, generation: int) -> ServiceSnapshot:
        views = {name: self._open(name, s.version) for name, s in self._specs.items()}
        return ServiceSnapshot(self.spec, views, generation, self._fields)

    def refresh(self) -> bool:
        """Open every part's newest commit; swap them in together if any changed. Returns whether it did."""
        with self._lock:
            new = self._opened(self._snapshot.generation + 1)
            if [p.commit for p in new.parts] == [p.commit for p in self._snapshot.parts]:
                return False
            self._snapshot = new
            return True

    def get(self, entities: Entities) -> ServiceAnswer:
        """One row per entity with every feature of the service (see :class:`ServiceAnswer`)."""
        return self._snapshot.get(entities)


def service_features(spec: ServiceSpec, specs: Mapping[str, FeatureGroupSpec]
                     ) -> tuple[list[str], dict[str, dict[str, str]]]:
    """A service's parts as training-set arguments: ``features`` refs and ``entity_keys`` (group key ->
    spine column, the spine carrying the request's entity fields)."""
    features = [f"{p.key}:{','.join(p.features)}" if p.features else p.key for p in spec.parts]
    keys = {p.key: {k: p.entity_keys.get(k, k) for k in specs[p.name].key_names} for p in spec.parts}
    return features, keys
