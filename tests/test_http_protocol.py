"""The HTTP protocol ``featurestore serve`` runs answers lookups itself: the same bytes as the ASGI app under
plain uvicorn, in order on keep-alive and pipelined connections, with everything it does not take (other
paths, HTTP/1.0, ``Expect: 100-continue``, percent-encoded paths, a request behind one in flight) left to
the ASGI app."""

from __future__ import annotations

import json
import re
import socket
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from featurestore import FeatureStore
from featurestore.server.app import create_app
from featurestore.server.protocol import LookupProtocol
from featurestore.server.wire import Limits
from tests.online_helpers import ServerThread, batch, keys_for, spec

KEYS = keys_for(50, "string")


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory):
    """The same app twice: under ``server_config`` (the protocol) and under plain uvicorn (ASGI only)."""
    root = Path(tmp_path_factory.mktemp("protocol")) / "store"
    store = FeatureStore(root)
    store.apply([spec("items")])
    store.feature_group("items").insert(batch(KEYS))
    limits = Limits(body_timeout_s=0.5)
    with ServerThread(create_app(store, limits=limits)) as ours, \
            ServerThread(create_app(store, limits=limits), plain=True) as plain:
        assert ours.server.config.http_protocol_class is LookupProtocol
        assert plain.server.config.http_protocol_class is not LookupProtocol
        yield ours, plain
    store.close()


def request(method: str, path: str, body: bytes = b"", *, version: str = "1.1", extra: str = "") -> bytes:
    head = f"{method} {path} HTTP/{version}\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    if body or method == "POST":
        head += f"Content-Length: {len(body)}\r\n"
    return (head + extra + "\r\n").encode() + body


def read_responses(sock: socket.socket, n: int) -> list[tuple[int, dict[str, str], bytes]]:
    """``n`` responses from ``sock``: (status, headers, body) each, in the order they came."""
    data, out = b"", []
    while len(out) < n:
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                return out
            data += chunk
        head, data = data.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
        if status == 100:
            continue
        length = int(headers.get("content-length", 0))
        while len(data) < length:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        out.append((status, headers, data[:length]))
        data = data[length:]
    return out


def exchange(port: int, raw: bytes, n: int = 1) -> list[tuple[int, dict[str, str], bytes]]:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(raw)
        return read_responses(sock, n)


def lookup_body(keys: list[str]) -> bytes:
    return json.dumps({"keys": keys}).encode()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(keys=st.lists(st.sampled_from([*KEYS, "missing", "k", ""]), min_size=0, max_size=6),
       query=st.sampled_from(["", "?columns=true", "?features=embedding", "?features=nope"]))
def test_the_protocol_answers_as_the_asgi_app_does(servers, keys, query):
    ours, plain = servers
    raw = request("POST", f"/feature-groups/items/lookup{query}", lookup_body(keys))
    [(s1, h1, b1)] = exchange(ours.port, raw)
    [(s2, h2, b2)] = exchange(plain.port, raw)
    assert (s1, h1["content-type"], b1) == (s2, h2["content-type"], b2)


@pytest.mark.parametrize("path, body", [
    ("/feature-groups/nope/lookup", lookup_body(["k1"])),  # 404 naming the group
    ("/feature-groups/items/lookup", b"{not json"),  # 400
    ("/feature-groups/items/lookup", b'{"keys": "k1"}'),  # 422
    ("/feature-groups/items/lookup", b""),  # empty
])
def test_errors_are_the_asgi_apps_errors(servers, path, body):
    ours, plain = servers
    [(s1, _, b1)] = exchange(ours.port, request("POST", path, body))
    [(s2, _, b2)] = exchange(plain.port, request("POST", path, body))
    assert s1 == s2 and s1 >= 400 and b1 == b2 and json.loads(b1)["detail"]


def test_pipelined_requests_are_answered_in_order(servers):
    ours, _ = servers
    raw = b"".join([
        request("POST", "/feature-groups/items/lookup", lookup_body(["k1"])),
        request("GET", "/health"),  # the ASGI app, a task: the lookups behind it wait their turn
        request("POST", "/feature-groups/items/lookup", lookup_body(["k2", "nope"])),
        request("POST", "/feature-groups/items/nearest", json.dumps({"key": "k3", "k": 2}).encode()),
        request("POST", "/feature-groups/items/lookup", lookup_body(["k4"])),
    ])
    answers = exchange(ours.port, raw, 5)
    assert [s for s, _, _ in answers] == [200] * 5
    docs = [json.loads(b) for _, _, b in answers]
    assert docs[0]["keys"] == ["k1"] and docs[1]["status"] == "ok"
    assert docs[2]["keys"] == ["k2", "nope"] and docs[2]["found"] == [True, False]
    assert docs[3]["keys"][0] == "k3" and len(docs[3]["keys"]) == 2 and docs[4]["keys"] == ["k4"]


def test_a_keep_alive_connection_serves_many_lookups(servers):
    ours, _ = servers
    with socket.create_connection(("127.0.0.1", ours.port), timeout=5) as sock:
        for i in range(30):
            sock.sendall(request("POST", "/feature-groups/items/lookup", lookup_body([KEYS[i]])))
            [(status, headers, body)] = read_responses(sock, 1)
            assert status == 200 and "connection" not in headers and json.loads(body)["keys"] == [KEYS[i]]


def test_connection_close_and_http_1_0_close_after_the_answer(servers):
    ours, _ = servers
    for raw, said in ((request("POST", "/feature-groups/items/lookup", lookup_body(["k1"]),
                               extra="Connection: close\r\n"), True),
                      (request("POST", "/feature-groups/items/lookup", lookup_body(["k1"]), version="1.0"), False)):
        with socket.create_connection(("127.0.0.1", ours.port), timeout=5) as sock:
            sock.sendall(raw)
            [(status, headers, body)] = read_responses(sock, 1)
            assert status == 200 and json.loads(body)["found"] == [True]
            assert sock.recv(1) == b""  # closed by the server
            if said:  # HTTP/1.1 says so; for HTTP/1.0 closing is the default (older uvicorns do not say it)
                assert headers.get("connection") == "close"


def test_a_body_in_pieces_and_expect_continue(servers):
    ours, _ = servers
    body = lookup_body(["k1", "k2"])
    with socket.create_connection(("127.0.0.1", ours.port), timeout=5) as sock:
        raw = request("POST", "/feature-groups/items/lookup", body)
        for i in range(0, len(raw), 7):  # headers and body split across packets, within the body timeout
            sock.sendall(raw[i:i + 7])
            time.sleep(0.005)
        [(status, _, answer)] = read_responses(sock, 1)
        assert status == 200 and json.loads(answer)["found"] == [True, True]
        head = request("POST", "/feature-groups/items/lookup", b"", extra="Expect: 100-continue\r\n")
        sock.sendall(head.replace(b"Content-Length: 0", f"Content-Length: {len(body)}".encode()))
        assert sock.recv(64).startswith(b"HTTP/1.1 100")  # the ASGI app asks for the body
        sock.sendall(body)
        [(status, _, answer)] = read_responses(sock, 1)
        assert status == 200 and json.loads(answer)["keys"] == ["k1", "k2"]


def test_a_percent_encoded_path_is_answered_by_the_app(servers):
    ours, _ = servers
    [(status, _, body)] = exchange(ours.port, request("POST", "/feature-groups/it%65ms/lookup", lookup_body(["k1"])))
    assert status == 200 and json.loads(body)["feature_group"] == "items"


def test_an_error_answered_early_keeps_the_connection(tmp_path):
    store = FeatureStore(tmp_path / "store")
    store.apply([spec("items")])
    store.feature_group("items").insert(batch(KEYS))
    with ServerThread(create_app(store, token="t0ken", limits=Limits(max_body_bytes=1_000))) as server, \
            socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        big = lookup_body(KEYS * 5)  # over the 1,000-byte limit
        auth = "Authorization: Bearer t0ken\r\n"
        sock.sendall(request("POST", "/feature-groups/items/lookup", lookup_body(["k1"]))  # no token
                     + request("POST", "/feature-groups/items/lookup", big, extra=auth)
                     + request("POST", "/feature-groups/items/lookup", lookup_body(["k1"]), extra=auth))
        answers = read_responses(sock, 3)
        assert [s for s, _, _ in answers] == [401, 413, 200]
        assert json.loads(answers[2][2])["found"] == [True]
        metrics = exchange(server.port, request("GET", "/metrics", extra=auth))[0][2].decode()
        counted = r'featurestore_requests_total\{[^}]*endpoint="lookup"[^}]*status="200"[^}]*\} 1$'
        assert re.search(counted, metrics, re.M)  # the lookup answered by the protocol is counted
    store.close()


def test_a_refused_request_whose_body_stalls_is_not_waited_for(servers):
    ours, _ = servers
    with socket.create_connection(("127.0.0.1", ours.port), timeout=5) as sock:
        # a declared body over the 64 MB default limit: refused at once; 10 bytes of it, then silence
        sock.sendall(request("POST", "/feature-groups/items/lookup", b"").replace(
            b"Content-Length: 0", b"Content-Length: 100000000") + b"0123456789")
        [(status, _, _)] = read_responses(sock, 1)
        t = time.monotonic()
        assert status == 413 and sock.recv(1) == b""  # then closed after the body timeout (0.5 s)
        assert time.monotonic() - t < 3
