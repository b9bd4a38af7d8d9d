"""Feature services over HTTP: ``POST /services/{name}/lookup`` (JSON or Arrow IPC), ``GET /services``
and ``GET /services/{name}``.

A lookup body is ``{"entities": [{"user_id": "u1", "day": 3}, ...]}`` (or columns:
``{"entities": {"user_id": [...], "day": [...]}}``), or an Arrow IPC stream of a table whose columns
are the entity fields. The answer names the service's ``parts`` (feature group, version, commit) and
the snapshot ``generation``, and holds per entity every feature (``<group>__<feature>``), a ``found``
mask per group and, for a service with a nearest step, its candidates with their features. One answer
is read from one snapshot, so its parts never mix two reloads.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from featurestore.online.service import ServiceAnswer, ServiceSnapshot
from featurestore.server.auth import BearerToken
from featurestore.server.errors import failure
from featurestore.server.metrics import Metrics
from featurestore.server.openapi import error_response
from featurestore.server.reload import Registry
from featurestore.server.wire import ARROW, JSON, BadRequest, Limits, parse_json

PREFIX, SUFFIX = "/services/", "/lookup"


class ServiceEndpoints:
    """The feature-service endpoints, over the registry's service snapshots."""

    def __init__(self, registry: Registry, metrics: Metrics, limits: Limits, token: BearerToken):
        self.registry, self.metrics, self.limits = registry, metrics, limits
        self.authorise = token.check

    def label(self, name: str) -> str:
        return f"service:{name}" if name in self.registry.service_names() else "service:_unknown"

    def answer_lookup(self, name: str, headers: Mapping[str, str], body: bytes, size: int
                      ) -> tuple[int, bytes, str]:
        """(status, body, media type) of a service lookup; shared by the route and the fast path."""
        t = time.perf_counter()
        status, n = 200, 0
        try:
            self.authorise(headers)
            snap = self.registry.service(name)  # this request uses this snapshot to the end
            if size > self.limits.max_body_bytes:
                raise BadRequest(413, f"the body is larger than {self.limits.max_body_bytes} bytes")
            entities = parse_entities(body, headers.get("content-type", ""), self.limits, name)
            ans = snap.get(entities)
            n = len(ans)
            if ARROW in headers.get("accept", ""):
                return status, answer_arrow(snap, ans), ARROW
            return status, answer_json(snap, ans), JSON
        except Exception as exc:
            status, payload = failure(exc, "service lookup", name)
            return status, payload, JSON
        finally:
            self.metrics.observe("service_lookup", self.label(name), status, time.perf_counter() - t, n)

    async def lookup(self, name: str, request: Request) -> Response:
        body = await request.body()
        status, payload, media = self.answer_lookup(name, request.headers, body, len(body))
        return Response(payload, status_code=status, media_type=media)

    async def list_services(self, request: Request) -> Response:
        self.authorise(request.headers)
        return JSONResponse([status(self.registry.service(n)) for n in self.registry.service_names()])

    async def service(self, name: str, request: Request) -> Response:
        self.authorise(request.headers)
        return JSONResponse(status(self.registry.service(name)))


def status(snap: ServiceSnapshot) -> dict[str, Any]:
    """What a served service is: its definition, entity fields, the parts served and the generation."""
    return {"service": snap.spec.name, "description": snap.spec.description, "entity_fields": list(snap.fields),
            "entity_types": snap.field_types(),
            "generation": snap.generation, "parts": [p.to_dict() for p in snap.parts],
            "definition": snap.spec.to_dict()}


# ---- requests ------------------------------------------------------------------------------------
def parse_entities(body: bytes, content_type: str, limits: Limits, service: str = "") -> Any:
    """The entities of a service lookup: rows or columns (JSON), or an Arrow table's columns."""
    if content_type.startswith(ARROW):
        try:
            table = pa.ipc.open_stream(body).read_all()
        except (pa.ArrowException, OSError, ValueError) as exc:
            raise BadRequest(400, f"the body is not an Arrow IPC stream: {exc}") from exc
        if table.num_rows > limits.max_keys:
            raise BadRequest(413, f"{table.num_rows} entities; the limit is {limits.max_keys}")
        return {c: table[c].to_pylist() for c in table.column_names}
    if content_type and not content_type.startswith(JSON):
        raise BadRequest(415, f"send {JSON} or {ARROW}; got {content_type!r}")
    doc = parse_json(body)
    extra = sorted(set(doc) - {"entities"})
    if extra or "entities" not in doc:
        raise BadRequest(422, "the body is {\"entities\": [{field: value, ...}, ...]} or "
                              "{\"entities\": {field: [values]}}" + (f"; unknown field(s) {extra}" if extra else ""))
    entities = doc["entities"]
    if isinstance(entities, list):
        n = len(entities)
    elif isinstance(entities, dict):
        n = max((len(v) for v in entities.values() if isinstance(v, list)), default=0)
    else:
        raise BadRequest(422, f"service {service!r}: entities must be a list of objects or an object of lists; "
                              f"got {type(entities).__name__}")
    if n > limits.max_keys:
        raise BadRequest(413, f"{n} entities; the limit is {limits.max_keys}")
    return entities


# ---- answers -------------------------------------------------------------------------------------
def _vector_json(values: np.ndarray) -> Any:
    if not len(values) or not values.shape[1]:
        return values.tolist()
    if len(values) == 1:  # one entity (most requests): a scalar check (NaN != NaN) beats a mask
        return values if values[0, 0] == values[0, 0] else [None]
    ok = ~np.isnan(values[:, 0])
    if ok.all():
        return values
    return [row if good else None for row, good in zip(values, ok.tolist())]


def answer_json(snap: ServiceSnapshot, ans: ServiceAnswer) -> bytes:
    features = {k: _vector_json(v) if isinstance(v, np.ndarray) else v for k, v in ans.features.items()}
    dims = {k: int(v.shape[1]) for k, v in ans.features.items() if isinstance(v, np.ndarray)}
    doc: dict[str, Any] = {"service": ans.service, "generation": ans.generation,
                           "parts": [p.to_dict() for p in ans.parts], "entities": ans.entities,
                           "found": ans.found, "features": features, "dims": dims}
    if ans.neighbors is not None:
        assert snap.spec.nearest is not None
        items = snap.views[snap.spec.nearest.name]
        doc["nearest_dims"] = {f: items.vectors[f].dim for f in snap.spec.nearest.features if f in items.vectors}
        doc["neighbors"] = [{"keys": c.keys, "scores": c.scores,
                             "features": {k: _vector_json(v) if isinstance(v, np.ndarray) else v
                                          for k, v in c.features.items()}} for c in ans.neighbors]
    return orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY, default=_default)


def _default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, tuple):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


def _vector_array(values: np.ndarray) -> pa.Array:
    dim = values.shape[1]
    missing = np.isnan(values[:, 0]) if dim else np.ones(len(values), bool)
    flat = pa.array(np.nan_to_num(values, nan=0.0).ravel(), pa.float32())
    return pa.FixedSizeListArray.from_arrays(flat, dim, mask=pa.array(missing))


def answer_arrow(snap: ServiceSnapshot, ans: ServiceAnswer) -> bytes:
    """The answer as an Arrow IPC stream: entity fields, ``<group>__found`` masks, the features and, with
    a nearest step, list columns ``nearest__keys``, ``nearest__scores`` and ``nearest__<feature>``; the
    service, generation and parts are in the schema metadata."""
    arrays: dict[str, pa.Array] = {k: pa.array(v) for k, v in ans.entities.items()}
    for g, mask in ans.found.items():
        arrays[f"{g}__found"] = pa.array(mask)
    for name, values in ans.features.items():
        if isinstance(values, np.ndarray):
            arrays[name] = _vector_array(values)
        else:
            group, _, feature = name.partition("__")
            arrays[name] = pa.array(values, snap.views[group].columns.schema.field(feature).type)
    if ans.neighbors is not None:
        step = snap.spec.nearest
        assert step is not None
        items = snap.views[step.name]
        arrays["nearest__keys"] = pa.array([c.keys for c in ans.neighbors])
        arrays["nearest__scores"] = pa.array([c.scores.tolist() for c in ans.neighbors], pa.list_(pa.float32()))
        for f in step.features:
            values = [c.features[f] for c in ans.neighbors]
            if f in items.vectors:
                arrays[f"nearest__{f}"] = pa.array([np.asarray(v).tolist() for v in values],
                                                   pa.list_(pa.list_(pa.float32())))
            else:
                arrays[f"nearest__{f}"] = pa.array(values, pa.list_(items.columns.schema.field(f).type))
    meta = {"service": ans.service, "generation": str(ans.generation),
            "parts": orjson.dumps([p.to_dict() for p in ans.parts]).decode()}
    table = pa.table(arrays).replace_schema_metadata(meta)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


# ---- OpenAPI -------------------------------------------------------------------------------------
PART = {"type": "object", "properties": {"feature_group": {"type": "string"}, "version": {"type": "integer"},
                                         "commit": {"type": "integer"}}}
LOOKUP_ANSWER = {"type": "object", "required": ["service", "generation", "parts", "entities", "found", "features"],
                 "properties": {
                     "service": {"type": "string"},
                     "generation": {"type": "integer", "description": "the snapshot answered from (grows with "
                                                                      "each reload of the service's groups)"},
                     "parts": {"type": "array", "items": PART},
                     "entities": {"type": "object", "additionalProperties": {"type": "array", "items": {}}},
                     "found": {"type": "object", "description": "group -> one boolean per entity",
                               "additionalProperties": {"type": "array", "items": {"type": "boolean"}}},
                     "features": {"type": "object", "description": "<group>__<feature> -> one value per entity "
                                                                   "(null where the group has no row)",
                                  "additionalProperties": {"type": "array", "items": {}}},
                     "dims": {"type": "object", "additionalProperties": {"type": "integer"},
                              "description": "the dimension of each vector feature"},
                     "nearest_dims": {"type": "object", "additionalProperties": {"type": "integer"},
                                      "description": "the dimension of each vector feature of the candidates"},
                     "neighbors": {"type": "array", "description": "the nearest step, per entity", "items": {
                         "type": "object", "properties": {
                             "keys": {"type": "array", "items": {}},
                             "scores": {"type": "array", "items": {"type": "number"}},
                             "features": {"type": "object", "additionalProperties": {"type": "array", "items": {}}}}}}}}
STATUS = {"type": "object", "properties": {
    "service": {"type": "string"}, "description": {"type": "string"},
    "entity_fields": {"type": "array", "items": {"type": "string"}},
    "entity_types": {"type": "object", "additionalProperties": {"type": "string", "enum": ["int64", "string"]}},
    "generation": {"type": "integer"},
    "parts": {"type": "array", "items": PART}, "definition": {"type": "object"}}}
LOOKUP_BODY = {
    "required": True,
    "content": {
        JSON: {"schema": {"type": "object", "required": ["entities"], "additionalProperties": False, "properties": {
            "entities": {"oneOf": [
                {"type": "array", "items": {"type": "object"},
                 "description": "one object of field -> value per entity"},
                {"type": "object", "additionalProperties": {"type": "array"},
                 "description": "field -> one value per entity"}]}}},
            "example": {"entities": [{"user_id": "u1"}]}},
        ARROW: {"schema": {"type": "string", "format": "binary",
                           "description": "Arrow IPC stream of a table whose columns are the entity fields"}},
    },
}


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    text = {401: "Missing or wrong bearer token", 404: "No such service", 408: "The body did not arrive in time",
            413: "Too many entities or too large a body", 415: "Unsupported content type",
            422: "A malformed request, a missing entity field or a key of the wrong type",
            503: "The service cannot answer"}
    return {c: error_response(c, text.get(c)) for c in sorted({400, *codes})}  # 400: a malformed request


def service_router(endpoints: ServiceEndpoints) -> APIRouter:
    r = APIRouter()
    r.add_api_route("/services", endpoints.list_services, methods=["GET"],
                    summary="Served feature services with their parts (group, version, commit)",
                    responses={200: {"description": "Served services",
                                     "content": {JSON: {"schema": {"type": "array", "items": STATUS}}}},
                               **_errors(401)})
    r.add_api_route("/services/{name}", endpoints.service, methods=["GET"],
                    summary="One feature service: its definition, entity fields and the parts it serves",
                    responses={200: {"description": "The service", "content": {JSON: {"schema": STATUS}}},
                               **_errors(401, 404)})
    r.add_api_route("/services/{name}/lookup", endpoints.lookup, methods=["POST"],
                    openapi_extra={"requestBody": LOOKUP_BODY},
                    summary="Every feature of a service's groups for each entity (and its nearest step's "
                            "candidates), from one consistent set of commits; missing keys are nulls with a "
                            "found mask per group, never an error",
                    responses={200: {"description": "One row per entity", "content": {
                        JSON: {"schema": LOOKUP_ANSWER},
                        ARROW: {"schema": {"type": "string", "format": "binary"}}}},
                        **_errors(401, 404, 408, 413, 415, 422, 503)})
    return r
