"""One contract, two transports: the in-process view (``store.online(...)``) and the HTTP client
(``Client(url).view(...)`` against a real server on 127.0.0.1) answer the same calls alike.

Every test runs once per transport. Answers are checked against a plain reference (latest row per key,
brute-force top-k) *and* against the in-process view, so the HTTP answer must equal the in-process one:
same keys in the same order, scores to 1e-6, found masks, missing keys, scalar columns; and every bad
call raises the same :class:`FeatureStoreError` subclass on both, with a message naming what is wrong.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from featurestore import FeatureGroupSpec, FeatureStore
from featurestore.errors import FeatureGroupNotFound, FeatureStoreError, InvalidQuery, KeyNotFound, ServiceNotFound
from featurestore.online.service import FeatureService
from featurestore.online.view import OnlineView
from featurestore.schema import ServiceSpec
from featurestore.server.app import create_app
from featurestore.server.client import Client, RemoteService, RemoteView
from featurestore.server.reload import ReloadPolicy
from tests.conftest import T0
from tests.online_helpers import ServerThread, batch, brute_topk, keys_for, reference_latest, spec

N_ITEMS, N_USERS, DIM = 30, 12, 8


@dataclass
class Transport:
    """The same interface over either transport: ``open(name)`` gives a view (or raises)."""

    kind: str
    open: Callable[[str], Any]
    service: Callable[[str], Any]

    @property
    def items(self) -> Any:
        return self.open("items")

    @property
    def users(self) -> Any:
        return self.open("users")


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FeatureStore]:
    s = FeatureStore(tmp_path_factory.mktemp("contract") / "store")
    s.apply([spec("items"), spec("users", key_type="int64"), VISITS, ServiceSpec.from_dict(SERVICE)])
    s.feature_group("items").insert(batch(keys_for(N_ITEMS, "string"), seed=1))
    s.feature_group("users").insert(batch(keys_for(N_USERS, "int64"), seed=2))
    s.feature_group("visits").insert(pa.table({
        "id": [f"k{i % 10}" for i in range(20)], "day": pa.array([i // 10 for i in range(20)], pa.int64()),
        "event_time": pa.array([T0] * 20, pa.timestamp("us", tz="UTC")),
        "count": pa.array(range(20), pa.int64())}))
    yield s
    s.close()


# a group of scalars with a composite key, and a service over three groups with a nearest step
VISITS = FeatureGroupSpec.from_dict({
    "name": "visits", "version": 1, "entity_keys": [{"name": "id", "type": "string"}, {"name": "day", "type": "int64"}],
    "features": [{"name": "count", "type": "int64"}]})
SERVICE = {"name": "svc", "groups": [
    {"feature_group": "users:1", "entity_keys": {"id": "user"}},
    {"feature_group": "items:1", "features": ["n_events", "embedding"], "entity_keys": {"id": "item"}},
    {"feature_group": "visits:1", "entity_keys": {"id": "item"}}],
    "nearest": {"feature_group": "items:1", "query": "users.embedding", "k": 4, "filter": {"category": ["a", "b"]},
                "features": ["category", "embedding"]}}


@pytest.fixture(scope="module")
def ref(store: FeatureStore) -> dict[str, dict[Any, dict[str, Any]]]:
    return {n: reference_latest([store.feature_group(n).read()]) for n in ("items", "users")}


@pytest.fixture(scope="module")
def local(store: FeatureStore) -> Transport:
    views: dict[str, OnlineView] = {}

    def open_local(name: str) -> OnlineView:
        if name not in views:
            views[name] = store.online(name)
        return views[name]

    return Transport("in_process", open_local, store.service)


@pytest.fixture(scope="module")
def remote(store: FeatureStore) -> Iterator[Transport]:
    app = create_app(store, policy=ReloadPolicy(interval=0))
    with ServerThread(app) as srv, Client(srv.url) as client:
        yield Transport("http", client.view, client.service)


@pytest.fixture(params=["in_process", "http"])
def transport(request: pytest.FixtureRequest) -> Transport:
    return request.getfixturevalue("local" if request.param == "in_process" else "remote")


# ---- helpers ----------------------------------------------------------------------------------------
def same_lookup(got: Any, want: Any) -> None:
    assert got.keys == want.keys
    assert got.found.dtype == bool and got.found.tolist() == want.found.tolist()
    assert got.missing == want.missing
    assert got.vectors.shape == want.vectors.shape and got.vectors.dtype == np.float32
    np.testing.assert_array_equal(np.isnan(got.vectors), np.isnan(want.vectors))
    np.testing.assert_allclose(got.vectors[got.found], want.vectors[want.found], rtol=0, atol=1e-6)
    assert got.columns == want.columns
    assert list(got.features) == list(want.features)
    for name, values in want.features.items():
        if isinstance(values, np.ndarray):
            assert got.features[name].dtype == np.float32 and got.features[name].shape == values.shape
            np.testing.assert_array_equal(np.isnan(got.features[name]), np.isnan(values))
            np.testing.assert_allclose(got.features[name][got.found], values[want.found], rtol=0, atol=1e-6)
        else:
            assert got.features[name] == values, name


def same_neighbors(got: Any, want: Any) -> None:
    assert got.keys == want.keys
    assert got.exact == want.exact
    assert np.asarray(got.scores).dtype == np.float32 and len(got.scores) == len(got.keys)
    np.testing.assert_allclose(got.scores, want.scores, rtol=0, atol=1e-6)


def check_against_reference(got: Any, rows: dict[Any, dict[str, Any]], q: np.ndarray, k: int,
                            keep: Callable[[dict[str, Any]], bool] = lambda _r: True) -> None:
    want = brute_topk(rows, q, k, "cosine", keep)
    assert got.keys == [key for key, _ in want]
    np.testing.assert_allclose(got.scores, [s for _, s in want], atol=1e-5)


# ---- point lookups ----------------------------------------------------------------------------------
LOOKUPS: list[tuple[str, str, list[Any], list[str] | None]] = [
    ("found", "items", ["k1", "k5", "k29"], None),
    ("missing", "items", ["nope", "k30"], None),
    ("mixed", "items", ["k3", "nope", "k0"], ["n_events", "category"]),
    ("duplicates", "items", ["k2", "k2", "nope", "nope", "k2"], ["category"]),
    ("empty", "items", [], None),
    ("int-keys", "users", [0, 7, 999, 77], ["n_events"]),
    ("int-missing", "users", [1, 2, -5], None),
]


FEATURE_LOOKUPS: list[tuple[str, str, list[Any], list[str] | None]] = [
    ("all-features", "items", ["k1", "nope"], None),
    ("some-features", "items", ["k1", "nope", "k2"], ["category", "embedding"]),
    ("scalars-only", "users", [0, 5], ["n_events"]),
    ("composite", "visits", [("k1", 0), ("k1", 1), ("k1", 9), ["k2", 0], {"id": "k3", "day": 1}], None),
    ("composite-none", "visits", [("zz", 0)], ["count"]),
]


@pytest.mark.parametrize(("name", "group", "keys", "features"), FEATURE_LOOKUPS, ids=[c[0] for c in FEATURE_LOOKUPS])
def test_get_features(transport: Transport, local: Transport, store: FeatureStore, name: str, group: str,
                      keys: list[Any], features: list[str] | None) -> None:
    got = transport.open(group).get(keys, features=features)
    fg = store.feature_group(group)
    rows = {tuple(r[k] for k in fg.spec.key_names): r for r in fg.latest().to_pylist()}

    def key_of(k: Any) -> tuple[Any, ...]:
        return tuple(k[n] for n in fg.spec.key_names) if isinstance(k, dict) else tuple(k) \
            if isinstance(k, list | tuple) else (k,)

    wanted = features or [f.name for f in fg.spec.features]
    assert list(got.features) == wanted
    for f in wanted:
        for i, k in enumerate(keys):
            row = rows.get(key_of(k))
            value = got.features[f][i]
            if row is None:
                assert value is None or np.isnan(value).all()
            elif isinstance(value, np.ndarray):
                np.testing.assert_allclose(value, row[f], atol=1e-6)
            else:
                assert value == row[f]
    same_lookup(got, local.open(group).get(keys, features=features))


def test_service_get(transport: Transport, local: Transport) -> None:
    entities = [{"user": 7, "item": "k1", "day": 0}, {"user": 999, "item": "k9", "day": 1},
                {"user": 14, "item": "nope", "day": 0}]
    got = transport.service("svc").get(entities)
    want = local.service("svc").get(entities)
    assert (got.service, got.generation, got.parts) == (want.service, want.generation, want.parts)
    assert got.entities == want.entities == {"user": [7, 999, 14], "item": ["k1", "k9", "nope"], "day": [0, 1, 0]}
    assert {g: m.tolist() for g, m in got.found.items()} == {"users": [True, False, True], "items": [True, True, False],
                                                            "visits": [True, True, False]}
    assert {g: m.tolist() for g, m in got.found.items()} == {g: m.tolist() for g, m in want.found.items()}
    assert list(got.features) == list(want.features)
    for name, values in want.features.items():
        if isinstance(values, np.ndarray):
            np.testing.assert_allclose(got.features[name], values, rtol=0, atol=1e-6, equal_nan=True)
        else:
            assert got.features[name] == values, name
    assert got.neighbors is not None and want.neighbors is not None
    assert [len(c) for c in want.neighbors] == [4, 0, 4]
    for g, w in zip(got.neighbors, want.neighbors):
        assert g.keys == w.keys and g.features["category"] == w.features["category"]
        assert all(c in ("a", "b") for c in w.features["category"])
        np.testing.assert_allclose(g.scores, w.scores, rtol=0, atol=1e-6)
        assert g.features["embedding"].shape == w.features["embedding"].shape == (len(w), DIM)
        np.testing.assert_allclose(g.features["embedding"], w.features["embedding"], atol=1e-6)


@pytest.mark.parametrize(("name", "group", "keys", "columns"), LOOKUPS, ids=[c[0] for c in LOOKUPS])
def test_get(transport: Transport, local: Transport, ref: dict, name: str, group: str, keys: list[Any],
             columns: list[str] | None) -> None:
    view = transport.open(group)
    got = view.get(keys, columns=columns)
    rows = ref[group]
    assert got.found.tolist() == [k in rows for k in keys]
    assert got.missing == [k for k in keys if k not in rows]
    assert got.vectors.shape == (len(keys), DIM)
    for i, key in enumerate(keys):
        if key in rows:
            np.testing.assert_allclose(got.vectors[i], rows[key]["embedding"], atol=1e-6)
        else:
            assert np.isnan(got.vectors[i]).all()
    for c in columns or []:
        assert got.columns[c] == [rows[k][c] if k in rows else None for k in keys]
    same_lookup(got, local.open(group).get(keys, columns=columns))


def test_item_access_and_membership(transport: Transport, local: Transport, ref: dict) -> None:
    items, users = transport.items, transport.users
    np.testing.assert_allclose(items["k4"], ref["items"]["k4"]["embedding"], atol=1e-6)
    np.testing.assert_allclose(users[14], ref["users"][14]["embedding"], atol=1e-6)
    np.testing.assert_array_equal(items["k4"], local.items["k4"])
    assert "k4" in items and "nope" not in items and 7 not in items  # a key of the wrong type is absent
    assert 7 in users and 8 not in users
    assert len(items) == N_ITEMS and len(users) == N_USERS


def test_info_agrees(transport: Transport, local: Transport) -> None:
    want = json.loads(json.dumps(local.items.info(), default=str))
    got = transport.items.info()
    assert {k: got[k] for k in want} == want
    head = ("items", 1, 1, N_ITEMS, DIM)
    assert (got["feature_group"], got["version"], got["commit"], got["rows"], got["dim"]) == head


# ---- similarity -------------------------------------------------------------------------------------
def _query(seed: int = 3) -> list[float]:
    return np.random.default_rng(seed).standard_normal(DIM).astype(np.float32).tolist()


NEAREST: list[tuple[str, dict[str, Any]]] = [
    ("key", {"key": "k5", "k": 5}),
    ("key-exclude-self", {"key": "k5", "k": 5, "exclude": ["k5"]}),
    ("vector", {"vector": _query(), "k": 7}),
    ("vector-exact", {"vector": _query(4), "k": 3, "exact": True}),
    ("filter-eq", {"vector": _query(), "k": 5, "filter": {"category": "a"}}),
    ("filter-range-and-list", {"key": "k2", "k": 6, "filter": {"n_events": {"ge": 20, "lt": 90},
                                                               "category": ["a", "b"]}}),
    ("filter-and-exclude", {"key": "k2", "k": 4, "filter": {"n_events": {"lt": 60}}, "exclude": ["k2", "k9"]}),
    ("k-beyond-rows", {"vector": _query(5), "k": 100}),
    ("k-beyond-matches", {"vector": _query(5), "k": 25, "filter": {"category": "b"}}),
    ("filter-matches-nothing", {"vector": _query(), "k": 5, "filter": {"n_events": {"gt": 10_000}}}),
    ("exclude-unknown-keys", {"key": "k1", "k": 3, "exclude": ["nope", "k1"]}),
    ("exclude-everything", {"key": "k1", "k": 3, "exclude": keys_for(N_ITEMS, "string")}),
    ("empty-filter", {"key": "k1", "k": 3, "filter": {}}),
]


def _keep(kw: dict[str, Any]) -> Callable[[dict[str, Any]], bool]:
    flt, exclude = kw.get("filter") or {}, set(kw.get("exclude", ()))

    def keep(r: dict[str, Any]) -> bool:
        if r["id"] in exclude:
            return False
        for col, cond in flt.items():
            conds = cond if isinstance(cond, dict) else {"in": cond} if isinstance(cond, list) else {"eq": cond}
            for op, v in conds.items():
                x = r[col]
                ok = {"eq": x == v, "in": x in v if op == "in" else False,
                      "lt": op == "lt" and x < v, "le": op == "le" and x <= v,
                      "gt": op == "gt" and x > v, "ge": op == "ge" and x >= v}[op]
                if not ok:
                    return False
        return True

    return keep


@pytest.mark.parametrize(("name", "kw"), NEAREST, ids=[c[0] for c in NEAREST])
def test_nearest(transport: Transport, local: Transport, ref: dict, name: str, kw: dict[str, Any]) -> None:
    got = transport.items.nearest(**kw)
    rows = ref["items"]
    q = np.asarray(kw["vector"] if "vector" in kw else rows[kw["key"]]["embedding"], np.float32)
    check_against_reference(got, rows, q, kw["k"], _keep(kw))
    same_neighbors(got, local.items.nearest(**kw))


def test_nearest_with_another_groups_key(transport: Transport, local: Transport, ref: dict) -> None:
    got = transport.items.nearest(key=7, query_view=transport.users, k=4, exclude=["k0"])
    check_against_reference(got, ref["items"], np.asarray(ref["users"][7]["embedding"]), 4,
                            lambda r: r["id"] != "k0")
    same_neighbors(got, local.items.nearest(key=7, query_view=local.users, k=4, exclude=["k0"]))
    same_neighbors(transport.users.nearest(key=14, k=3), local.users.nearest(key=14, k=3))


def test_nearest_many(transport: Transport, local: Transport, ref: dict) -> None:
    qs = np.random.default_rng(9).standard_normal((3, DIM)).astype(np.float32)
    got = transport.items.nearest_many(qs.tolist(), k=4, filter={"category": ["a", "c"]}, exclude=["k3"])
    want = local.items.nearest_many(qs, k=4, filter={"category": ["a", "c"]}, exclude=["k3"])
    assert len(got) == len(want) == 3
    for g, w, q in zip(got, want, qs):
        check_against_reference(g, ref["items"], q, 4, lambda r: r["category"] in ("a", "c") and r["id"] != "k3")
        same_neighbors(g, w)


# ---- every error case ---------------------------------------------------------------------------------
ERRORS: list[tuple[str, Callable[[Transport], Any], type[FeatureStoreError], list[str]]] = [
    ("get-bare-string", lambda t: t.items.get("k1"), InvalidQuery, ["sequence of keys", "'k1'"]),
    ("get-bare-int", lambda t: t.users.get(7), InvalidQuery, ["sequence of keys", "7"]),
    ("get-int-key-in-string-group", lambda t: t.items.get(["k1", 7]), InvalidQuery, ["7"]),
    ("get-string-key-in-int-group", lambda t: t.users.get(["7"]), InvalidQuery, ["'7'"]),
    ("get-float-key", lambda t: t.users.get([1.5]), InvalidQuery, ["1.5"]),
    ("get-int-key-over-64-bits", lambda t: t.users.get([2**70]), InvalidQuery, ["64"]),
    ("get-null-key", lambda t: t.items.get([None]), InvalidQuery, ["None"]),
    ("get-nested-key", lambda t: t.items.get([["k1"]]), InvalidQuery, ["['k1']"]),
    ("get-unknown-column", lambda t: t.items.get(["k1"], columns=["bogus"]), InvalidQuery, ["'bogus'"]),
    ("get-vector-column", lambda t: t.items.get(["k1"], columns=["embedding"]), InvalidQuery, ["'embedding'"]),
    ("get-columns-string", lambda t: t.items.get(["k1"], columns="n_events"), InvalidQuery,
     ["columns", "'n_events'"]),
    ("item-missing", lambda t: t.items["nope"], KeyNotFound, ["'nope'", "items v1 (commit 1)"]),
    ("item-missing-int", lambda t: t.users[8], KeyNotFound, ["8", "users v1 (commit 1)"]),
    ("nearest-unknown-key", lambda t: t.items.nearest(key="nope"), KeyNotFound, ["'nope'", "items"]),
    ("nearest-unknown-query-key", lambda t: t.items.nearest(key=8, query_view=t.users), KeyNotFound,
     ["8", "users"]),
    ("nearest-key-of-wrong-type", lambda t: t.items.nearest(key=7), InvalidQuery, ["7"]),
    ("nearest-query-key-of-wrong-type", lambda t: t.items.nearest(key="k1", query_view=t.users), InvalidQuery,
     ["'k1'"]),
    ("nearest-neither", lambda t: t.items.nearest(), InvalidQuery, ["exactly one"]),
    ("nearest-both", lambda t: t.items.nearest([1.0] * DIM, key="k1"), InvalidQuery, ["exactly one"]),
    ("nearest-short-vector", lambda t: t.items.nearest([1.0] * (DIM - 1)), InvalidQuery, [f"{DIM} numbers"]),
    ("nearest-long-vector", lambda t: t.items.nearest([1.0] * (DIM + 3)), InvalidQuery, [f"{DIM} numbers"]),
    ("nearest-nan-vector", lambda t: t.items.nearest([float("nan")] * DIM), InvalidQuery, ["NaN"]),
    ("nearest-inf-vector", lambda t: t.items.nearest([float("inf")] * DIM), InvalidQuery, ["infinity"]),
    ("nearest-text-vector", lambda t: t.items.nearest(["a"] * DIM), InvalidQuery, ["numbers"]),
    ("nearest-zero-vector", lambda t: t.items.nearest([0.0] * DIM), InvalidQuery, ["zero"]),
    ("nearest-k-zero", lambda t: t.items.nearest(key="k1", k=0), InvalidQuery, ["k must be a positive", "0"]),
    ("nearest-k-negative", lambda t: t.items.nearest(key="k1", k=-3), InvalidQuery, ["k must be a positive", "-3"]),
    ("nearest-k-float", lambda t: t.items.nearest(key="k1", k=2.5), InvalidQuery, ["k must be a positive", "2.5"]),
    ("nearest-k-bool", lambda t: t.items.nearest(key="k1", k=True), InvalidQuery, ["k must be a positive", "True"]),
    ("filter-unknown-column", lambda t: t.items.nearest(key="k1", filter={"bogus": 1}), InvalidQuery,
     ["'bogus'", "filterable columns"]),
    ("filter-unknown-operator", lambda t: t.items.nearest(key="k1", filter={"n_events": {"near": 1}}),
     InvalidQuery, ["'n_events'", "'near'"]),
    ("filter-bad-value", lambda t: t.items.nearest(key="k1", filter={"n_events": {"ge": "x"}}), InvalidQuery,
     ["'n_events'", "does not fit"]),
    ("filter-null", lambda t: t.items.nearest(key="k1", filter={"category": None}), InvalidQuery,
     ["'category'", "null"]),
    ("filter-not-a-mapping", lambda t: t.items.nearest(key="k1", filter=["category"]), InvalidQuery,
     ["filter", "mapping"]),
    ("exclude-bare-key", lambda t: t.items.nearest(key="k1", exclude="k1"), InvalidQuery,
     ["exclude", "sequence of keys"]),
    ("exclude-key-of-wrong-type", lambda t: t.items.nearest(key="k1", exclude=[7]), InvalidQuery, ["7"]),
    ("nearest-many-short-vector", lambda t: t.items.nearest_many([[1.0] * (DIM - 1)]), InvalidQuery,
     [f"{DIM} numbers"]),
    ("unknown-feature-group", lambda t: t.open("nope").get(["k1"]), FeatureGroupNotFound, ["'nope'", "items"]),
    ("get-unknown-feature", lambda t: t.items.get(["k1"], features=["bogus"]), InvalidQuery, ["'bogus'", "items"]),
    ("get-features-string", lambda t: t.items.get(["k1"], features="embedding"), InvalidQuery, ["features"]),
    ("composite-wrong-type", lambda t: t.open("visits").get([("k1", "monday")]), InvalidQuery,
     ["(id, day)", "'monday'"]),
    ("composite-wrong-arity", lambda t: t.open("visits").get([("k1",)]), InvalidQuery, ["(id, day)"]),
    ("composite-bare-key", lambda t: t.open("visits").get(["k1"]), InvalidQuery, ["(id, day)", "'k1'"]),
    ("scalars-nearest", lambda t: t.open("visits").nearest([1.0], k=1), InvalidQuery, ["no vector feature"]),
    ("nearest-unknown-vector-feature", lambda t: t.items.nearest(key="k1", feature="bogus"), InvalidQuery,
     ["'bogus'", "vector features: embedding"]),
    ("unknown-service", lambda t: t.service("nope").get([{"user": 1}]), ServiceNotFound, ["'nope'"]),
    ("service-missing-field", lambda t: t.service("svc").get([{"user": 1, "item": "k1"}]), InvalidQuery,
     ["'svc'", "'day'"]),
    ("service-wrong-key-type", lambda t: t.service("svc").get([{"user": "x", "item": "k1", "day": 0}]),
     InvalidQuery, ["'svc'", "users:1", "'x'"]),
    ("service-not-entities", lambda t: t.service("svc").get(7), InvalidQuery, ["'svc'", "entities"]),
]


@pytest.mark.parametrize(("name", "call", "error", "says"), ERRORS, ids=[c[0] for c in ERRORS])
def test_errors(transport: Transport, local: Transport, name: str, call: Callable[[Transport], Any],
                error: type[FeatureStoreError], says: list[str]) -> None:
    with pytest.raises(FeatureStoreError) as got:
        call(transport)
    with pytest.raises(FeatureStoreError) as want:
        call(local)
    assert type(got.value) is type(want.value) is error, (got.value, want.value)
    for text in says:
        assert text in str(got.value), (text, str(got.value))


def test_parameter_names_are_the_same() -> None:
    def params(fn: Any) -> list[tuple[str, Any, Any]]:
        return [(p.name, p.kind, p.default) for p in inspect.signature(fn).parameters.values()]

    for method in ("get", "nearest", "nearest_many", "__getitem__", "__contains__", "__len__", "info"):
        assert params(getattr(RemoteView, method)) == params(getattr(OnlineView, method)), method
    assert params(RemoteService.get) == params(FeatureService.get)


def test_the_http_transport_is_really_remote(remote: Transport) -> None:
    """Guards the suite itself: the http views are clients of a server, not the in-process objects."""
    view = remote.items
    assert isinstance(view, RemoteView) and not isinstance(view, OnlineView)
    assert view.client.http.base_url.host == "127.0.0.1"
