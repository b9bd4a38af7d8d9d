"""The HTTP service over online views (FastAPI + uvicorn): lookups, similarity search, hot reload.

Endpoints: ``GET /health``, ``GET /feature-groups``, ``GET /feature-groups/{name}``,
``POST /feature-groups/{name}/lookup``, ``POST /feature-groups/{name}/nearest``, ``GET /metrics``
(Prometheus), ``GET /openapi.json``, ``/docs`` and ``/redoc`` (local assets, :mod:`.docs`), and the web
console at ``/ui`` (:mod:`featurestore.console.web`). Every bad input gets a 4xx with a message
(``{"detail": ..., "error": ...}``); a bearer token (``--token`` or ``$FEATURESTORE_TOKEN``) guards
everything except ``/health`` and the OpenAPI pages, and is required off loopback.

This module wires the pieces together: the endpoints (:mod:`.routes`), the token check
(:mod:`.auth`), the error answers (:mod:`.errors`), the raw-ASGI lookup path in front of FastAPI
(:mod:`.fastpath`), the HTTP protocol answering lookups before
ASGI (:mod:`.protocol`) and the reload thread (:mod:`.reload`), started and stopped with the app.

Example::

    featurestore serve --root ./featurestore_data --port 8000
    curl -s localhost:8000/feature-groups/item_embeddings/lookup -d '{"keys": ["i1"]}'
"""

from __future__ import annotations

import contextlib
import functools
import gc
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI

from featurestore.console import web as console
from featurestore.server import docs, errors
from featurestore.server.auth import TOKEN_ENV, BearerToken, is_loopback, token_for
from featurestore.server.fastpath import LookupFastPath
from featurestore.server.metrics import Metrics
from featurestore.server.protocol import LookupProtocol
from featurestore.server.reload import Registry, ReloadPolicy
from featurestore.server.routes import Endpoints, router
from featurestore.server.services import ServiceEndpoints, service_router
from featurestore.server.wire import Limits
from featurestore.store import FeatureStore
from featurestore.version import __version__

__all__ = ["TOKEN_ENV", "LookupFastPath", "create_app", "is_loopback", "serve", "server_config"]

DESCRIPTION = ("Online feature serving: point lookups and similarity search over materialised views of "
               "versioned feature groups. Scores are higher-is-better for every metric (cosine similarity, "
               "inner product, minus L2 distance).")

Gauge = tuple[str, str, tuple[tuple[str, str], ...], float]


def create_app(store: FeatureStore, *, groups: list[tuple[str, int | None]] | None = None,
               token: str | None = None, limits: Limits | None = None,
               policy: ReloadPolicy | None = None, services: list[str] | None = None,
               warm_console: bool = False) -> LookupFastPath:
    """Build the app: opens (materialising if needed) a view of each served group's newest commit.
    The FastAPI app is ``.app`` of the returned ASGI app (which answers lookups itself).

    ``groups`` lists (name, version) pairs (default: every feature group at its newest version);
    ``services`` the feature services (default: every registered one that fits the served versions;
    their groups are served too); the reload thread starts and stops with the app's lifespan, and so
    does the console's warm-up (``warm_console``: its newest maps and comparisons, in the background).
    """
    limits = limits or Limits()
    metrics = Metrics()
    app = FastAPI(title="featurestore", version=__version__, lifespan=lifespan, description=DESCRIPTION,
                  docs_url=None, redoc_url=None)  # /docs and /redoc with local assets (.docs)
    registry = Registry(store, groups, policy, on_event=functools.partial(reloaded, metrics, app.state),
                        services=services)
    metrics.gauges.append(functools.partial(served_gauges, registry))
    app.state.registry = registry
    app.state.metrics = metrics
    app.state.limits = limits
    errors.install(app)
    bearer = BearerToken(token)
    endpoints = Endpoints(registry, metrics, limits, bearer)
    app.include_router(router(endpoints))
    service_endpoints = ServiceEndpoints(registry, metrics, limits, bearer)
    app.include_router(service_router(service_endpoints))
    docs.install(app)
    app.state.console = console.mount(app, store, token=token, api_docs=True,
                                      served=lambda name: registry.get(name).view if name in registry.names() else None)
    app.state.warm_console = warm_console
    return LookupFastPath(app, endpoints.answer_lookup, limits, bearer, service_endpoints.answer_lookup)


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """While the app runs: the registry's reload thread, and the collector kept off what lives as long."""
    registry: Registry = app.state.registry
    registry.start()
    if app.state.warm_console:  # the console's newest maps and comparisons, in a background thread
        app.state.console.start_warming()
    # what exists now (the app, the libraries, the views) lives as long as the server: keep it out
    # of the collector's full passes, which would otherwise walk it and stall a request now and then
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        registry.stop()


def reloaded(metrics: Metrics, state: Any, name: str, event: str) -> None:
    """What the reload thread reports: counted in the metrics; after a swap, with the console's warm-up
    on, the group's map and comparison warmed again for its new commit, in the console's background
    thread (this returns at once: neither the reload nor a request waits for it)."""
    metrics.reload(name, event)
    console_state = getattr(state, "console", None)
    if event == "success" and console_state is not None and getattr(state, "warm_console", False):
        console_state.rewarm(name)


def served_gauges(registry: Registry) -> list[Gauge]:
    """The commit and row count each feature group serves, as Prometheus gauges."""
    out: list[Gauge] = []
    for name in registry.names():
        s = registry.get(name)
        labels: tuple[tuple[str, str], ...] = (("feature_group", name), ("version", str(s.view.version)))
        out.append(("featurestore_served_commit", "The commit each feature group serves.", labels,
                    float(s.view.commit)))
        out.append(("featurestore_served_rows", "Rows (keys) in the served view.", labels, float(s.view.rows)))
    return out


def serve(store: FeatureStore, *, host: str = "127.0.0.1", port: int = 8000, token: str | None = None,
          groups: list[tuple[str, int | None]] | None = None, limits: Limits | None = None,
          policy: ReloadPolicy | None = None, log_level: str = "info",
          graceful_seconds: float = 30.0) -> None:
    """Run the service with uvicorn until SIGINT/SIGTERM; in-flight requests finish first.

    The token defaults to ``$FEATURESTORE_TOKEN``; binding to a non-loopback address without one
    raises :class:`ServeError`.
    """
    import uvicorn

    token = token_for(host, token)
    app = create_app(store, groups=groups, token=token, limits=limits, policy=policy, warm_console=True)
    uvicorn.Server(server_config(app, host=host, port=port, limits=limits, log_level=log_level,
                                 graceful_seconds=graceful_seconds)).run()


def server_config(app: LookupFastPath, *, host: str = "127.0.0.1", port: int = 8000, limits: Limits | None = None,
                  log_level: str = "info", graceful_seconds: float = 30.0) -> Any:
    """The ``uvicorn.Config`` :func:`serve` runs ``app`` with: the HTTP protocol that answers lookups itself
    (:mod:`.protocol`), no access log nor server header, the connection limit and keep-alive of ``limits``."""
    import uvicorn

    limits = limits or Limits()
    return uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=False, http=LookupProtocol,
                          timeout_graceful_shutdown=int(graceful_seconds), lifespan="on", server_header=False,
                          limit_concurrency=limits.max_connections, timeout_keep_alive=int(limits.keep_alive_s))
