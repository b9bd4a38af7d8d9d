"""The HTTP/1.1 protocol ``featurestore serve`` runs: uvicorn's httptools protocol, with lookups answered in
the protocol itself.

A lookup (``POST /feature-groups/{name}/lookup`` or ``POST /services/{name}/lookup``) whose body arrives
is answered as the parser finishes it, in the same event-loop callback: no ASGI task, receive or
send messages, nor a body timer when the body came with the headers. That is most of what a one-key
lookup cost over HTTP beyond the lookup itself (docs/performance.md). The checks and the answer are the
ASGI front door's (:class:`.LookupFastPath`): the bearer token and the declared ``Content-Length`` before
a byte of the body is kept (401 and 413 at once), the size limit as the body arrives (413), and the body
timeout (408, then the connection is closed) when a body stalls; a body that stalls after its request was
refused is not waited for either (the connection is closed).

Everything else goes to the ASGI app exactly as under plain uvicorn: other paths and methods, HTTP/1.0,
``Expect: 100-continue``, upgrades, percent-encoded paths, a request pipelined behind one still being
answered, a connection whose writes are paused (a client not reading its answers), and the 503 past the
connection limit.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import httptools
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from featurestore.server.errors import error_body
from featurestore.server.fastpath import JSON, Answer, LookupFastPath, timed_out, too_large
from featurestore.server.wire import BadRequest

log = logging.getLogger("featurestore.server")


class _Lookup:
    """A lookup being answered by the protocol: its route, headers and the body so far."""

    __slots__ = ("answer", "chunks", "done", "headers", "keep_alive", "name", "query", "size")

    def __init__(self, answer: Answer, name: str, headers: dict[str, str], query: bytes, keep_alive: bool):
        self.answer, self.name, self.headers, self.query = answer, name, headers, query
        self.chunks: list[bytes] = []
        self.size = 0
        self.keep_alive = keep_alive
        self.done = False  # answered (early, with an error): the rest of its body is read and dropped


class LookupProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol answering lookups itself (see the module docstring). Needs the app to
    be a :class:`.LookupFastPath` (what :func:`featurestore.server.app.create_app` returns)."""

    def __init__(self, config: Any, server_state: Any, app_state: dict[str, Any],
                 _loop: asyncio.AbstractEventLoop | None = None) -> None:
        super().__init__(config, server_state, app_state, _loop)
        if not isinstance(config.app, LookupFastPath):
            raise TypeError(f"LookupProtocol serves a LookupFastPath app, not {type(config.app).__name__}")
        self.front: LookupFastPath = config.app
        self.lookup: _Lookup | None = None
        self.body_timer: asyncio.TimerHandle | None = None

    # ---- the parser's callbacks ---------------------------------------------------------------------
    def on_headers_complete(self) -> None:
        lookup = self._taken()
        if lookup is None:
            super().on_headers_complete()
            return
        self.lookup = lookup
        try:
            self.front.precheck(lookup.headers)
        except BadRequest as exc:
            self._refuse(lookup, exc)

    def on_body(self, body: bytes) -> None:
        lookup = self.lookup
        if lookup is None:
            super().on_body(body)
            return
        if lookup.done:
            return
        lookup.size += len(body)
        if lookup.size > self.front.max_body:
            self._refuse(lookup, too_large(self.front.max_body))
            return
        lookup.chunks.append(body)

    def on_message_complete(self) -> None:
        lookup = self.lookup
        if lookup is None:
            super().on_message_complete()
            return
        self.lookup = None
        self._stop_timer()
        if lookup.done:
            return
        body = lookup.chunks[0] if len(lookup.chunks) == 1 else b"".join(lookup.chunks)
        try:
            status, payload, media = lookup.answer(lookup.name, lookup.headers, lookup.query, body)
        except Exception:  # the answers catch their own errors; this is a bug, answered like uvicorn's 500
            log.exception("lookup %s failed", lookup.name)
            status, payload, media = 500, error_body("InternalError", "internal error (see the server log)"), JSON
        self._answer(lookup, status, payload, media)

    # ---- the transport's callbacks ------------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.lookup is not None and self.body_timer is None:  # a body still to come (or to drop)
            self.body_timer = self.loop.call_later(self.front.limits.body_timeout_s, self._body_expired)

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_timer()
        self.lookup = None
        super().connection_lost(exc)

    def shutdown(self) -> None:
        lookup = self.lookup
        if lookup is not None and not lookup.done:  # finish this lookup, then close
            lookup.keep_alive = False
            return
        super().shutdown()

    # ---- helpers ------------------------------------------------------------------------------------
    def _taken(self) -> _Lookup | None:
        """The lookup this request is, when the protocol answers it; None leaves it to the ASGI app."""
        parser = self.parser
        if (parser.get_method() != b"POST" or self.expect_100_continue or parser.get_http_version() != "1.1"
                or parser.should_upgrade() or self.flow.write_paused
                or (self.cycle is not None and not self.cycle.response_complete)
                or (self.limit_concurrency is not None and len(self.connections) >= self.limit_concurrency)):
            return None
        url = httptools.parse_url(self.url)
        path = url.path
        if b"%" in path or self.root_path:
            return None
        route = self.front.route(path.decode("ascii"))
        if route is None:
            return None
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in self.headers}
        return _Lookup(route[0], route[1], headers, url.query or b"", parser.should_keep_alive())

    def _answer(self, lookup: _Lookup, status: int, payload: bytes, media: str) -> None:
        """Write the whole response at once; close after it unless the connection stays open."""
        lookup.done = True
        head = [STATUS_LINE[status]]
        for name, value in self.server_state.default_headers:
            head += [name, b": ", value, b"\r\n"]
        head += [b"content-type: ", media.encode(), b"\r\ncontent-length: ", str(len(payload)).encode(), b"\r\n"]
        if not lookup.keep_alive:
            head.append(b"connection: close\r\n")
        head += [b"\r\n", payload]
        self.transport.write(b"".join(head))
        if not lookup.keep_alive:
            self.transport.close()
        self.on_response_complete()

    def _refuse(self, lookup: _Lookup, exc: BadRequest) -> None:
        """Answer the request's error now; the rest of its body is read and dropped."""
        self._answer(lookup, exc.status, error_body(exc.kind, exc.message), JSON)

    def _body_expired(self) -> None:
        self.body_timer = None
        lookup = self.lookup
        if lookup is None:
            return
        if lookup.done:  # answered already, and the rest of its body stalls: close
            self.transport.close()
            return
        lookup.keep_alive = False
        self._refuse(lookup, timed_out(self.front.limits.body_timeout_s))

    def _stop_timer(self) -> None:
        if self.body_timer is not None:
            self.body_timer.cancel()
            self.body_timer = None
