"""How the HTTP service answers failures: always JSON ``{"detail": message, "error": kind}``.

:func:`status_of` maps an exception to its status: a :class:`~featurestore.server.wire.BadRequest`
carries its own 4xx, :class:`~featurestore.errors.NotFound` is 404,
:class:`~featurestore.errors.InvalidData` 422, any other :class:`~featurestore.errors.FeatureStoreError`
503, and anything else 500 (logged; the answer gives no details). :func:`install` makes FastAPI answer
its own errors (validation, unknown paths, wrong methods) and the exceptions endpoints let through in
that shape.
"""

from __future__ import annotations

import logging

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from featurestore.errors import FeatureStoreError, InvalidData, NotFound
from featurestore.server.wire import BadRequest

log = logging.getLogger("featurestore.server")


def status_of(exc: Exception) -> tuple[int, str, str]:
    """(HTTP status, error kind, message) of an exception."""
    if isinstance(exc, BadRequest):
        return exc.status, exc.kind, exc.message
    if isinstance(exc, NotFound):
        return 404, type(exc).__name__, str(exc)
    if isinstance(exc, InvalidData):
        return 422, type(exc).__name__, str(exc)
    if isinstance(exc, FeatureStoreError):
        return 503, type(exc).__name__, str(exc)
    return 500, "InternalError", "internal error (see the server log)"


def error_body(kind: str, message: str) -> bytes:
    return orjson.dumps({"detail": message, "error": kind})


def failure(exc: Exception, what: str, name: str) -> tuple[int, bytes]:
    """The status and error body for an exception raised while answering ``what`` on ``name``."""
    status, kind, message = status_of(exc)
    if status == 500:
        log.exception("%s %s failed", what, name)
    return status, error_body(kind, message)


def error_response(status: int, kind: str, message: str, headers: dict[str, str] | None = None) -> Response:
    return Response(error_body(kind, message), status_code=status, media_type="application/json",
                    headers=headers)


async def on_known_error(_request: Request, exc: Exception) -> Response:
    """A :class:`BadRequest` or :class:`FeatureStoreError` an endpoint did not catch."""
    return error_response(*status_of(exc))


async def on_validation(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    return error_response(422, "InvalidRequest", str(exc.errors()))


async def on_http(_request: Request, exc: Exception) -> Response:
    """FastAPI's own errors: an unknown path (404), a wrong method (405, with the ``Allow`` header that
    lists the methods the path takes)."""
    assert isinstance(exc, StarletteHTTPException)
    return error_response(exc.status_code, "HTTPError", str(exc.detail), dict(exc.headers or {}))


def install(app: FastAPI) -> None:
    """Register the handlers answering errors in the ``{"detail", "error"}`` shape."""
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(BadRequest, on_known_error)
    app.add_exception_handler(FeatureStoreError, on_known_error)
