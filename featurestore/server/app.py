"""The HTTP service over online views (FastAPI + uvicorn): lookups, similarity search, hot reload.

Endpoints: ``GET /health``, ``GET /feature-groups``, ``GET /feature-groups/{name}``,
``POST /feature-groups/{name}/lookup``, ``POST /feature-groups/{name}/nearest``, ``GET /metrics``
(Prometheus), ``GET /openapi.json`` and ``/docs``. Every bad input gets a 4xx with a message
(``{"detail": ..., "error": ...}``); a bearer token (``--token`` or ``$FEATURESTORE_TOKEN``) guards
everything except ``/health`` and the OpenAPI pages, and is required off loopback.

Example::

    featurestore serve --root ./featurestore_data --port 8000
    curl -s localhost:8000/feature-groups/item_embeddings/lookup -d '{"keys": ["i1"]}'
"""

from __future__ import annotations

import contextlib
import gc
import hmac
import ipaddress
import logging
import os
import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any
from urllib.parse import parse_qs

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from featurestore.errors import FeatureStoreError, InvalidData, NotFound, ServeError
from featurestore.server import wire
from featurestore.server.metrics import CONTENT_TYPE, Metrics
from featurestore.server.reload import Registry, ReloadPolicy
from featurestore.server.wire import BadRequest, Limits
from featurestore.store import FeatureStore
from featurestore.version import __version__

TOKEN_ENV = "FEATURESTORE_TOKEN"
log = logging.getLogger("featurestore.server")
_JSON_HEADERS = {"content-type": "application/json"}


def _status_of(exc: Exception) -> tuple[int, str, str]:
    if isinstance(exc, BadRequest):
        return exc.status, exc.kind, exc.message
    if isinstance(exc, NotFound):
        return 404, type(exc).__name__, str(exc)
    if isinstance(exc, InvalidData):
        return 422, type(exc).__name__, str(exc)
    if isinstance(exc, FeatureStoreError):
        return 503, type(exc).__name__, str(exc)
    return 500, "InternalError", "internal error (see the server log)"


def _failure(exc: Exception, what: str, name: str) -> tuple[int, bytes]:
    """The status and error body for an exception raised while answering ``what`` on ``name``."""
    status, kind, message = _status_of(exc)
    if status == 500:
        log.exception("%s %s failed", what, name)
    return status, _error_body(kind, message)


def _error_body(kind: str, message: str) -> bytes:
    import orjson

    return orjson.dumps({"detail": message, "error": kind})


def _error(status: int, kind: str, message: str, headers: dict[str, str] | None = None) -> Response:
    return Response(_error_body(kind, message), status_code=status, media_type="application/json",
                    headers=headers)


class LookupFastPath:
    """ASGI middleware answering ``POST /feature-groups/{name}/lookup`` before FastAPI's routing and
    request objects, which cost about a third of a one-key lookup; every other request goes to the
    app. The answer comes from the same function as the FastAPI route (documented in OpenAPI)."""

    _PREFIX, _SUFFIX = "/feature-groups/", "/lookup"

    def __init__(self, app: FastAPI, answer: Callable[..., tuple[int, bytes, str]], max_body: int):
        self.app, self.answer, self.max_body = app, answer, max_body
        self.state = app.state  # the registry, metrics and limits, as on the FastAPI app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        path = scope.get("path", "")
        if (scope["type"] != "http" or scope["method"] != "POST" or not path.startswith(self._PREFIX)
                or not path.endswith(self._SUFFIX)
                or "/" in (name := path[len(self._PREFIX):-len(self._SUFFIX)]) or not name):
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        query = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("columns", [None])[-1]
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size <= self.max_body:  # beyond the limit only the count is kept (the answer is a 413)
                chunks.append(chunk)
            more = message.get("more_body", False)
        status, payload, media = self.answer(name, headers, query, b"".join(chunks), size)
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", media.encode()), (b"content-length", str(len(payload)).encode())]})
        await send({"type": "http.response.body", "body": payload})


def create_app(store: FeatureStore, *, groups: list[tuple[str, int | None]] | None = None,
               token: str | None = None, limits: Limits | None = None,
               policy: ReloadPolicy | None = None) -> LookupFastPath:
    """Build the app: opens (materialising if needed) a view of each served group's newest commit.
    The FastAPI app is ``.app`` of the returned ASGI app (which answers lookups itself).

    ``groups`` lists (name, version) pairs (default: every feature group at its newest version);
    the reload thread starts and stops with the app's lifespan.
    """
    limits = limits or Limits()
    metrics = Metrics()
    registry = Registry(store, groups, policy, on_event=metrics.reload)
    expected = f"Bearer {token}".encode() if token else None

    def gauges() -> list[tuple[str, str, tuple[tuple[str, str], ...], float]]:
        out: list[tuple[str, str, tuple[tuple[str, str], ...], float]] = []
        for name in registry.names():
            s = registry.get(name)
            labels: tuple[tuple[str, str], ...] = (("feature_group", name), ("version", str(s.view.version)))
            out.append(("featurestore_served_commit", "The commit each feature group serves.", labels,
                        float(s.view.commit)))
            out.append(("featurestore_served_rows", "Rows (keys) in the served view.", labels, float(s.view.rows)))
        return out

    metrics.gauges.append(gauges)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        registry.start()
        # what exists now (the app, the libraries, the views) lives as long as the server: keep it out
        # of the collector's full passes, which would otherwise walk it and stall a request now and then
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            registry.stop()

    app = FastAPI(title="featurestore", version=__version__, lifespan=lifespan,
                  description="Online feature serving: point lookups and similarity search over "
                              "materialised views of versioned feature groups. Scores are higher-is-better "
                              "for every metric (cosine similarity, inner product, minus L2 distance).")
    app.state.registry = registry
    app.state.metrics = metrics
    app.state.limits = limits

    def label(name: str) -> str:  # unknown names must not grow the metrics without bound
        return name if name in registry.names() else "_unknown"

    def authorise(headers: Mapping[str, str]) -> None:
        if expected is None:
            return
        got = headers.get("authorization", "").encode()
        if not hmac.compare_digest(got, expected):
            raise BadRequest(401, "missing or wrong bearer token (Authorization: Bearer TOKEN)", "Unauthorized")

    def check_size(headers: Mapping[str, str], size: int | None = None) -> None:
        """A malformed Content-Length, or a declared or received (``size``) body over the limit, is a 4xx."""
        length = headers.get("content-length")
        if length is not None and not length.isdigit():
            raise BadRequest(400, f"bad Content-Length {length!r}")
        if max(int(length or 0), size or 0) > limits.max_body_bytes:
            raise BadRequest(413, f"the body is larger than {limits.max_body_bytes} bytes")

    async def body_of(request: Request) -> bytes:
        check_size(request.headers)  # before reading a body that is declared too large
        body = await request.body()
        check_size(request.headers, len(body))
        return body

    def answer_lookup(name: str, headers: Mapping[str, str], columns: str | None, body: bytes,
                      size: int) -> tuple[int, bytes, str]:
        """(status, body, media type) of a lookup; shared by the route and :class:`_LookupFastPath`."""
        t = time.perf_counter()
        status, n = 200, 0
        try:
            authorise(headers)
            view = registry.get(name).view  # this request uses this view to the end
            check_size(headers, size)  # ``body`` holds nothing when ``size`` is over the limit
            keys, cols = wire.parse_lookup(body, headers.get("content-type", ""), limits, columns)
            n = len(keys)
            hit = view.get(keys, columns=cols)
            if wire.ARROW in headers.get("accept", ""):
                return status, wire.lookup_arrow(view, hit), wire.ARROW
            return status, wire.lookup_json(view, hit), "application/json"
        except Exception as exc:
            status, payload = _failure(exc, "lookup", name)
            return status, payload, "application/json"
        finally:
            metrics.observe("lookup", label(name), status, time.perf_counter() - t, n)

    @app.exception_handler(RequestValidationError)
    async def on_validation(_r: Request, exc: RequestValidationError) -> Response:
        return _error(422, "InvalidRequest", str(exc.errors()))

    @app.exception_handler(StarletteHTTPException)
    async def on_http(_r: Request, exc: StarletteHTTPException) -> Response:
        return _error(exc.status_code, "HTTPError", str(exc.detail))

    @app.get("/health", summary="Liveness and the commit each feature group serves (no auth)")
    async def health() -> JSONResponse:
        served = {n: registry.get(n).view.commit for n in registry.names()}
        return JSONResponse({"status": "ok", "feature_groups": served})

    @app.get("/feature-groups", summary="Served feature groups with their version and commit")
    async def list_groups(request: Request) -> Response:
        try:
            authorise(request.headers)
        except BadRequest as exc:
            return _error(exc.status, exc.kind, exc.message)
        return JSONResponse([registry.get(n).status() for n in registry.names()])

    @app.get("/feature-groups/{name}", summary="What a feature group serves: version, commit, rows, index, "
                                              "recall, reloads and the last reload error")
    async def group(name: str, request: Request) -> Response:
        try:
            authorise(request.headers)
            return JSONResponse(registry.get(name).status())
        except (BadRequest, FeatureStoreError) as exc:
            return _error(*_status_of(exc))

    @app.post("/feature-groups/{name}/lookup", openapi_extra={"requestBody": wire.LOOKUP_BODY},
              summary="Vectors (and optional scalar columns) of entity keys; missing keys are listed, "
                      "never an error", responses={200: {"content": {wire.ARROW: {}}}})
    async def lookup(name: str, request: Request) -> Response:
        body = await request.body()
        status, payload, media = answer_lookup(name, request.headers, request.query_params.get("columns"),
                                               body, len(body))
        return Response(payload, status_code=status, media_type=media)

    @app.post("/feature-groups/{name}/nearest", openapi_extra={"requestBody": wire.NEAREST_BODY},
              summary="The k most similar rows (higher score is better), filtered before ranking")
    async def nearest(name: str, request: Request) -> Response:
        t = time.perf_counter()
        status, n = 200, 0
        try:
            authorise(request.headers)
            view = registry.get(name).view
            q = wire.parse_nearest(await body_of(request), request.headers.get("content-type", ""), limits)
            source = registry.get(q.query_group).view if q.query_group else None

            def run() -> list[Any]:
                if q.vectors is not None:
                    return view.nearest_many(q.vectors, k=q.k, filter=q.filter,
                                             exclude=q.exclude, exact=q.exact)
                return [view.nearest(q.vector, key=q.key, query_view=source, k=q.k, filter=q.filter,
                                     exclude=q.exclude, exact=q.exact)]

            results = await run_in_threadpool(run)
            n = sum(len(r) for r in results)
            return Response(wire.nearest_json(view, results, q.vectors is not None), headers=_JSON_HEADERS)
        except Exception as exc:
            status, payload = _failure(exc, "nearest", name)
            return Response(payload, status_code=status, media_type="application/json")
        finally:
            metrics.observe("nearest", label(name), status, time.perf_counter() - t, n)

    @app.get("/metrics", summary="Prometheus metrics (text exposition format)")
    async def prometheus(request: Request) -> Response:
        try:
            authorise(request.headers)
        except BadRequest as exc:
            return _error(exc.status, exc.kind, exc.message)
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    return LookupFastPath(app, answer_lookup, limits.max_body_bytes)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def serve(store: FeatureStore, *, host: str = "127.0.0.1", port: int = 8000, token: str | None = None,
          groups: list[tuple[str, int | None]] | None = None, limits: Limits | None = None,
          policy: ReloadPolicy | None = None, log_level: str = "info",
          graceful_seconds: float = 30.0) -> None:
    """Run the service with uvicorn until SIGINT/SIGTERM; in-flight requests finish first.

    The token defaults to ``$FEATURESTORE_TOKEN``; binding to a non-loopback address without one
    raises :class:`ServeError`.
    """
    import uvicorn

    token = token or os.environ.get(TOKEN_ENV) or None
    if token is None and not is_loopback(host):
        raise ServeError(f"refusing to serve on {host} without a bearer token: pass --token or set "
                         f"${TOKEN_ENV} (only loopback addresses may run without one)")
    app = create_app(store, groups=groups, token=token, limits=limits, policy=policy)
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=False,
                            timeout_graceful_shutdown=int(graceful_seconds), lifespan="on",
                            server_header=False)
    uvicorn.Server(config).run()
