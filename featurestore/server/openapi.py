"""What the OpenAPI document declares about answers: the ``{"detail", "error"}`` body of every failure,
and the statuses each route can answer, in one place so every route (and pages mounted later) declares
them alike.

Example::

    r.add_api_route("/things/{name}", endpoint, methods=["GET"], responses=declare(AUTH, NOT_FOUND))
"""

from __future__ import annotations

from typing import Any

#: the body of every failure (``featurestore.server.errors.error_body``)
ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "title": "Error",
    "required": ["detail", "error"],
    "properties": {
        "detail": {"type": "string", "description": "what is wrong, naming the offending thing"},
        "error": {"type": "string", "description": "the kind of error (e.g. KeyNotFound, InvalidQuery)"},
    },
}

_WHY = {
    400: "Malformed request: a body that is not valid JSON or Arrow, a bad Content-Length",
    401: "Missing or wrong bearer token",
    404: "No such feature group, key or route",
    408: "The request body did not arrive in time",
    413: "The body (or a declared Content-Length) is over the size limit",
    415: "A body in a media type other than JSON (or Arrow IPC for lookups)",
    422: "A well-formed request the feature group cannot answer (wrong key type, vector length, k, filter)",
    503: "The store failed while answering (e.g. a damaged view); retry or see the server log",
}

AUTH = (401,)                               # routes behind the bearer token
NOT_FOUND = (404,)                          # routes naming a feature group
BODY = (400, 408, 413, 415, 422)            # routes reading a request body
STORE = (503,)                              # routes reading the store


def error_response(status: int, description: str | None = None) -> dict[str, Any]:
    """One failure status's declaration: its description and the ``{"detail", "error"}`` JSON body."""
    return {"description": description or _WHY.get(status, "Error"),
            "content": {"application/json": {"schema": ERROR_SCHEMA}}}


def declare(*groups: tuple[int, ...], ok: dict[str, Any] | None = None) -> dict[int | str, dict[str, Any]]:
    """The ``responses=`` of a route: each failure status of ``groups`` with the error body, 400 always
    (a malformed request line or header), and ``ok`` (extra content types of the 200 answer) if given."""
    out: dict[int | str, dict[str, Any]] = {}
    if ok is not None:
        out[200] = ok
    for status in sorted({400, *(s for g in groups for s in g)}):
        out[status] = error_response(status)
    return out


#: the 200 answer of ``/metrics``: Prometheus text exposition, not JSON
PROMETHEUS_OK: dict[str, Any] = {
    "description": "Prometheus metrics in the text exposition format (version 0.0.4)",
    "content": {"text/plain": {"schema": {"type": "string"}}},
}
