"""Who may call the HTTP service: with a token, every endpoint but ``/health`` and the OpenAPI pages
needs ``Authorization: Bearer TOKEN``; without one, only a loopback address may be served."""

from __future__ import annotations

import hmac
import ipaddress
import os
from collections.abc import Mapping

from featurestore.errors import ServeError
from featurestore.server.wire import BadRequest

TOKEN_ENV = "FEATURESTORE_TOKEN"


class BearerToken:
    """Checks a request's ``Authorization`` header, in constant time; with no token everyone passes."""

    __slots__ = ("_expected",)

    def __init__(self, token: str | None):
        self._expected = f"Bearer {token}".encode() if token else None

    def check(self, headers: Mapping[str, str]) -> None:
        """Raise a 401 :class:`BadRequest` unless the headers carry the token."""
        if self._expected is None:
            return
        got = headers.get("authorization", "").encode()
        if not hmac.compare_digest(got, self._expected):
            raise BadRequest(401, "missing or wrong bearer token (Authorization: Bearer TOKEN)", "Unauthorized")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def token_for(host: str, token: str | None) -> str | None:
    """The token to serve ``host`` with: ``token``, else ``$FEATURESTORE_TOKEN``; none off loopback is a
    :class:`ServeError`."""
    token = token or os.environ.get(TOKEN_ENV) or None
    if token is None and not is_loopback(host):
        raise ServeError(f"refusing to serve on {host} without a bearer token: pass --token or set "
                         f"${TOKEN_ENV} (only loopback addresses may run without one)")
    return token
