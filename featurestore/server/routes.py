"""The HTTP endpoints: one method of :class:`Endpoints` per route, over what they share (the served
views, the metrics, the request limits and the token check); :func:`router` maps them to URLs.

Endpoints catch what they expect and answer it in the ``{"detail", "error"}`` shape of
:mod:`.errors`; lookups and searches record their status, latency and result count in the metrics.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from starlette.concurrency import run_in_threadpool

from featurestore.online.view import Neighbors, OnlineView
from featurestore.server import wire
from featurestore.server.auth import BearerToken
from featurestore.server.errors import failure
from featurestore.server.metrics import CONTENT_TYPE, Metrics
from featurestore.server.openapi import AUTH, BODY, NOT_FOUND, PROMETHEUS_OK, STORE, declare
from featurestore.server.reload import Registry
from featurestore.server.wire import BadRequest, Limits, NearestQuery

_JSON_HEADERS = {"content-type": "application/json"}


class Endpoints:
    """The service's endpoints and the request checks they share."""

    def __init__(self, registry: Registry, metrics: Metrics, limits: Limits, token: BearerToken):
        self.registry, self.metrics, self.limits = registry, metrics, limits
        self.authorise = token.check

    # ---- shared checks ----------------------------------------------------------------------------
    def label(self, name: str) -> str:
        """The metrics label of a feature group: unknown names must not grow the metrics without bound."""
        return name if name in self.registry.names() else "_unknown"

    def check_size(self, headers: Mapping[str, str], size: int | None = None) -> None:
        """A malformed Content-Length, or a declared or received (``size``) body over the limit, is a 4xx."""
        length = headers.get("content-length")
        if length is not None and not length.isdigit():
            raise BadRequest(400, f"bad Content-Length {length!r}")
        if max(int(length or 0), size or 0) > self.limits.max_body_bytes:
            raise BadRequest(413, f"the body is larger than {self.limits.max_body_bytes} bytes")

    async def body_of(self, request: Request) -> bytes:
        self.check_size(request.headers)  # before reading a body that is declared too large
        body = await request.body()
        self.check_size(request.headers, len(body))
        return body

    # ---- lookups (also answered by the fast path) ---------------------------------------------------
    def answer_lookup(self, name: str, headers: Mapping[str, str], columns: str | None, body: bytes,
                      size: int, features: str | None = None) -> tuple[int, bytes, str]:
        """(status, body, media type) of a lookup; shared by the route and :class:`.LookupFastPath`."""
        t = time.perf_counter()
        status, n = 200, 0
        try:
            self.authorise(headers)
            view = self.registry.get(name).view  # this request uses this view to the end
            self.check_size(headers, size)  # ``body`` holds nothing when ``size`` is over the limit
            keys, cols, feats = wire.parse_lookup(body, headers.get("content-type", ""), self.limits, columns,
                                                  view.key_names, features)
            n = len(keys)
            hit = view.get(keys, columns=cols, features=feats)
            if wire.ARROW in headers.get("accept", ""):
                return status, wire.lookup_arrow(view, hit), wire.ARROW
            return status, wire.lookup_json(view, hit), "application/json"
        except Exception as exc:
            status, payload = failure(exc, "lookup", name)
            return status, payload, "application/json"
        finally:
            self.metrics.observe("lookup", self.label(name), status, time.perf_counter() - t, n)

    async def lookup(self, name: str, request: Request) -> Response:
        body = await request.body()
        status, payload, media = self.answer_lookup(name, request.headers, request.query_params.get("columns"),
                                                    body, len(body), request.query_params.get("features"))
        return Response(payload, status_code=status, media_type=media)

    # ---- similarity search ----------------------------------------------------------------------------
    async def nearest(self, name: str, request: Request) -> Response:
        t = time.perf_counter()
        status, n = 200, 0
        try:
            self.authorise(request.headers)
            view = self.registry.get(name).view
            q = wire.parse_nearest(await self.body_of(request), request.headers.get("content-type", ""),
                                   self.limits)
            source = self.registry.get(q.query_group).view if q.query_group else None
            results = await run_in_threadpool(search, view, q, source)
            n = sum(len(r) for r in results)
            return Response(wire.nearest_json(view, results, q.vectors is not None), headers=_JSON_HEADERS)
        except Exception as exc:
            status, payload = failure(exc, "nearest", name)
            return Response(payload, status_code=status, media_type="application/json")
        finally:
            self.metrics.observe("nearest", self.label(name), status, time.perf_counter() - t, n)

    # ---- status (a BadRequest or FeatureStoreError is answered by the app's error handlers) ------------
    async def health(self) -> JSONResponse:
        served = {n: self.registry.get(n).view.commit for n in self.registry.names()}
        return JSONResponse({"status": "ok", "feature_groups": served})

    async def list_groups(self, request: Request) -> Response:
        self.authorise(request.headers)
        return JSONResponse([self.registry.get(n).status() for n in self.registry.names()])

    async def group(self, name: str, request: Request) -> Response:
        self.authorise(request.headers)
        return JSONResponse(self.registry.get(name).status())

    async def prometheus(self, request: Request) -> Response:
        self.authorise(request.headers)
        return Response(self.metrics.render(), media_type=CONTENT_TYPE)


def search(view: OnlineView, q: NearestQuery, source: OnlineView | None) -> list[Neighbors]:
    """The neighbours of a nearest query: one list per query vector (one for a key or a vector)."""
    if q.vectors is not None:
        return view.nearest_many(q.vectors, k=q.k, filter=q.filter, exclude=q.exclude, exact=q.exact,
                                 feature=q.feature)
    return [view.nearest(q.vector, key=q.key, query_view=source, k=q.k, filter=q.filter,
                         exclude=q.exclude, exact=q.exact, feature=q.feature)]


def router(endpoints: Endpoints) -> APIRouter:
    """The service's URLs, in the order the OpenAPI document lists them; each declares the failures it
    can answer (:func:`.openapi.declare`)."""
    r = APIRouter()
    r.add_api_route("/health", endpoints.health, methods=["GET"], responses=declare(),
                    summary="Liveness and the commit each feature group serves (no auth)")
    r.add_api_route("/feature-groups", endpoints.list_groups, methods=["GET"], responses=declare(AUTH),
                    summary="Served feature groups with their version and commit")
    r.add_api_route("/feature-groups/{name}", endpoints.group, methods=["GET"], responses=declare(AUTH, NOT_FOUND),
                    summary="What a feature group serves: version, commit, rows, index, recall, reloads and "
                            "the last reload error")
    r.add_api_route("/feature-groups/{name}/lookup", endpoints.lookup, methods=["POST"],
                    openapi_extra={"requestBody": wire.lookup_body(endpoints.limits)},
                    summary="Vectors (and optional scalar columns) of entity keys; missing keys are listed, "
                            "never an error",
                    responses=declare(AUTH, NOT_FOUND, BODY, STORE, ok={"content": {wire.ARROW: {}}}))
    r.add_api_route("/feature-groups/{name}/nearest", endpoints.nearest, methods=["POST"],
                    openapi_extra={"requestBody": wire.nearest_body(endpoints.limits)},
                    responses=declare(AUTH, NOT_FOUND, BODY, STORE),
                    summary="The k most similar rows (higher score is better), filtered before ranking")
    r.add_api_route("/metrics", endpoints.prometheus, methods=["GET"], response_class=PlainTextResponse,
                    responses=declare(AUTH, ok=PROMETHEUS_OK), summary="Prometheus metrics (text exposition format)")
    return r
