"""The HTTP service's wire formats: parse and check request bodies (JSON or Arrow IPC) and encode
answers, with a :class:`BadRequest` (an HTTP status and a message) for every malformed input.

JSON is the default; ``Content-Type: application/vnd.apache.arrow.stream`` sends keys as an Arrow IPC
stream (a table with a ``key`` column) and ``Accept: application/vnd.apache.arrow.stream`` returns the
answer as one (key, found, vector, requested columns).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
import pyarrow as pa

from featurestore.online.view import Lookup, Neighbors, OnlineView

ARROW = "application/vnd.apache.arrow.stream"
JSON = "application/json"


class BadRequest(Exception):
    """A request the service refuses: ``status`` (4xx) and a message naming what is wrong."""

    def __init__(self, status: int, message: str, kind: str = "BadRequest"):
        self.status = status
        self.message = message
        self.kind = kind
        super().__init__(message)


@dataclass(frozen=True)
class Limits:
    """Request limits of the HTTP service; larger requests get 413, bad values 422."""

    max_keys: int = 10_000  # keys in one lookup, queries in one nearest batch, keys in exclude
    max_k: int = 1_000
    max_vector_length: int = 65_536
    max_body_bytes: int = 64 * 1024 * 1024
    body_timeout_s: float = 10.0  # a request body must arrive within this (408 otherwise)
    max_connections: int = 1024  # open connections and requests at once; beyond it new ones get 503
    keep_alive_s: float = 5.0  # an idle keep-alive connection is closed after this


def parse_json(body: bytes) -> dict[str, Any]:
    if not body:
        raise BadRequest(400, "the request body is empty; send a JSON object")
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(400, f"the body is not valid JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise BadRequest(422, f"the body must be a JSON object; got {type(doc).__name__}")
    return doc


def _only(doc: Mapping[str, Any], allowed: set[str]) -> None:
    extra = sorted(set(doc) - allowed)
    if extra:
        raise BadRequest(422, f"unknown field(s) {', '.join(map(repr, extra))}; allowed: {', '.join(sorted(allowed))}")


def _key_list(value: Any, what: str, limits: Limits) -> list[Any]:
    if not isinstance(value, list):
        raise BadRequest(422, f"{what} must be a list of keys; got {type(value).__name__}")
    if len(value) > limits.max_keys:
        raise BadRequest(413, f"{what} has {len(value)} keys; the limit is {limits.max_keys}")
    return value


def _columns(value: Any) -> list[str] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(c, str) for c in value):
        raise BadRequest(422, "columns must be a list of column names")
    return value


def parse_lookup(body: bytes, content_type: str, limits: Limits, columns_param: str | None,
                 key_names: list[str] | None = None, features_param: str | None = None
                 ) -> tuple[list[Any], list[str] | None, list[str] | None]:
    """(keys, columns, features) of a lookup request. Composite keys are lists (or objects) in JSON, and
    one column per key column (named as the group's keys) in an Arrow table."""
    if content_type.startswith(ARROW):
        cols = [c for c in columns_param.split(",") if c] if columns_param else None
        feats = [f for f in features_param.split(",") if f] if features_param else None
        return _arrow_keys(body, limits, key_names or ["key"]), cols, feats
    if content_type and not content_type.startswith(JSON):
        raise BadRequest(415, f"send {JSON} or {ARROW}; got {content_type!r}")
    doc = parse_json(body)
    _only(doc, {"keys", "columns", "features"})
    if "keys" not in doc:
        raise BadRequest(422, "the body needs 'keys': a list of entity keys")
    feats = doc.get("features")
    if feats is not None and (not isinstance(feats, list) or not all(isinstance(f, str) for f in feats)):
        raise BadRequest(422, "features must be a list of feature names")
    return _key_list(doc["keys"], "keys", limits), _columns(doc.get("columns")), feats


def _arrow_keys(body: bytes, limits: Limits, key_names: list[str]) -> list[Any]:
    """Keys from an Arrow IPC stream: a 'key' column, or for composite keys one column per key column."""
    try:
        table = pa.ipc.open_stream(body).read_all()
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise BadRequest(400, f"the body is not an Arrow IPC stream: {exc}") from exc
    names = ["key"] if len(key_names) == 1 or "key" in table.column_names else key_names
    missing = [n for n in names if n not in table.column_names]
    if missing:
        raise BadRequest(422, f"the Arrow table needs the column(s) {', '.join(map(repr, names))}; "
                              f"got {table.column_names}")
    if table.num_rows > limits.max_keys:
        raise BadRequest(413, f"{table.num_rows} keys; the limit is {limits.max_keys}")
    for n in names:
        col = table[n]
        if col.null_count:
            raise BadRequest(422, f"the {n!r} column holds nulls")
        if not (pa.types.is_integer(col.type) or pa.types.is_string(col.type) or pa.types.is_large_string(col.type)):
            raise BadRequest(422, f"the {n!r} column must be integers or strings; got {col.type}")
    if len(names) == 1:
        return table[names[0]].to_pylist()
    return list(zip(*(table[n].to_pylist() for n in names)))


@dataclass(frozen=True)
class NearestQuery:
    vectors: Any = None  # a list of vectors (batch)
    vector: Any = None
    key: Any = None
    query_group: str | None = None
    k: int = 10
    filter: Mapping[str, Any] | None = None
    exclude: tuple[Any, ...] = ()
    exact: bool = False
    feature: str | None = None  # the vector feature searched (default: the group's default)


def parse_nearest(body: bytes, content_type: str, limits: Limits) -> NearestQuery:
    """The query of a nearest request: exactly one of a key, a vector, a batch of vectors or another
    group's key, with the options (k, filter, exclude, exact)."""
    if content_type and not content_type.startswith(JSON):
        raise BadRequest(415, f"nearest takes {JSON}; got {content_type!r}")
    doc = parse_json(body)
    _only(doc, {"key", "vector", "vectors", "query", "k", "filter", "exclude", "exact", "feature"})
    given = [f for f in ("key", "vector", "vectors", "query") if f in doc]
    if len(given) != 1:
        raise BadRequest(422, "give exactly one of 'key', 'vector', 'vectors' or 'query'"
                         + (f"; got {', '.join(given)}" if given else ""))
    return _with_query(doc, _nearest_options(doc, limits), limits)


def _nearest_options(doc: Mapping[str, Any], limits: Limits) -> NearestQuery:
    """A query without its key or vector: k, exact, filter and exclude, checked."""
    k = doc.get("k", 10)
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise BadRequest(422, f"k must be a positive integer; got {k!r}")
    if k > limits.max_k:
        raise BadRequest(413, f"k={k} is above the limit {limits.max_k}")
    exact = doc.get("exact", False)
    if not isinstance(exact, bool):
        raise BadRequest(422, f"exact must be true or false; got {exact!r}")
    flt = doc.get("filter")
    if flt is not None and not isinstance(flt, dict):
        raise BadRequest(422, "filter must be an object of column -> condition")
    exclude = tuple(_key_list(doc.get("exclude", []), "exclude", limits))
    feature = doc.get("feature")
    if feature is not None and not isinstance(feature, str):
        raise BadRequest(422, f"feature must be the name of a vector feature; got {feature!r}")
    return NearestQuery(k=k, filter=flt, exclude=exclude, exact=exact, feature=feature)


def _with_query(doc: Mapping[str, Any], q: NearestQuery, limits: Limits) -> NearestQuery:
    """``q`` with what to search for: the document's one 'vector', 'vectors', 'key' or 'query'."""
    if "vector" in doc:
        return _replace(q, vector=_vector(doc["vector"], "vector", limits))
    if "vectors" in doc:
        vs = doc["vectors"]
        if not isinstance(vs, list) or not vs:
            raise BadRequest(422, "vectors must be a non-empty list of vectors")
        if len(vs) > limits.max_keys:
            raise BadRequest(413, f"{len(vs)} query vectors; the limit is {limits.max_keys}")
        return _replace(q, vectors=[_vector(v, f"vectors[{i}]", limits) for i, v in enumerate(vs)])
    if "key" in doc:
        return _replace(q, key=_scalar_key(doc["key"], "key"))
    ref = doc["query"]
    if not isinstance(ref, dict) or set(ref) != {"feature_group", "key"} or not isinstance(ref["feature_group"], str):
        raise BadRequest(422, "query must be {\"feature_group\": NAME, \"key\": KEY}")
    return _replace(q, key=_scalar_key(ref["key"], "query.key"), query_group=ref["feature_group"])


def _replace(q: NearestQuery, **kw: Any) -> NearestQuery:
    return NearestQuery(**{**q.__dict__, **kw})


def _scalar_key(value: Any, what: str) -> Any:
    if isinstance(value, list | dict) and value:  # a composite key: checked by the view
        return value
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise BadRequest(422, f"{what} must be a string or an integer (or a composite key); got {value!r}")
    return value


def _vector(value: Any, what: str, limits: Limits) -> list[float]:
    if not isinstance(value, list) or not value:
        raise BadRequest(422, f"{what} must be a non-empty list of numbers")
    if len(value) > limits.max_vector_length:
        raise BadRequest(413, f"{what} has {len(value)} numbers; the limit is {limits.max_vector_length}")
    for x in value:
        if isinstance(x, bool) or not isinstance(x, int | float) or not abs(x) <= FLOAT32_MAX:
            raise BadRequest(422, f"{what} must hold finite numbers within float32's range; got {x!r}")
    return value


# ---- answers -----------------------------------------------------------------------------------
def _head(view: OnlineView) -> dict[str, Any]:
    return {"feature_group": view.name, "version": view.version, "commit": view.commit}


def lookup_json(view: OnlineView, hit: Lookup) -> bytes:
    if hit.missing:
        vectors: Any = [row if ok else None for row, ok in zip(hit.vectors, hit.found.tolist())]
    else:
        vectors = hit.vectors
    doc = {**_head(view), "keys": hit.keys, "found": hit.found, "vectors": vectors, "missing": hit.missing}
    if hit.columns:
        doc["columns"] = hit.columns
    others = _other_features(view, hit)
    if others:
        doc["features"] = {k: _nulled(v, hit) if isinstance(v, np.ndarray) else v for k, v in others.items()}
    return orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY, default=_default)


def _other_features(view: OnlineView, hit: Lookup) -> dict[str, Any]:
    """The requested features besides the default vector feature (which the answer holds as 'vectors')."""
    default = view.vector_name
    return {k: v for k, v in hit.features.items() if k != default}


def _nulled(values: np.ndarray, hit: Lookup) -> Any:
    return [row if ok else None for row, ok in zip(values, hit.found.tolist())] if hit.missing else values


def lookup_arrow(view: OnlineView, hit: Lookup) -> bytes:
    dim = hit.vectors.shape[1]
    values = pa.array(np.nan_to_num(hit.vectors, nan=0.0).ravel(), pa.float32())
    vectors = pa.FixedSizeListArray.from_arrays(values, dim, mask=pa.array(~hit.found)) if dim else None
    if len(view.key_names) > 1:  # composite keys: one column per key column
        arrays = {n: pa.array([k[i] if isinstance(k, list | tuple) else k[n] for k in hit.keys])
                  for i, n in enumerate(view.key_names)}
    else:
        arrays = {"key": pa.array(hit.keys)}
    arrays["found"] = pa.array(hit.found)
    if dim:  # a group of scalars has no vector column
        arrays["vector"] = vectors
    for name, vals in hit.columns.items():
        arrays[name] = pa.array(vals, view.columns.schema.field(name).type)
    for name, vals in _other_features(view, hit).items():
        if isinstance(vals, np.ndarray):
            flat = pa.array(np.nan_to_num(vals, nan=0.0).ravel(), pa.float32())
            arrays[name] = pa.FixedSizeListArray.from_arrays(flat, vals.shape[1], mask=pa.array(~hit.found))
        elif name not in arrays:
            arrays[name] = pa.array(vals, view.columns.schema.field(name).type)
    meta = {k: str(v) for k, v in _head(view).items()}
    table = pa.table(arrays).replace_schema_metadata(meta)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def nearest_json(view: OnlineView, results: list[Neighbors], batch: bool) -> bytes:
    head = {**_head(view), "metric": view.metric}
    if batch:
        doc = {**head, "results": [{"keys": r.keys, "scores": r.scores, "exact": r.exact} for r in results]}
    else:
        r = results[0]
        doc = {**head, "keys": r.keys, "scores": r.scores, "exact": r.exact}
    return orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY, default=_default)


def _default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


# ---- OpenAPI request bodies (the handlers parse bodies themselves, for speed and Arrow) ----------
# They state what the parsers accept, limits included; what depends on a feature group (its key type,
# dimension and columns) cannot be stated in one schema for every group and is answered with 422.
FLOAT32_MAX = 3.4028234663852886e38  # vectors are float32: a larger number would become infinity
_INT64 = {"type": "integer", "minimum": -(1 << 63), "maximum": (1 << 63) - 1}
KEY_SCHEMA = {"oneOf": [{"type": "string"}, _INT64,
                        {"type": "array", "items": {"oneOf": [{"type": "string"}, _INT64]},
                         "description": "a composite key: its parts in key-column order"},
                        {"type": "object", "description": "a composite key: key column -> value"}]}
FILTER_SCHEMA = {
    "type": ["object", "null"],
    "description": "column -> value (equality), list (in) or {op: value} with op in eq ne lt le gt ge in "
                   "not_in; conditions are combined with AND and applied before ranking",
    "additionalProperties": True,
}
def lookup_body(limits: Limits) -> dict[str, Any]:
    """The lookup request body's OpenAPI declaration under ``limits``."""
    return {
        "required": True,
        "content": {
            JSON: {"schema": {"type": "object", "required": ["keys"], "additionalProperties": False, "properties": {
                "keys": {"type": "array", "items": KEY_SCHEMA, "maxItems": limits.max_keys},
                "columns": {"type": ["array", "null"], "items": {"type": "string"},
                            "description": "scalar columns to return with the vectors"},
                "features": {"type": ["array", "null"], "items": {"type": "string"},
                             "description": "features to return (default: all); the default vector feature comes "
                                            "back as 'vectors', the others under 'features'"}}},
                "example": {"keys": ["i1", "i2"]}},
            ARROW: {"schema": {"type": "string", "format": "binary",
                               "description": "Arrow IPC stream of a table with a 'key' column"}},
        },
    }


def nearest_body(limits: Limits) -> dict[str, Any]:
    """The nearest request body's OpenAPI declaration under ``limits``: exactly one of key, vector,
    vectors and query (``oneOf``), with the options."""
    number = {"type": "number", "minimum": -FLOAT32_MAX, "maximum": FLOAT32_MAX}
    vector = {"type": "array", "items": number, "minItems": 1, "maxItems": limits.max_vector_length}
    keys = {"type": "array", "items": KEY_SCHEMA, "maxItems": limits.max_keys}
    return {"required": True, "content": {JSON: {"schema": {
        "type": "object", "additionalProperties": False, "properties": {
            "key": {**KEY_SCHEMA, "description": "query with this key's vector in the same feature group"},
            "vector": vector,
            "vectors": {"type": "array", "items": vector, "minItems": 1, "maxItems": limits.max_keys,
                        "description": "a batch of query vectors: the answer has 'results'"},
            "query": {"type": "object", "required": ["feature_group", "key"], "additionalProperties": False,
                      "properties": {"feature_group": {"type": "string"}, "key": KEY_SCHEMA},
                      "description": "query with a key's vector from another served feature group"},
            "k": {"type": "integer", "minimum": 1, "maximum": limits.max_k, "default": 10},
            "filter": FILTER_SCHEMA,
            "exclude": {**keys, "description": "keys never returned"},
            "exact": {"type": "boolean", "default": False},
            "feature": {"type": ["string", "null"], "description": "the vector feature searched (default: the group's "
                                                         "online.vector, else its first vector feature)"}},
        # what to search for: exactly one of key, vector, vectors and query
        "oneOf": [{"required": [field]} for field in ("key", "vector", "vectors", "query")]},
        "example": {"key": "i1", "k": 10, "exclude": ["i1"], "filter": {"n_events": {"ge": 5}}}}}}


LOOKUP_BODY = lookup_body(Limits())
NEAREST_BODY = nearest_body(Limits())
