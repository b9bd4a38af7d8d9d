"""An HTTP client for ``featurestore serve`` with the same interface as an in-process view.

Example::

    from featurestore.server.client import Client
    items = Client("http://127.0.0.1:8000", token="...").view("item_embeddings")
    items.get(["i1", "i2"]).found
    items.nearest(key="i1", k=10, exclude=["i1"])
    items.nearest(key="u7", query_group="user_embeddings")

Errors come back as the same featurestore exceptions the server raised (``KeyNotFound``,
``InvalidQuery``, ...); anything else as :class:`~featurestore.errors.ServeError`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

import featurestore.errors as errors
from featurestore.online.view import Lookup, Neighbors


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

        try:
            r = self.http.request(method, path, **kw)
        except httpx.HTTPError as exc:
            raise errors.ServeError(f"{method} {path}: {exc}") from exc
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


class RemoteView:
    """A served feature group, used like :class:`~featurestore.online.view.OnlineView`."""

    def __init__(self, client: Client, name: str):
        self.client = client
        self.name = name

    def info(self) -> dict[str, Any]:
        return self.client.request("GET", f"/feature-groups/{self.name}")

    def get(self, keys: Sequence[Any], *, columns: Sequence[str] | None = None) -> Lookup:
        body: dict[str, Any] = {"keys": list(keys)}
        if columns:
            body["columns"] = list(columns)
        doc = self.client.request("POST", f"/feature-groups/{self.name}/lookup", json=body)
        found = np.array(doc["found"], dtype=bool)
        dim = next((len(v) for v in doc["vectors"] if v is not None), 0)
        vectors = np.full((len(found), dim), np.nan, np.float32)
        for i, v in enumerate(doc["vectors"]):
            if v is not None:
                vectors[i] = v
        return Lookup(doc["keys"], vectors, found, doc["missing"], np.full(len(found), -1, np.int64),
                      doc.get("columns", {}))

    def __getitem__(self, key: Any) -> np.ndarray:
        hit = self.get([key])
        if not hit.found[0]:
            raise errors.KeyNotFound(f"{self.name} has no key {key!r}")
        return hit.vectors[0]

    def nearest(self, vector: Any = None, *, key: Any = None, query_group: str | None = None, k: int = 10,
                filter: Mapping[str, Any] | None = None, exclude: Sequence[Any] = (),
                exact: bool = False) -> Neighbors:
        body: dict[str, Any] = {"k": k, "exact": exact}
        if vector is not None:
            body["vector"] = np.asarray(vector, dtype=float).tolist()
        elif query_group is not None:
            body["query"] = {"feature_group": query_group, "key": key}
        else:
            body["key"] = key
        if filter:
            body["filter"] = dict(filter)
        if exclude:
            body["exclude"] = list(exclude)
        doc = self.client.request("POST", f"/feature-groups/{self.name}/nearest", json=body)
        return Neighbors(doc["keys"], np.array(doc["scores"], np.float32), np.full(len(doc["keys"]), -1),
                         doc["exact"])
