"""The service's front door, in raw ASGI: request bodies are guarded here, and the hottest request
(a lookup) is answered here.

Every request with a body (POST) is checked *before a byte of it is read*: the bearer token, then the
declared ``Content-Length`` against the limit (401 and 413 at once, however large the body claims to
be). The body is then read within ``Limits.body_timeout_s`` (408 when a client stalls), and stops at
the size limit (413). A lookup is answered from here, skipping FastAPI's routing and request objects
(about a third of a one-key lookup), and so is a feature-service lookup; other requests get the body
already read. Under ``featurestore serve`` the same lookups are answered one step earlier still, in
the HTTP protocol itself (:mod:`.protocol`), which shares :meth:`LookupFastPath.precheck` and
:meth:`LookupFastPath.route` with this class.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs

from fastapi import FastAPI

from featurestore.server.auth import BearerToken
from featurestore.server.errors import error_body
from featurestore.server.wire import BadRequest, Limits

JSON = "application/json"
Answer = Callable[[str, dict[str, str], bytes, bytes], tuple[int, bytes, str]]


class LookupFastPath:
    """ASGI middleware in front of the FastAPI app (see the module docstring). The lookup's answer comes
    from the same function as the FastAPI route (documented in OpenAPI)."""

    _PREFIX, _SERVICES, _SUFFIX = "/feature-groups/", "/services/", "/lookup"

    def __init__(self, app: FastAPI, answer: Callable[..., tuple[int, bytes, str]], limits: Limits,
                 token: BearerToken | None = None, answer_service: Callable[..., tuple[int, bytes, str]] | None = None):
        self.app, self.answer, self.limits = app, answer, limits
        self.answer_service = answer_service  # feature-service lookups (``/services/{name}/lookup``)
        self.max_body = limits.max_body_bytes
        self.token = token or BearerToken(None)
        self.state = app.state  # the registry, metrics and limits, as on the FastAPI app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        try:
            body = await self._read(receive, self.precheck(headers))
        except BadRequest as exc:
            await _respond(send, exc.status, error_body(exc.kind, exc.message), JSON)
            return
        except _Disconnected:
            return
        route = self.route(scope.get("path", ""))
        if route is None:
            await self.app(scope, _replay(body, receive), send)
            return
        await _respond(send, *route[0](route[1], headers, scope.get("query_string", b""), body))

    def precheck(self, headers: dict[str, str]) -> int | None:
        """What a POST must pass before its body is read: the bearer token, then the declared
        ``Content-Length`` against the limit (a :class:`BadRequest` 401 or 413); the declared length."""
        self.token.check(headers)
        return _declared_length(headers, self.max_body)

    def route(self, path: str) -> tuple[Answer, str] | None:
        """(answer, name) of a POST to ``path`` answered here (a group's or a service's lookup), else None.
        The answer takes (name, headers, raw query string, body)."""
        if not path.endswith(self._SUFFIX):
            return None
        if path.startswith(self._PREFIX):
            name = path[len(self._PREFIX):-len(self._SUFFIX)]
            return (self._group_lookup, name) if name and "/" not in name else None
        if self.answer_service is not None and path.startswith(self._SERVICES):
            name = path[len(self._SERVICES):-len(self._SUFFIX)]
            return (self._service_lookup, name) if name and "/" not in name else None
        return None

    def _group_lookup(self, name: str, headers: dict[str, str], raw_query: bytes, body: bytes
                      ) -> tuple[int, bytes, str]:
        query = parse_qs(raw_query.decode("latin-1")) if raw_query else {}
        return self.answer(name, headers, query.get("columns", [None])[-1], body, len(body),
                           query.get("features", [None])[-1])

    def _service_lookup(self, name: str, headers: dict[str, str], raw_query: bytes, body: bytes
                        ) -> tuple[int, bytes, str]:
        assert self.answer_service is not None
        return self.answer_service(name, headers, body, len(body))

    async def _read(self, receive: Any, declared: int | None) -> bytes:
        """The whole body, within the time limit (one timer for the whole read) and the size limit.

        The timer is a bare ``call_later`` that cancels this task (``asyncio.timeout`` does the same with
        about 3 us more bookkeeping per request, a tenth of a one-key lookup)."""
        chunks, size, more = [], 0, True
        task = asyncio.current_task()
        assert task is not None
        expired: list[bool] = []
        timer = asyncio.get_running_loop().call_later(self.limits.body_timeout_s, _expire, task, expired)
        try:
            while more:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise _Disconnected
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > self.max_body:
                    raise too_large(self.max_body)
                chunks.append(chunk)
                more = message.get("more_body", False)
        except asyncio.CancelledError:
            if not expired or task.uncancel():  # cancelled by something else (shutdown): let it go on
                raise
            raise timed_out(self.limits.body_timeout_s) from None
        finally:
            timer.cancel()
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def too_large(limit: int) -> BadRequest:
    return BadRequest(413, f"the body is larger than {limit} bytes")


def timed_out(seconds: float) -> BadRequest:
    return BadRequest(408, f"the body did not arrive within {seconds:g} s", "RequestTimeout")


def _expire(task: asyncio.Task[Any], expired: list[bool]) -> None:
    expired.append(True)
    task.cancel()


class _Disconnected(Exception):
    """The client went away while sending its body."""


def _declared_length(headers: dict[str, str], limit: int) -> int | None:
    length = headers.get("content-length")
    if length is None:
        return None
    if not length.isdigit():
        raise BadRequest(400, f"bad Content-Length {length!r}")
    if int(length) > limit:
        raise BadRequest(413, f"the body is larger than {limit} bytes (Content-Length {length})")
    return int(length)


def _replay(body: bytes, receive: Any) -> Any:
    """A receive callable giving the body already read, then the client's own events (disconnect)."""
    sent = False

    async def replay() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def _respond(send: Any, status: int, payload: bytes, media: str) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", media.encode()), (b"content-length", str(len(payload)).encode())]})
    await send({"type": "http.response.body", "body": payload})
