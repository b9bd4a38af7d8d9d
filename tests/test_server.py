"""The HTTP service, tested through a real uvicorn server on 127.0.0.1 and a real HTTP client."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from featurestore import FeatureStore
from featurestore.errors import FeatureGroupNotFound, InvalidQuery, KeyNotFound, ServeError
from featurestore.server.app import create_app, serve
from featurestore.server.client import Client
from featurestore.server.reload import ReloadPolicy
from featurestore.server.wire import ARROW, Limits
from tests.conftest import T0, run_python
from tests.online_helpers import ServerThread, batch, brute_topk, free_port, keys_for, reference_latest, spec

TOKEN = "t0ken-for-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


LIMITS = Limits(max_keys=50, max_k=20, max_vector_length=1000, max_body_bytes=1_000_000)


def _make_store(root: Path) -> FeatureStore:
    s = FeatureStore(root)
    s.apply([spec("items"), spec("users", key_type="int64")])
    s.feature_group("items").insert(batch(keys_for(200, "string"), seed=1))
    s.feature_group("users").insert(batch(keys_for(20, "int64"), seed=2))
    return s


@pytest.fixture
def store(tmp_path: Path) -> FeatureStore:
    s = _make_store(tmp_path / "store")
    yield s
    s.close()


@pytest.fixture
def server(store: FeatureStore) -> Any:
    app = create_app(store, token=TOKEN, limits=LIMITS, policy=ReloadPolicy(interval=0))
    with ServerThread(app) as srv, httpx.Client(base_url=srv.url, headers=AUTH) as http:
        srv.http = http
        yield srv


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """One server for the tests that only read and do not count requests."""
    s = _make_store(tmp_path_factory.mktemp("shared") / "store")
    app = create_app(s, token=TOKEN, limits=LIMITS, policy=ReloadPolicy(interval=0))
    with ServerThread(app) as srv, httpx.Client(base_url=srv.url, headers=AUTH) as http:
        srv.http = http
        yield srv
    s.close()


def test_lookup_json_and_arrow(server: Any, store: FeatureStore) -> None:
    ref = reference_latest([store.feature_group("items").read()])
    r = server.http.post("/feature-groups/items/lookup", json={"keys": ["k1", "nope", "k7"], "columns": ["n_events"]})
    assert r.status_code == 200
    doc = r.json()
    assert (doc["feature_group"], doc["version"], doc["commit"]) == ("items", 1, 1)
    assert doc["found"] == [True, False, True] and doc["missing"] == ["nope"] and doc["vectors"][1] is None
    np.testing.assert_allclose(doc["vectors"][0], ref["k1"]["embedding"], rtol=1e-6)
    assert doc["columns"]["n_events"] == [ref["k1"]["n_events"], None, ref["k7"]["n_events"]]

    sink = pa.BufferOutputStream()
    keys = pa.table({"key": ["k3", "zz"]})
    with pa.ipc.new_stream(sink, keys.schema) as w:
        w.write_table(keys)
    r = server.http.post("/feature-groups/items/lookup?columns=category", content=sink.getvalue().to_pybytes(),
                         headers={"content-type": ARROW, "accept": ARROW})
    assert r.status_code == 200 and r.headers["content-type"].startswith(ARROW)
    table = pa.ipc.open_stream(r.content).read_all()
    assert table.column_names == ["key", "found", "vector", "category", "n_events"]
    assert table["found"].to_pylist() == [True, False]
    assert table["vector"][1].as_py() is None
    np.testing.assert_allclose(table["vector"][0].as_py(), ref["k3"]["embedding"], rtol=1e-6)
    assert table["category"].to_pylist() == [ref["k3"]["category"], None]
    assert table.schema.metadata[b"commit"] == b"1"


def test_nearest_matches_the_in_process_view(server: Any, store: FeatureStore) -> None:
    items = store.online("items")
    users = store.online("users")
    ref = reference_latest([store.feature_group("items").read()])
    r = server.http.post("/feature-groups/items/nearest", json={"key": "k5", "k": 5, "exclude": ["k5"]})
    assert r.status_code == 200
    want = brute_topk(ref, items["k5"], 6, "cosine")[1:]
    assert r.json()["keys"] == [k for k, _ in want]
    np.testing.assert_allclose(r.json()["scores"], [s for _, s in want], atol=1e-5)

    flt = {"n_events": {"lt": 4}}
    n_match = sum(v["n_events"] < 4 for v in ref.values())
    r = server.http.post("/feature-groups/items/nearest", json={"vector": [0.5] * 8, "k": 20, "filter": flt})
    assert r.status_code == 200 and len(r.json()["keys"]) == n_match < 20

    r = server.http.post("/feature-groups/items/nearest", json={"query": {"feature_group": "users", "key": 7}, "k": 3})
    assert r.json()["keys"] == items.nearest(key=7, query_view=users, k=3).keys

    qs = np.random.default_rng(0).standard_normal((3, 8)).tolist()
    r = server.http.post("/feature-groups/items/nearest", json={"vectors": qs, "k": 4})
    assert [x["keys"] for x in r.json()["results"]] == [n.keys for n in items.nearest_many(qs, k=4)]


def test_client_has_the_view_interface(server: Any, store: FeatureStore) -> None:
    local = store.online("items")
    with Client(server.url, token=TOKEN) as client:
        remote = client.view("items")
        hit, want = remote.get(["k2", "x"], columns=["category"]), local.get(["k2", "x"], columns=["category"])
        assert hit.found.tolist() == want.found.tolist() and hit.missing == ["x"]
        np.testing.assert_allclose(hit.vectors[0], want.vectors[0], rtol=1e-6)
        assert hit.columns == want.columns
        np.testing.assert_allclose(remote["k2"], local["k2"], rtol=1e-6)
        assert remote.nearest(key="k2", k=4).keys == local.nearest(key="k2", k=4).keys
        assert remote.info()["commit"] == 1
        with pytest.raises(KeyNotFound):
            remote["x"]
        with pytest.raises(InvalidQuery):
            remote.nearest([1.0, 2.0])
        with pytest.raises(FeatureGroupNotFound):
            client.view("nope").get(["k1"])


def test_auth(shared_server: Any) -> None:
    with httpx.Client(base_url=shared_server.url) as anon:
        assert anon.get("/health").status_code == 200
        assert anon.get("/openapi.json").status_code == 200
        for method, path in [("GET", "/feature-groups"), ("GET", "/feature-groups/items"), ("GET", "/metrics"),
                             ("POST", "/feature-groups/items/lookup"), ("POST", "/feature-groups/items/nearest")]:
            r = anon.request(method, path, json={"keys": ["k1"]} if method == "POST" else None)
            assert r.status_code == 401, path
            r = anon.request(method, path, headers={"Authorization": "Bearer wrong"})
            assert r.status_code == 401 and "token" in r.json()["detail"]


BAD: list[tuple[str, dict[str, Any], int, str]] = [
    ("lookup", {"content": b""}, 400, "empty"),
    ("lookup", {"content": b"{not json"}, 400, "JSON"),
    ("lookup", {"content": b"[1, 2]"}, 422, "object"),
    ("lookup", {"json": {}}, 422, "keys"),
    ("lookup", {"json": {"keys": "k1"}}, 422, "list"),
    ("lookup", {"json": {"keys": [1]}}, 422, "strings"),
    ("lookup", {"json": {"keys": [["k1"]]}}, 422, "strings"),
    ("lookup", {"json": {"keys": ["k1"], "extra": 1}}, 422, "extra"),
    ("lookup", {"json": {"keys": ["k1"], "columns": ["embedding"]}}, 422, "embedding"),
    ("lookup", {"json": {"keys": ["k1"], "columns": "n_events"}}, 422, "columns"),
    ("lookup", {"json": {"keys": ["k"] * 51}}, 413, "limit"),
    ("lookup", {"content": b"x" * 1_000_001}, 413, "larger"),
    ("lookup", {"content": b"keys=k1", "headers": {"content-type": "text/plain"}}, 415, "application/json"),
    ("lookup", {"content": b"not arrow", "headers": {"content-type": ARROW}}, 400, "Arrow"),
    ("nearest", {"json": {}}, 422, "exactly one"),
    ("nearest", {"json": {"key": "k1", "vector": [1.0] * 8}}, 422, "exactly one"),
    ("nearest", {"json": {"key": "nope"}}, 404, "nope"),
    ("nearest", {"json": {"key": {"a": 1}}}, 422, "key"),
    ("nearest", {"json": {"key": "k1", "k": 0}}, 422, "k must"),
    ("nearest", {"json": {"key": "k1", "k": "3"}}, 422, "k must"),
    ("nearest", {"json": {"key": "k1", "k": 21}}, 413, "limit"),
    ("nearest", {"json": {"vector": [1.0] * 7}}, 422, "8 numbers"),
    ("nearest", {"json": {"vector": [1.0] * 1001}}, 413, "limit"),
    ("nearest", {"json": {"vector": ["a"] * 8}}, 422, "finite numbers"),
    ("nearest", {"json": {"vector": [0.0] * 8}}, 422, "zero"),
    ("nearest", {"content": b'{"vector": [NaN, 1, 1, 1, 1, 1, 1, 1]}'}, 400, "JSON"),
    ("nearest", {"json": {"vectors": []}}, 422, "non-empty"),
    ("nearest", {"json": {"vectors": [[1.0] * 8, [1.0] * 3]}}, 422, "8 numbers"),
    ("nearest", {"json": {"key": "k1", "filter": {"bogus": 1}}}, 422, "bogus"),
    ("nearest", {"json": {"key": "k1", "filter": {"n_events": {"ge": "x"}}}}, 422, "does not fit"),
    ("nearest", {"json": {"key": "k1", "filter": {"n_events": {"near": 1}}}}, 422, "operator"),
    ("nearest", {"json": {"key": "k1", "filter": [1]}}, 422, "filter"),
    ("nearest", {"json": {"key": "k1", "exclude": "k1"}}, 422, "exclude"),
    ("nearest", {"json": {"key": "k1", "exact": "yes"}}, 422, "exact"),
    ("nearest", {"json": {"query": {"feature_group": "nope", "key": 1}}}, 404, "nope"),
    ("nearest", {"json": {"query": {"feature_group": "users", "key": "7"}}}, 422, "integers"),
    ("nearest", {"json": {"query": {"feature_group": "users"}}}, 422, "query"),
]


@pytest.mark.parametrize(("endpoint", "request_kw", "status", "says"), BAD,
                         ids=[f"{e}-{i}" for i, (e, *_rest) in enumerate(BAD)])
def test_every_bad_input_gets_a_4xx(shared_server: Any, endpoint: str, request_kw: dict, status: int,
                                    says: str) -> None:
    r = shared_server.http.post(f"/feature-groups/items/{endpoint}", **request_kw)
    assert r.status_code == status, r.text
    assert says in r.json()["detail"]


def test_unknown_group_and_routes(shared_server: Any) -> None:
    http = shared_server.http
    r = http.post("/feature-groups/nope/lookup", json={"keys": ["k1"]})
    assert r.status_code == 404 and "items" in r.json()["detail"]
    assert http.get("/feature-groups/nope").status_code == 404
    assert http.get("/nowhere").status_code == 404
    assert http.get("/feature-groups/items/lookup").status_code == 405


def test_status_metrics_and_openapi(server: Any) -> None:
    groups = server.http.get("/feature-groups").json()
    assert [(g["feature_group"], g["version"], g["commit"]) for g in groups] == [("items", 1, 1), ("users", 1, 1)]
    info = server.http.get("/feature-groups/items").json()
    assert info["rows"] == 200 and info["index"]["kind"] == "flat" and info["last_reload_error"] is None
    server.http.post("/feature-groups/items/lookup", json={"keys": ["k1", "k2"]})
    server.http.post("/feature-groups/items/lookup", json={"keys": 3})
    server.http.post("/feature-groups/bogus/lookup", json={"keys": ["k1"]})
    text = server.http.get("/metrics").text
    assert 'featurestore_requests_total{endpoint="lookup",feature_group="items",status="200"} 1' in text
    assert 'featurestore_requests_total{endpoint="lookup",feature_group="items",status="422"} 1' in text
    assert 'feature_group="_unknown",status="404"' in text and "bogus" not in text
    assert 'featurestore_request_seconds_bucket{endpoint="lookup",le="+Inf"} 3' in text
    assert 'featurestore_items_total{endpoint="lookup",feature_group="items"} 2' in text
    assert 'featurestore_served_commit{feature_group="items",version="1"} 1' in text
    api = server.http.get("/openapi.json").json()
    assert {"/health", "/feature-groups", "/feature-groups/{name}", "/feature-groups/{name}/lookup",
            "/feature-groups/{name}/nearest", "/metrics"} <= set(api["paths"])
    body = api["paths"]["/feature-groups/{name}/lookup"]["post"]["requestBody"]["content"]
    assert {"application/json", ARROW} <= set(body)


def test_hot_swap_under_concurrent_requests(store: FeatureStore) -> None:
    fg = store.feature_group("items")
    commits = {1: reference_latest([fg.read()])}
    app = create_app(store, groups=[("items", 1)], policy=ReloadPolicy(interval=0.05))
    failures: list[str] = []
    answers: list[tuple[int, str, list[float]]] = []
    stop = threading.Event()
    with ServerThread(app) as srv:
        def hammer(seed: int) -> None:
            rng = np.random.default_rng(seed)
            with httpx.Client(base_url=srv.url) as http:
                while not stop.is_set():
                    key = f"k{rng.integers(0, 260)}"
                    try:
                        r = http.post("/feature-groups/items/lookup", json={"keys": [key]})
                        n = http.post("/feature-groups/items/nearest", json={"vector": [1.0] * 8, "k": 3})
                    except httpx.HTTPError as exc:
                        failures.append(repr(exc))
                        continue
                    if r.status_code != 200 or n.status_code != 200:
                        failures.append(f"{r.status_code} {n.status_code}")
                        continue
                    doc = r.json()
                    if doc["found"][0]:
                        answers.append((doc["commit"], key, doc["vectors"][0]))

        threads = [threading.Thread(target=hammer, args=(i,)) for i in range(3)]
        for t in threads:
            t.start()
        tables = [fg.read()]
        for i in range(3):
            time.sleep(0.2)
            b = batch(keys_for(120, "string", start=20 * i + 20), seed=10 + i, event_time=T0 + timedelta(days=i + 1))
            c = fg.insert(b).commit
            tables.append(b)
            commits[c] = reference_latest(tables)
            deadline = time.monotonic() + 30
            while app.state.registry.get("items").view.commit != c:
                assert time.monotonic() < deadline, "the new commit was not picked up"
                time.sleep(0.02)
        time.sleep(0.2)
        stop.set()
        for t in threads:
            t.join(30)
        final = httpx.get(f"{srv.url}/feature-groups/items").json()
    assert failures == []
    assert final["commit"] == 4 and final["reloads"] == 3
    from featurestore.online.build import list_views

    assert list_views(fg) == [3, 4]  # older views were pruned after the swaps
    seen = {c for c, _, _ in answers}
    assert len(seen) >= 2, seen  # requests were answered on both sides of a swap
    for c, key, vector in answers:  # every answer is exactly the row of the commit it names
        np.testing.assert_allclose(vector, commits[c][key]["embedding"], rtol=1e-6)


def test_failed_reload_keeps_the_old_view(tmp_path: Path) -> None:
    store = FeatureStore(tmp_path / "store")
    store.apply(spec("items", index="ivf", params={"nlist": 8}))
    fg = store.feature_group("items")
    fg.insert(batch(keys_for(400, "string"), seed=1, clustered=True))
    registry_policy = ReloadPolicy(interval=0.05, min_recall=1.01)  # no index can pass: every reload fails
    app = create_app(store, policy=registry_policy)
    with ServerThread(app) as srv, httpx.Client(base_url=srv.url) as http:
        fg.insert(batch(keys_for(400, "string"), seed=2, event_time=T0 + timedelta(days=1), clustered=True))
        deadline = time.monotonic() + 30
        while http.get("/feature-groups/items").json()["reload_failures"] == 0:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        info = http.get("/feature-groups/items").json()
        assert info["commit"] == 1 and "recall" in info["last_reload_error"] and "commit 2" in info["last_reload_error"]
        r = http.post("/feature-groups/items/lookup", json={"keys": ["k1"]})
        assert r.status_code == 200 and r.json()["commit"] == 1
        assert 'featurestore_reloads_total{feature_group="items",outcome="failure"} 1' in http.get("/metrics").text
        time.sleep(0.2)
        assert http.get("/feature-groups/items").json()["reload_failures"] == 1  # not retried in a loop
    store.close()


def test_serve_refuses_non_loopback_without_token(store: FeatureStore, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FEATURESTORE_TOKEN", raising=False)
    with pytest.raises(ServeError, match="token"):
        serve(store, host="0.0.0.0", port=free_port())


@pytest.mark.slow
def test_cli_serve_process_and_graceful_shutdown(store: FeatureStore) -> None:
    port = free_port()
    env = {**os.environ, "FEATURESTORE_TOKEN": TOKEN}
    proc = subprocess.Popen(
        [sys.executable, "-m", "featurestore", "serve", "--root", store.root.uri, "--port", str(port),
         "--reload-interval", "0.2", "--log-level", "info"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            assert time.monotonic() < deadline
            time.sleep(0.1)
        r = httpx.post(f"http://127.0.0.1:{port}/feature-groups/users/lookup", json={"keys": [7, 8]}, headers=AUTH)
        assert r.status_code == 200 and r.json()["found"] == [True, False]
        assert httpx.post(f"http://127.0.0.1:{port}/feature-groups/users/lookup", json={"keys": [7]}).status_code == 401
        # a request in flight when SIGTERM arrives (its body still arriving) is answered before exit
        body = b'{"keys": [7]}'
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            sock.sendall(b"POST /feature-groups/users/lookup HTTP/1.1\r\nHost: t\r\n"
                         b"Content-Type: application/json\r\nAuthorization: Bearer " + TOKEN.encode()
                         + b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body[:5])
            time.sleep(0.3)
            proc.send_signal(signal.SIGTERM)
            time.sleep(0.5)
            assert proc.poll() is None  # still waiting for the request in flight
            sock.sendall(body[5:])
            answer = b""
            while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 200") and b'"found":[true]' in answer
        _out, err = proc.communicate(timeout=30)
        # uvicorn shuts down gracefully, then re-raises the signal it caught
        assert proc.returncode in (0, -signal.SIGTERM)
        assert "Shutting down" in err.decode() and "Finished server process" in err.decode()
        assert "Traceback" not in err.decode()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    bad = subprocess.run([sys.executable, "-m", "featurestore", "serve", "--root", store.root.uri, "--host",
                          "0.0.0.0", "--port", str(free_port())], env={**os.environ, "FEATURESTORE_TOKEN": ""},
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "token" in bad.stderr


def test_serving_imports_stay_light(store: FeatureStore) -> None:
    code = (
        "import sys\n"
        "import featurestore\n"
        "assert 'faiss' not in sys.modules and 'fastapi' not in sys.modules\n"
        "from featurestore import FeatureStore\n"
        "from featurestore.server.app import create_app\n"
        f"app = create_app(FeatureStore({store.root.uri!r}))\n"
        "view = app.state.registry.get('items').view\n"
        "assert view.get(['k1']).found.all() and len(view.nearest(key='k1', k=3)) == 3\n"
        "assert 'great_expectations' not in sys.modules, 'serving imported great_expectations'\n"
    )
    out = run_python(code, timeout=120)
    assert out.returncode == 0, out.stderr


_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12,
)
_fields = st.sampled_from(["keys", "columns", "key", "vector", "vectors", "query", "k", "filter", "exclude",
                           "exact", "n_events", "ge"])


@settings(max_examples=80, deadline=None)
@given(endpoint=st.sampled_from(["lookup", "nearest"]), body=st.dictionaries(_fields, _json, max_size=4))
def test_fuzzed_bodies_never_get_a_500(shared_server: Any, endpoint: str, body: dict) -> None:
    r = shared_server.http.post(f"/feature-groups/items/{endpoint}", json=body)
    assert r.status_code < 500, (body, r.text)
    if r.status_code >= 400:
        assert r.json()["detail"]


def test_lookup_fast_path_answers_like_the_fastapi_route(store: FeatureStore) -> None:
    """Lookups are answered ahead of FastAPI's routing; its route (documented in OpenAPI) answers alike."""
    app = create_app(store, token=TOKEN, limits=LIMITS, policy=ReloadPolicy(interval=0))
    requests = [
        ({"keys": ["k1", "nope"]}, {}, "/feature-groups/items/lookup?columns=n_events"),
        ({"keys": ["k1"]}, {"authorization": "Bearer wrong"}, "/feature-groups/items/lookup"),
        ({"keys": ["k1"]}, {}, "/feature-groups/absent/lookup"),
        ({"keys": "k1"}, {}, "/feature-groups/items/lookup"),
        ({"keys": ["k1"] * (LIMITS.max_keys + 1)}, {}, "/feature-groups/items/lookup"),
        (None, {"content-type": "text/plain"}, "/feature-groups/items/lookup"),
    ]
    answers = []
    for asgi in (app, app.app):
        with ServerThread(asgi) as srv, httpx.Client(base_url=srv.url, headers=AUTH) as http:
            got = []
            for body, headers, path in requests:
                r = http.post(path, json=body, headers=headers) if body is not None else \
                    http.post(path, content=b"keys", headers=headers)
                got.append((r.status_code, r.headers["content-type"], r.content))
            got.append(http.post("/feature-groups/items/lookup", content=b"x" * (LIMITS.max_body_bytes + 1)
                                 ).status_code)
            answers.append(got)
    assert answers[0] == answers[1]
    assert [a[0] for a in answers[0][:-1]] == [200, 401, 404, 422, 413, 415] and answers[0][-1] == 413
    assert "/feature-groups/{name}/lookup" in app.app.openapi()["paths"]


def test_hot_reload_builds_the_new_view_in_another_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from featurestore.server import reload as reload_module
    from featurestore.server.reload import Registry

    store = FeatureStore(tmp_path / "store")
    store.apply(spec("items"))
    fg = store.feature_group("items")
    fg.insert(batch(keys_for(50, "string"), seed=1))
    registry = Registry(store, policy=ReloadPolicy(interval=0))
    fg.insert(batch(keys_for(60, "string"), seed=2, event_time=T0 + timedelta(days=1)))

    def in_this_process(*_a: Any, **_k: Any) -> Any:
        raise AssertionError("the serving process built or checked a view")

    monkeypatch.setattr(reload_module, "materialize", in_this_process)
    monkeypatch.setattr(reload_module, "check_view", in_this_process)  # the table is read there too
    assert registry.poll() == ["items"]  # built and checked by a child process, then opened here
    assert registry.get("items").view.commit == 2 and registry.get("items").view.rows == 60
    registry.stop()
    store.close()
