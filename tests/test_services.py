"""Feature services and multi-feature views: several groups (composite keys, several vector features,
groups of scalars) answered in one call, in-process and over HTTP, against a pandas reference built
from ``fg.latest()``; the nearest step; training sets from the same definition; typed errors naming
the service, group or feature."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from featurestore import FeatureGroupSpec, FeatureStore
from featurestore.errors import InvalidQuery, ServiceNotFound, SpecError
from featurestore.schema import ServiceSpec, load_service
from featurestore.server.app import create_app
from featurestore.server.client import Client
from featurestore.server.reload import ReloadPolicy
from tests.conftest import T0
from tests.online_helpers import ServerThread

USERS = FeatureGroupSpec.from_dict({
    "name": "users", "version": 1, "entity_keys": [{"name": "user_id", "type": "string"}],
    "features": [{"name": "embedding", "type": "vector", "dim": 4},
                 {"name": "taste", "type": "vector", "dim": 3, "metric": "l2"},
                 {"name": "n_events", "type": "int64"}, {"name": "score", "type": "float64"}],
    "expectations": {"vectors": {"embedding": {"drift": False}, "taste": {"drift": False}}},
    "online": {"indexes": {"taste": {"index": "hnsw", "params": {"m": 8}}}},
})
USER_DAY = FeatureGroupSpec.from_dict({
    "name": "user_day", "version": 1,
    "entity_keys": [{"name": "user_id", "type": "string"}, {"name": "day", "type": "int64"}],
    "features": [{"name": "clicks", "type": "int64"}, {"name": "label", "type": "string"}],
})
ITEMS = FeatureGroupSpec.from_dict({
    "name": "items", "version": 1, "entity_keys": [{"name": "item_id", "type": "int64"}],
    "features": [{"name": "embedding", "type": "vector", "dim": 4}, {"name": "price", "type": "float64"}],
    "expectations": {"vectors": {"embedding": {"drift": False}}},
})
RANKING = {
    "name": "ranking", "description": "user, user-day and item features with candidates",
    "groups": [{"feature_group": "users:1"},
               {"feature_group": "user_day:1", "features": ["clicks", "label"]},
               {"feature_group": "items:1", "features": ["price", "embedding"], "entity_keys": {"item_id": "item"}}],
    "nearest": {"feature_group": "items:1", "query": "users.embedding", "k": 3,
                "filter": {"price": {"ge": 0.3}}, "features": ["price"]},
}
N_USERS, N_DAYS, N_ITEMS = 16, 4, 30


def _vec(rng: np.random.Generator, n: int, dim: int) -> pa.Array:
    return pa.FixedSizeListArray.from_arrays(pa.array(rng.standard_normal(n * dim).astype(np.float32)), dim)


def _times(n: int, t: datetime) -> pa.Array:
    return pa.array([t] * n, pa.timestamp("us", tz="UTC"))


def _fill(store: FeatureStore) -> None:
    """Two commits per group; the second overwrites some keys (a later event time) and adds others."""
    rng = np.random.default_rng(7)
    for c, (lo, hi) in enumerate([(0, 10), (6, 14)]):
        n, t = hi - lo, T0 + timedelta(days=c)
        store.feature_group("users").insert(pa.table({
            "user_id": [f"u{i}" for i in range(lo, hi)], "event_time": _times(n, t),
            "embedding": _vec(rng, n, 4), "taste": _vec(rng, n, 3),
            "n_events": pa.array(rng.integers(0, 50, n), pa.int64()),
            "score": pa.array([None if i % 5 == 0 else float(rng.random()) for i in range(n)], pa.float64())}))
        keys = [(f"u{u}", d) for u in range(lo, hi) for d in range(N_DAYS) if (u + d + c) % 3]
        store.feature_group("user_day").insert(pa.table({
            "user_id": [k[0] for k in keys], "day": pa.array([k[1] for k in keys], pa.int64()),
            "event_time": _times(len(keys), t),
            "clicks": pa.array(rng.integers(0, 9, len(keys)), pa.int64()),
            "label": [None if i % 4 == 0 else f"l{i % 3}" for i in range(len(keys))]}))
        m = 20
        store.feature_group("items").insert(pa.table({
            "item_id": pa.array(range(c * 10, c * 10 + m), pa.int64()), "event_time": _times(m, t),
            "embedding": _vec(rng, m, 4), "price": rng.random(m)}))


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FeatureStore]:
    s = FeatureStore(tmp_path_factory.mktemp("services") / "store")
    s.apply([USERS, USER_DAY, ITEMS, ServiceSpec.from_dict(RANKING)])
    _fill(s)
    yield s
    s.close()


@pytest.fixture(scope="module")
def server(store: FeatureStore) -> Iterator[ServerThread]:
    with ServerThread(create_app(store, policy=ReloadPolicy(interval=0))) as srv:
        yield srv


@pytest.fixture(scope="module", params=["in_process", "http"])
def service(request: pytest.FixtureRequest, store: FeatureStore) -> Iterator[Any]:
    if request.param == "in_process":
        yield store.service("ranking")
        return
    srv = request.getfixturevalue("server")
    with Client(srv.url) as client:
        yield client.service("ranking")


def _reference(store: FeatureStore, name: str) -> dict[Any, dict[str, Any]]:
    """The pandas reference: the latest row per key, from ``fg.latest()``."""
    fg = store.feature_group(name)
    frame = fg.latest().to_pandas()
    keys = fg.spec.key_names
    out = {}
    for row in frame.to_dict("records"):
        out[tuple(row[k] for k in keys) if len(keys) > 1 else row[keys[0]]] = row
    return out


def _same(got: Any, want: Any) -> bool:
    if want is None or (isinstance(want, float) and np.isnan(want)):
        return got is None or (isinstance(got, float) and np.isnan(got))
    if isinstance(want, np.ndarray | list):
        return np.array_equal(np.asarray(got, np.float32), np.asarray(want, np.float32))
    return bool(got == want)


entity = st.tuples(st.integers(0, N_USERS + 2), st.integers(0, N_DAYS), st.integers(0, N_ITEMS + 3))


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(entity, max_size=12))
def test_service_lookup_matches_the_latest_rows_of_every_group(service: Any, store: FeatureStore,
                                                               drawn: list[tuple[int, int, int]]) -> None:
    entities = [{"user_id": f"u{u}", "day": d, "item": i} for u, d, i in drawn]
    ans = service.get(entities)
    assert [(p.feature_group, p.version) for p in ans.parts] == [("users", 1), ("user_day", 1), ("items", 1)]
    assert [p.commit for p in ans.parts] == [store.feature_group(n).commit_of(None) for n in ("users", "user_day",
                                                                                                "items")]
    keys = {"users": [e["user_id"] for e in entities], "user_day": [(e["user_id"], e["day"]) for e in entities],
            "items": [e["item"] for e in entities]}
    wanted = {"users": ["embedding", "taste", "n_events", "score"], "user_day": ["clicks", "label"],
              "items": ["price", "embedding"]}
    assert list(ans.features) == [f"{g}__{f}" for g in wanted for f in wanted[g]]
    for group, feats in wanted.items():
        ref = _reference(store, group)
        assert ans.found[group].tolist() == [k in ref for k in keys[group]], group
        for f in feats:
            values = ans.features[f"{group}__{f}"]
            assert len(values) == len(entities)
            for i, k in enumerate(keys[group]):
                if k in ref:
                    assert _same(values[i], ref[k][f]), (group, f, k)
                elif isinstance(values, np.ndarray):
                    assert np.isnan(values[i]).all()
                else:
                    assert values[i] is None


def test_nearest_step_returns_filtered_candidates_with_their_features(service: Any, store: FeatureStore) -> None:
    entities = [{"user_id": "u1", "day": 0, "item": 1}, {"user_id": "nobody", "day": 0, "item": 1},
                {"user_id": "u12", "day": 1, "item": 2}]
    ans = service.get(entities)
    items, users = store.online("items"), store.online("users")
    prices = _reference(store, "items")
    assert ans.neighbors is not None and len(ans.neighbors) == 3
    assert len(ans.neighbors[1]) == 0  # no user row: no query vector, no candidates
    for i in (0, 2):
        want = items.nearest(key=entities[i]["user_id"], query_view=users, k=3, filter={"price": {"ge": 0.3}})
        got = ans.neighbors[i]
        assert got.keys == want.keys and len(got) == 3
        np.testing.assert_allclose(got.scores, want.scores, rtol=1e-6)
        assert got.features["price"] == [prices[k]["price"] for k in got.keys]
        assert all(p >= 0.3 for p in got.features["price"])


def test_entities_as_columns_or_a_dataframe_give_the_same_answer(store: FeatureStore) -> None:
    svc = store.service("ranking")
    rows = [{"user_id": "u3", "day": 1, "item": 4}, {"user_id": "u9", "day": 2, "item": 99}]
    a = svc.get(rows).to_pandas()
    b = svc.get({"user_id": ["u3", "u9"], "day": [1, 2], "item": [4, 99]}).to_pandas()
    c = svc.get(pd.DataFrame(rows)).to_pandas()
    for other in (b, c):
        assert list(other.columns) == list(a.columns)
        assert a.astype(str).equals(other.astype(str))


def test_views_hold_every_feature_and_serve_groups_of_scalars(store: FeatureStore) -> None:
    users, days = store.online("users"), store.online("user_day")
    assert users.manifest["format_version"] == 3 and set(users.vectors) == {"embedding", "taste"}
    assert users.vectors["taste"].index_config.kind == "hnsw" and users.vectors["embedding"].index_config.kind == "flat"
    ref = _reference(store, "users")
    hit = users.get(["u7", "zz"], features=["taste", "score"])
    assert list(hit.features) == ["taste", "score"] and hit.found.tolist() == [True, False]
    assert _same(hit["taste"][0], ref["u7"]["taste"]) and np.isnan(hit["taste"][1]).all()
    near = users.nearest(key="u7", k=2, feature="taste", exact=True)
    assert near.keys[0] == "u7" and near.scores[0] == pytest.approx(0.0, abs=1e-5)
    # a group of scalars with a composite key: point lookups, no similarity
    dref = _reference(store, "user_day")
    k = next(iter(dref))
    hit = days.get([k, list(k), {"user_id": k[0], "day": k[1]}, ("nobody", 0)])
    assert hit.found.tolist() == [True, True, True, False] and hit.vectors.shape == (4, 0)
    assert hit.features["clicks"][:3] == [dref[k]["clicks"]] * 3 and hit.features["clicks"][3] is None
    assert hit.missing == [("nobody", 0)]
    with pytest.raises(InvalidQuery, match="no vector feature"):
        days.nearest(vector=[1.0], k=1)
    with pytest.raises(InvalidQuery, match=r"\(user_id, day\)"):
        days.get([("u1", "not-an-int")])
    with pytest.raises(InvalidQuery, match="no feature"):
        users.get(["u1"], features=["nope"])


def test_composite_keys_over_http_json_and_arrow(server: ServerThread, store: FeatureStore) -> None:
    import httpx

    dref = _reference(store, "user_day")
    k = next(iter(dref))
    r = httpx.post(f"{server.url}/feature-groups/user_day/lookup", json={"keys": [list(k), ["zz", 1]]})
    assert r.status_code == 200
    doc = r.json()
    assert doc["found"] == [True, False] and doc["features"]["clicks"] == [dref[k]["clicks"], None]
    sink = pa.BufferOutputStream()
    keys = pa.table({"user_id": [k[0], "zz"], "day": pa.array([k[1], 1], pa.int64())})
    with pa.ipc.new_stream(sink, keys.schema) as w:
        w.write_table(keys)
    arrow = "application/vnd.apache.arrow.stream"
    r = httpx.post(f"{server.url}/feature-groups/user_day/lookup", content=sink.getvalue().to_pybytes(),
                   headers={"content-type": arrow, "accept": arrow})
    table = pa.ipc.open_stream(r.content).read_all()
    assert table.column("found").to_pylist() == [True, False]
    assert table.column("user_id").to_pylist() == [k[0], "zz"]
    assert table.column("clicks")[0].as_py() == dref[k]["clicks"]
    with Client(server.url) as client:
        remote = client.view("user_day").get([k, ("zz", 1)])
    local = store.online("user_day").get([k, ("zz", 1)])
    assert remote.keys == local.keys and remote.missing == local.missing
    assert remote.features == local.features


def test_service_lookup_in_arrow(server: ServerThread, store: FeatureStore) -> None:
    import httpx

    arrow = "application/vnd.apache.arrow.stream"
    sink = pa.BufferOutputStream()
    body = pa.table({"user_id": ["u1", "zz"], "day": pa.array([0, 0], pa.int64()),
                     "item": pa.array([3, 4], pa.int64())})
    with pa.ipc.new_stream(sink, body.schema) as w:
        w.write_table(body)
    r = httpx.post(f"{server.url}/services/ranking/lookup", content=sink.getvalue().to_pybytes(),
                   headers={"content-type": arrow, "accept": arrow})
    assert r.status_code == 200
    table = pa.ipc.open_stream(r.content).read_all()
    local = store.service("ranking").get([{"user_id": "u1", "day": 0, "item": 3},
                                          {"user_id": "zz", "day": 0, "item": 4}])
    assert table.column("users__found").to_pylist() == local.found["users"].tolist()
    assert table.column("users__n_events").to_pylist() == local.features["users__n_events"]
    np.testing.assert_array_equal(np.asarray(table.column("users__embedding")[0].as_py(), np.float32),
                                  local.features["users__embedding"][0])
    assert local.neighbors is not None
    assert table.column("nearest__keys").to_pylist() == [c.keys for c in local.neighbors]
    assert table.schema.metadata[b"service"] == b"ranking"


def test_training_row_at_now_equals_the_online_answer(store: FeatureStore) -> None:
    entities = [{"user_id": f"u{u}", "day": d, "item": i} for u, d, i in [(1, 0, 3), (7, 2, 15), (13, 1, 99),
                                                                            (40, 0, 1), (9, 3, 27)]]
    online = store.service("ranking").get(entities)
    spine = pd.DataFrame(entities).assign(event_time=datetime.now(UTC))
    train = store.training_set(spine, service="ranking").to_pandas()
    assert [c for c in train.columns if "__" in c] == list(online.features)
    for name, values in online.features.items():
        for i in range(len(entities)):
            want, got = values[i], train[name].iloc[i]
            if isinstance(values, np.ndarray):
                if np.isnan(want).all():
                    assert got is None or (np.ndim(got) == 0 and pd.isna(got)), name
                else:
                    np.testing.assert_array_equal(np.asarray(got, np.float32), want)
            else:
                assert _same(None if pd.isna(got) else got, want), (name, i)


def test_errors_name_the_service_group_and_feature(store: FeatureStore, server: ServerThread) -> None:
    with pytest.raises(ServiceNotFound, match="'nope'"):
        store.service("nope")
    bad = {**RANKING, "name": "bad", "groups": [{"feature_group": "users:1", "features": ["embedding", "nope"]}]}
    bad.pop("nearest")
    with pytest.raises(SpecError, match=r"groups\[0\]\.features.*users:1 has no feature 'nope'"):
        store.apply([ServiceSpec.from_dict(bad)])
    with pytest.raises(SpecError, match="nearest.query: user_day:1 has no vector feature 'clicks'"):
        store.apply([ServiceSpec.from_dict({**RANKING, "name": "bad", "nearest": {**RANKING["nearest"],
                                                                                  "query": "user_day.clicks"}})])
    with pytest.raises(SpecError, match="nearest.query"):
        ServiceSpec.from_dict({**RANKING, "nearest": {**RANKING["nearest"], "query": "nowhere.embedding"}})
    assert "bad" not in store.services()
    svc = store.service("ranking")
    with pytest.raises(InvalidQuery, match="'ranking'.*'item'"):
        svc.get([{"user_id": "u1", "day": 0}])
    with pytest.raises(InvalidQuery, match="'ranking'.*user_day:1"):
        svc.get([{"user_id": "u1", "day": "monday", "item": 1}])
    with Client(server.url) as client:
        with pytest.raises(ServiceNotFound, match="'nope'"):
            client.service("nope").get([{"user_id": "u1"}])
        with pytest.raises(InvalidQuery, match="'ranking'.*'item'"):
            client.service("ranking").get([{"user_id": "u1", "day": 0}])
        with pytest.raises(InvalidQuery, match="'ranking'.*user_day:1"):
            client.service("ranking").get([{"user_id": "u1", "day": "monday", "item": 1}])


def test_service_files_apply_and_the_cli(store: FeatureStore, tmp_path: Any) -> None:
    from featurestore.cli import main

    (tmp_path / "services").mkdir()
    path = tmp_path / "services" / "user_only.yaml"
    path.write_text("name: user_only\ngroups:\n  - feature_group: users:1\n    features: [n_events]\n")
    assert load_service(path).parts[0].features == ("n_events",)
    results = store.apply(str(tmp_path))
    assert [(r.name, r.action, r.kind) for r in results] == [("user_only", "created", "service")]
    assert store.apply(str(tmp_path))[0].action == "unchanged"
    path.write_text("name: user_only\ngroups:\n  - feature_group: users:1\n    features: [n_events, score]\n")
    assert store.apply(str(tmp_path))[0].action == "updated"
    assert store.service("user_only").get([{"user_id": "u1"}]).features.keys() == {"users__n_events", "users__score"}
    (tmp_path / "services" / "other.yaml").write_text("name: user_only\ngroups: [users:1]\n")
    with pytest.raises(SpecError, match="file name says other"):
        store.apply(str(tmp_path))
    (tmp_path / "services" / "other.yaml").unlink()
    code = main(["lookup", "--root", store.root.uri, "--service", "user_only", "user_id=u1", "user_id=zz", "--json"])
    assert code == 1  # a missing key


def _trio_spec(name: str) -> FeatureGroupSpec:
    features: list[dict[str, Any]] = [{"name": "round", "type": "int64"}]
    if name == "a":
        features.append({"name": "embedding", "type": "vector", "dim": 2})
    return FeatureGroupSpec.from_dict({"name": name, "version": 1, "entity_keys": [{"name": "id", "type": "int64"}],
                                       "features": features,
                                       "expectations": {"vectors": {"embedding": {"drift": False}}} if name == "a"
                                       else {}})


def _write_round(store: FeatureStore, r: int) -> dict[str, int]:
    """Round ``r``: every group gets a commit whose rows all hold ``round = r``; returns the commits."""
    out = {}
    for name in ("a", "b", "c"):
        cols: dict[str, Any] = {"id": pa.array(range(4), pa.int64()), "event_time": _times(4, T0 + timedelta(hours=r)),
                                "round": pa.array([r] * 4, pa.int64())}
        if name == "a":
            values = [x for i in range(4) for x in (float(i + 1), float(r + 1))]
            cols["embedding"] = pa.FixedSizeListArray.from_arrays(pa.array(values, pa.float32()), 2)
        out[name] = store.feature_group(name).insert(pa.table(cols)).commit
    return out


@pytest.mark.slow
def test_hot_reload_under_concurrent_requests_never_mixes_commits(tmp_path: Any) -> None:
    """A real server process reloads a service's three groups while clients ask it: every answer's parts
    come from one snapshot (one generation has one set of commits), and each part's values are those
    of the commit the answer names."""
    import os
    import subprocess
    import sys
    import threading
    import time

    import httpx

    from tests.online_helpers import free_port

    store = FeatureStore(tmp_path / "store")
    store.apply([_trio_spec(n) for n in "abc"])
    store.apply([ServiceSpec.from_dict({"name": "trio", "groups": ["a:1", "b:1", "c:1"]})])
    rounds = {n: {c: 0} for n, c in _write_round(store, 0).items()}  # group -> commit -> round
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "featurestore", "serve", "--root", store.root.uri, "--port",
                             str(port), "--reload-interval", "0.1", "--log-level", "warning"],
                            env={**os.environ, "PYTHONWARNINGS": "ignore"}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    answers: list[dict[str, Any]] = []
    stop = threading.Event()

    def ask() -> None:
        with httpx.Client(base_url=url) as http:
            while not stop.is_set():
                r = http.post("/services/trio/lookup", json={"entities": {"id": [0, 1, 2, 3]}})
                assert r.status_code == 200, r.text
                answers.append(r.json())
                time.sleep(0.01)

    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/health").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            assert time.monotonic() < deadline
            time.sleep(0.1)
        threads = [threading.Thread(target=ask) for _ in range(2)]  # two clients at once
        for t in threads:
            t.start()
        for r in (1, 2):
            commits = _write_round(store, r)
            for n, c in commits.items():
                rounds[n][c] = r
            # a hang guard, not a timing test: the builds run niced, so a busy machine starves them
            deadline = time.monotonic() + 180
            while True:  # the server serves the whole round before the next one is written
                served = {p["feature_group"]: p["commit"] for p in httpx.get(f"{url}/services/trio").json()["parts"]}
                if served == commits:
                    break
                assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
                if time.monotonic() > deadline:  # say why: each group's reload state and the server's log
                    groups = {n: httpx.get(f"{url}/feature-groups/{n}").json() for n in "abc"}
                    proc.terminate()
                    log = proc.communicate(timeout=30)[1].decode()
                    pytest.fail(f"round {r} not served: serving {served}, written {commits}; groups {groups}; "
                                f"server log: {log[-4000:]}")
                time.sleep(0.05)
        time.sleep(0.2)
        stop.set()
        for t in threads:
            t.join(30)
    finally:
        stop.set()
        if proc.poll() is None:
            proc.terminate()
            proc.communicate(timeout=30)
    by_generation: dict[int, list[tuple[str, int]]] = {}
    for doc in answers:
        parts = [(p["feature_group"], p["commit"]) for p in doc["parts"]]
        assert by_generation.setdefault(doc["generation"], parts) == parts  # one snapshot, one set of commits
        for group, commit in parts:
            assert doc["features"][f"{group}__round"] == [rounds[group][commit]] * 4, (group, commit)
            assert doc["found"][group] == [True] * 4
        assert doc["features"]["a__embedding"][0][1] == rounds["a"][dict(parts)["a"]] + 1
    generations = sorted(by_generation)
    assert len(generations) >= 3  # every round was seen while requests ran
    commits = [by_generation[g] for g in generations]
    assert all(all(x[1] <= y[1] for x, y in zip(c0, c1)) for c0, c1 in itertools.pairwise(commits))
    store.close()


def test_openapi_documents_the_service_routes(server: ServerThread) -> None:
    import httpx

    doc = httpx.get(f"{server.url}/openapi.json").json()
    lookup = doc["paths"]["/services/{name}/lookup"]["post"]
    ok = lookup["responses"]["200"]["content"]
    assert {"parts", "found", "features", "generation"} <= set(ok["application/json"]["schema"]["properties"])
    assert "application/vnd.apache.arrow.stream" in ok and "entities" in str(lookup["requestBody"])
    for code in ("401", "404", "413", "415", "422"):
        body = lookup["responses"][code]["content"]["application/json"]["schema"]
        assert body["required"] == ["detail", "error"], code
    for path in ("/services", "/services/{name}"):
        assert "200" in doc["paths"][path]["get"]["responses"]
    assert "features" in str(doc["paths"]["/feature-groups/{name}/lookup"]["post"]["requestBody"])


def test_views_of_older_formats_open_and_are_rebuilt(store: FeatureStore) -> None:
    import json

    from featurestore.online.build import materialize
    from featurestore.online.view import OnlineView

    fg = store.feature_group("items")
    view = store.online("items")
    manifest = view.path / "manifest.json"
    m = json.loads(manifest.read_text())
    old = {k: v for k, v in m.items() if k not in ("vectors", "keys", "key_types", "features")}
    manifest.write_text(json.dumps({**old, "format_version": 2, "key": "item_id", "key_type": "int64"}))
    two = OnlineView(view.path)  # a format-2 view (one vector, one key) still opens and answers
    assert list(two.vectors) == ["embedding"] and two.get([0]).found.tolist() == [True]
    assert two.features == ["embedding", "price"] and two.info()["features"] == two.features
    path = materialize(fg, view.commit)  # and is rebuilt in the current format
    assert json.loads((path / "manifest.json").read_text())["format_version"] == 3


def test_the_console_shows_groups_of_scalars_and_composite_keys(store: FeatureStore) -> None:
    """The console's pages list and describe every group, a composite key and a group of scalars too;
    a map of a group with no vector is refused with a message, not a traceback."""
    from featurestore.console import insights
    from featurestore.console import projection as pj
    from featurestore.errors import InvalidQuery

    fg = store.feature_group("user_day")
    names = {g.spec.name for g in insights.summaries(store)}
    assert {"users", "user_day", "items"} <= names
    assert len(insights.history(store, fg)) == len(fg.history())
    view = store.online("user_day")
    rows = np.arange(min(5, view.rows))
    keys = view.keys_at(rows)
    assert all(isinstance(k, tuple) and len(k) == 2 for k in keys)
    assert view.get(keys).found.all()
    with pytest.raises(InvalidQuery, match="no vector feature"):
        pj.projection(fg, view)
