"""The HTTP front door checks a request before reading its body: token and declared length first (401
and 413 however large the body claims to be), then the body within a time limit (408) and a size limit."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import pytest

from featurestore import FeatureStore
from featurestore.server.app import create_app
from featurestore.server.wire import Limits
from tests.online_helpers import ServerThread, batch, keys_for, spec

TOKEN = "s3cret"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    root = Path(tmp_path_factory.mktemp("guard")) / "store"
    store = FeatureStore(root)
    store.apply([spec("items")])
    store.feature_group("items").insert(batch(keys_for(20, "string")))
    app = create_app(store, token=TOKEN, limits=Limits(max_body_bytes=10_000, body_timeout_s=0.5))
    with ServerThread(app) as s:
        yield s
    store.close()


def _raw(port: int, head: str, body: bytes = b"", *, wait: float = 5.0) -> tuple[int, dict, float]:
    """Send ``head`` (and ``body``) on a raw socket; (status, JSON body, seconds until the answer)."""
    t = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as sock:
        sock.sendall(head.encode() + b"\r\n\r\n" + body)
        data = b""
        while b"\r\n\r\n" not in data or len(data.split(b"\r\n\r\n", 1)[1]) < _length(data):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    status = int(data.split(b" ", 2)[1])
    payload = data.split(b"\r\n\r\n", 1)[1]
    try:
        doc = json.loads(payload or b"{}")
    except ValueError:  # the HTTP parser's own plain-text answer (a malformed request line or header)
        doc = {"detail": payload.decode(errors="replace")}
    return status, doc, time.monotonic() - t


def _length(data: bytes) -> int:
    for line in data.split(b"\r\n\r\n", 1)[0].split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return int(line.split(b":")[1])
    return 0


def _head(path: str, length: int | str, token: str | None = None, extra: str = "") -> str:
    auth = f"\r\nAuthorization: Bearer {token}" if token else ""
    return (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {length}{auth}{extra}")


@pytest.mark.parametrize("path", ["/feature-groups/items/lookup", "/feature-groups/items/nearest"])
def test_no_token_is_refused_before_the_body_is_read(server, path):
    # a body declared at 1 TB, none of it sent: the answer comes at once
    status, doc, seconds = _raw(server.port, _head(path, 10**12))
    assert status == 401 and doc["error"] == "Unauthorized" and seconds < 2


@pytest.mark.parametrize("path", ["/feature-groups/items/lookup", "/feature-groups/items/nearest"])
def test_a_declared_length_over_the_limit_is_refused_at_once(server, path):
    status, doc, seconds = _raw(server.port, _head(path, 10**12, TOKEN))
    assert status == 413 and "10000 bytes" in doc["detail"] and seconds < 2
    status, _, _ = _raw(server.port, _head(path, "12x", TOKEN))
    assert status == 400  # refused by the HTTP parser itself


def test_a_stalled_body_times_out(server):
    body = b'{"keys": ["k1"'  # 14 of the 50 bytes declared, then silence
    status, doc, seconds = _raw(server.port, _head("/feature-groups/items/lookup", 50, TOKEN), body)
    assert status == 408 and doc["error"] == "RequestTimeout" and 0.4 < seconds < 3


def test_a_chunked_body_over_the_limit_stops_at_the_limit(server):
    head = ("POST /feature-groups/items/lookup HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json"
            f"\r\nAuthorization: Bearer {TOKEN}\r\nTransfer-Encoding: chunked")
    chunk = b"x" * 8000
    body = b"".join(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n" for _ in range(3)) + b"0\r\n\r\n"
    status, _, _ = _raw(server.port, head, body)
    assert status == 413


def test_good_requests_still_pass(server):
    body = json.dumps({"keys": ["k1", "nope"]}).encode()
    status, doc, _ = _raw(server.port, _head("/feature-groups/items/lookup", len(body), TOKEN), body)
    assert status == 200 and doc["found"] == [True, False]
    body = json.dumps({"key": "k1", "k": 3}).encode()
    status, doc, _ = _raw(server.port, _head("/feature-groups/items/nearest", len(body), TOKEN), body)
    assert status == 200 and len(doc["keys"]) == 3
