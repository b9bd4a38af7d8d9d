"""An HTTP client for ``featurestore serve`` with the same interface as an in-process view.

Example::

    from featurestore.server.client import Client
    items = Client("http://127.0.0.1:8000", token="...").view("item_embeddings")
    items.get(["i1", "i2"]).found
    items.nearest(key="i1", k=10, exclude=["i1"])
    items.nearest(key="u7", query_view="user_embeddings")   # or query_view=client.view("user_embeddings")

Errors come back as the same featurestore exceptions the server raised (``KeyNotFound``,
``InvalidQuery``, ...); anything else as :class:`~featurestore.errors.ServeError`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

import featurestore.errors as errors
from featurestore.online.service import Candidates, Part, ServiceAnswer
from featurestore.online.view import Lookup, Neighbors, check_columns, check_keys


class Client:
    """A connection (keep-alive) to a featurestore HTTP service."""

    def __init__(self, url: str, *, token: str | None = None, timeout: float = 30.0):
        import httpx

        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=timeout)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(self, method: str, path: str, **kw: Any) -> Any:
        import httpx
        import orjson

        try:
            if "json" in kw:  # numpy scalars and datetimes (filters) as the in-process view takes them
                kw["content"] = orjson.dumps(kw.pop("json"), option=orjson.OPT_SERIALIZE_NUMPY)
                kw["headers"] = {"content-type": "application/json", **kw.get("headers", {})}
            r = self.http.request(method, path, **kw)
        except httpx.HTTPError as exc:
            raise errors.ServeError(f"{method} {path}: {exc}") from exc
        except (TypeError, ValueError) as exc:  # a body that JSON cannot carry (a set, an int over 64 bits...)
            raise errors.InvalidQuery(f"{method} {path}: the request cannot be sent as JSON: {exc}") from exc
        if r.status_code >= 400:
            try:
                doc = r.json()
                kind, message = doc.get("error", ""), doc.get("detail", r.text)
            except ValueError:
                kind, message = "", r.text
            cls = getattr(errors, kind, None)
            if isinstance(cls, type) and issubclass(cls, errors.FeatureStoreError) and cls is not errors.SpecError:
                raise cls(message)
            if r.status_code in (404,):
                raise errors.NotFound(message)
            if r.status_code in (400, 413, 415, 422):
                raise errors.InvalidQuery(f"{r.status_code}: {message}")
            raise errors.ServeError(f"{method} {path}: {r.status_code} {message}")
        return r.json()

    def feature_groups(self) -> list[dict[str, Any]]:
        return self.request("GET", "/feature-groups")

    def view(self, name: str) -> RemoteView:
        return RemoteView(self, name)

    def service(self, name: str) -> RemoteService:
        """A served feature service, used like ``store.service(name)``."""
        return RemoteService(self, name)


class RemoteView:
    """A served feature group, used like :class:`~featurestore.online.view.OnlineView`: the same methods
    with the same parameter names, answers and errors (``tests/test_transport_contract.py``), except
    that ``rows`` in answers is -1 (row numbers are the server's) and the server's limits apply (keys
    per request, ``k``, body size), answered with :class:`~featurestore.errors.InvalidQuery`."""

    def __init__(self, client: Client, name: str):
        self.client = client
        self.name = name
        self._dim: int | None = None
        self._shape: dict[str, Any] | None = None

    def __repr__(self) -> str:
        return f"RemoteView({self.name!r}, url={str(self.client.http.base_url)!r})"

    def _vectors_info(self) -> dict[str, Any]:
        """The vector features (name -> dim) and the default one: fixed per feature-group version."""
        if self._shape is None:
            info = self.info()
            self._shape = {"vector": info.get("vector"),
                           "dims": {n: v["dim"] for n, v in (info.get("vectors") or {}).items()}}
        return self._shape

    def info(self) -> dict[str, Any]:
        return self.client.request("GET", f"/feature-groups/{self.name}")

    def __len__(self) -> int:
        return int(self.info()["rows"])

    def __contains__(self, key: Any) -> bool:
        try:
            return bool(self.get([key]).found[0])
        except errors.InvalidQuery:
            return False

    def _dimension(self) -> int:
        if self._dim is None:  # fixed per feature-group version: asked once, when no answer shows it
            self._dim = int(self.info()["dim"])
        return self._dim

    def _lookup(self, keys: Sequence[Any], columns: Sequence[str] | None,
                features: Sequence[str] | None = None) -> dict[str, Any]:
        check_keys(keys)
        body: dict[str, Any] = {"keys": list(keys)}
        if columns is not None:
            check_columns(columns)
            body["columns"] = list(columns)
        if features is not None:
            check_columns(features, "features")
            body["features"] = list(features)
        return self.client.request("POST", f"/feature-groups/{self.name}/lookup", json=body)

    def get(self, keys: Sequence[Any], *, features: Sequence[str] | None = None,
            columns: Sequence[str] | None = None) -> Lookup:
        doc = self._lookup(keys, columns, features)
        found = np.array(doc["found"], dtype=bool)
        dim = next((len(v) for v in doc["vectors"] if v is not None), None)
        if dim is None:
            dim = self._dimension()
        else:
            self._dim = dim
        vectors = np.full((len(found), dim), np.nan, np.float32)
        for i, v in enumerate(doc["vectors"]):
            if v is not None:
                vectors[i] = v
        keys = list(keys)
        missing = [keys[int(i)] for i in np.flatnonzero(~found)]
        return Lookup(keys, vectors, found, missing, np.full(len(found), -1, np.int64), doc.get("columns", {}),
                      self._features(doc, vectors, features))

    def _features(self, doc: dict[str, Any], vectors: np.ndarray, features: Sequence[str] | None) -> dict[str, Any]:
        """The answer's features as the in-process view gives them (vectors as float32 arrays, NaN rows)."""
        shape = self._vectors_info()
        out: dict[str, Any] = {}
        sent = doc.get("features", {})
        names = list(features) if features is not None else [*([shape["vector"]] if shape["vector"] else []), *sent]
        for name in names:
            if name == shape["vector"]:
                out[name] = vectors
            elif name in shape["dims"]:
                out[name] = _matrix(sent[name], shape["dims"][name])
            else:
                out[name] = sent[name]
        return out

    def __getitem__(self, key: Any) -> np.ndarray:
        doc = self._lookup([key], None)
        if not doc["found"][0]:
            raise errors.KeyNotFound(f"{doc['feature_group']} v{doc['version']} (commit {doc['commit']}) "
                                     f"has no key {key!r}")
        return np.asarray(doc["vectors"][0], np.float32)

    def nearest(self, vector: Any = None, *, key: Any = None, query_view: RemoteView | str | None = None,
                k: int = 10, filter: Mapping[str, Any] | None = None, exclude: Sequence[Any] = (),
                exact: bool = False, feature: str | None = None) -> Neighbors:
        """The ``k`` most similar rows to ``vector``, or to the vector of ``key`` (looked up in
        ``query_view``, a served feature group or its name, when given)."""
        if (vector is None) == (key is None):
            raise errors.InvalidQuery("give exactly one of vector= or key=")
        body = self._query(k, filter, exclude, exact, feature)
        if vector is not None:
            body["vector"] = _vector(vector, "the query vector", 1)
        elif query_view is not None:
            group = query_view.name if isinstance(query_view, RemoteView) else query_view
            body["query"] = {"feature_group": group, "key": key}
        else:
            body["key"] = key
        doc = self.client.request("POST", f"/feature-groups/{self.name}/nearest", json=body)
        return _neighbors(doc)

    def nearest_many(self, vectors: Any, *, k: int = 10, filter: Mapping[str, Any] | None = None,
                     exclude: Sequence[Any] = (), exact: bool = False, feature: str | None = None
                     ) -> list[Neighbors]:
        """:meth:`nearest` for a batch of query vectors (n, dim): one answer per query."""
        body = self._query(k, filter, exclude, exact, feature)
        body["vectors"] = _vector(vectors, "query vectors", 2)
        doc = self.client.request("POST", f"/feature-groups/{self.name}/nearest", json=body)
        return [_neighbors(r) for r in doc["results"]]

    @staticmethod
    def _query(k: Any, filter: Any, exclude: Any, exact: Any, feature: Any = None) -> dict[str, Any]:
        if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
            raise errors.InvalidQuery(f"k must be a positive integer; got {k!r}")
        body: dict[str, Any] = {"k": int(k), "exact": exact}
        if feature is not None:
            body["feature"] = feature
        if filter is not None and not isinstance(filter, Mapping):
            raise errors.InvalidQuery(f"a filter is a mapping of column to condition; got {type(filter).__name__}")
        if filter:
            body["filter"] = dict(filter)
        if exclude is not None and not (hasattr(exclude, "__len__") and len(exclude) == 0):
            check_keys(exclude, "exclude")
            body["exclude"] = list(exclude)
        return body


def _vector(value: Any, what: str, ndim: int) -> list[Any]:
    """Query vector(s) as JSON lists, refused as the in-process view refuses them (NaN would become null)."""
    try:
        q = np.array(value, dtype=np.float64, ndmin=ndim)
    except (TypeError, ValueError) as exc:
        raise errors.InvalidQuery(f"{what} must be numbers: {exc}") from exc
    if q.ndim != ndim:
        raise errors.InvalidQuery(f"{what} must be {'one vector' if ndim == 1 else 'a list of vectors'}; "
                                  f"got shape {tuple(q.shape)}")
    if not np.all(np.isfinite(q)):
        raise errors.InvalidQuery(f"{what} hold{'s' if ndim == 1 else ''} NaN or infinity")
    return q.tolist()


def _matrix(rows: list[Any], dim: int) -> np.ndarray:
    out = np.full((len(rows), dim), np.nan, np.float32)
    for i, v in enumerate(rows):
        if v is not None:
            out[i] = v
    return out


class RemoteService:
    """A served feature service, used like :class:`~featurestore.online.service.FeatureService`:
    ``get(entities)`` gives the same :class:`~featurestore.online.service.ServiceAnswer`."""

    def __init__(self, client: Client, name: str):
        self.client = client
        self.name = name

    def __repr__(self) -> str:
        return f"RemoteService({self.name!r}, url={str(self.client.http.base_url)!r})"

    def info(self) -> dict[str, Any]:
        return self.client.request("GET", f"/services/{self.name}")

    def get(self, entities: Any) -> ServiceAnswer:
        if hasattr(entities, "to_dict") and hasattr(entities, "columns"):  # a pandas DataFrame
            entities = {str(c): entities[c].tolist() for c in entities.columns}
        elif isinstance(entities, Mapping):
            entities = {k: list(v) if isinstance(v, tuple | np.ndarray) else v for k, v in entities.items()}
        elif isinstance(entities, Sequence) and not isinstance(entities, str | bytes):
            entities = [dict(e) if isinstance(e, Mapping) else e for e in entities]
        doc = self.client.request("POST", f"/services/{self.name}/lookup", json={"entities": entities})
        return service_answer(doc)


def service_answer(doc: dict[str, Any]) -> ServiceAnswer:
    """A service lookup's JSON answer as a :class:`ServiceAnswer` (vectors as float32 arrays, NaN rows)."""
    dims = doc.get("dims", {})
    features = {k: _matrix(v, dims[k]) if k in dims else v for k, v in doc["features"].items()}
    neighbors = None
    if "neighbors" in doc:
        vdims = doc.get("nearest_dims", {})
        neighbors = [Candidates(c["keys"], np.array(c["scores"], np.float32),
                                {k: _matrix(v, vdims[k]) if k in vdims else v for k, v in c["features"].items()})
                     for c in doc["neighbors"]]
    return ServiceAnswer(doc["service"], doc["entities"], features,
                         {g: np.array(m, bool) for g, m in doc["found"].items()},
                         [Part(**p) for p in doc["parts"]], doc["generation"], neighbors)


def _neighbors(doc: dict[str, Any]) -> Neighbors:
    return Neighbors(doc["keys"], np.array(doc["scores"], np.float32), np.full(len(doc["keys"]), -1, np.int64),
                     doc["exact"])
