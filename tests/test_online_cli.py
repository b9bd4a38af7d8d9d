"""The online-serving commands: materialize, lookup, nearest (locally and against a running server)."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from featurestore import FeatureStore
from featurestore.cli import main
from featurestore.server.app import create_app
from tests.online_helpers import ServerThread, batch, keys_for, spec


@pytest.fixture
def root(tmp_path: Path) -> str:
    s = FeatureStore(tmp_path / "store")
    s.apply([spec("items"), spec("users", key_type="int64")])
    s.feature_group("items").insert(batch(keys_for(50, "string"), seed=1))
    s.feature_group("users").insert(batch(keys_for(5, "int64"), seed=2))
    s.close()
    return str(tmp_path / "store")


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_materialize_lookup_nearest(root: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "materialize", "items", "--root", root, "--json")
    manifest = json.loads(out)  # --json: stdout holds only the JSON (progress goes to stderr)
    assert code == 0 and manifest["rows"] == 50 and manifest["commit"] == 1
    assert Path(manifest["path"], "vectors.npy").exists()
    code, out, _ = run(capsys, "materialize", "items", "--root", root)
    assert code == 0 and "50 rows x 8, exact search" in out

    code, out, _ = run(capsys, "lookup", "items", "k1", "zz", "--columns", "n_events", "--root", root, "--json")
    doc = json.loads(out)
    assert code == 1 and doc["found"] == [True, False] and doc["missing"] == ["zz"]  # 1: some keys missing
    store = FeatureStore(root)
    assert doc["columns"]["n_events"][0] == store.online("items").get(["k1"], columns=["n_events"]).columns[
        "n_events"][0]
    code, out, _ = run(capsys, "lookup", "users", "7", "--root", root)
    assert code == 0 and "True" in out

    code, out, _ = run(capsys, "nearest", "items", "--key", "k1", "--k", "3", "--exclude", "k1", "--root", root,
                       "--json")
    want = store.online("items").nearest(key="k1", k=3, exclude=["k1"])
    assert code == 0 and json.loads(out)["keys"] == want.keys
    code, out, _ = run(capsys, "nearest", "items", "--key", "7", "--query-group", "users", "--k", "2",
                       "--filter", '{"n_events": {"ge": 10}}', "--root", root, "--json")
    assert code == 0 and len(json.loads(out)["keys"]) == 2
    code, out, _ = run(capsys, "nearest", "items", "--vector", ",".join(["1"] * 8), "--root", root)
    assert code == 0 and out.splitlines()[0].split() == ["rank", "key", "score"]
    store.close()


@pytest.mark.parametrize(("argv", "says"), [
    (["lookup", "users", "seven"], "integer keys"),
    (["nearest", "items", "--key", "nope"], "no key 'nope'"),
    (["nearest", "items", "--vector", "1,2"], "8 numbers"),
    (["nearest", "items", "--vector", "a,b"], "--vector"),
    (["nearest", "items", "--key", "k1", "--filter", "{bad"], "--filter must be JSON"),
    (["nearest", "items", "--key", "k1", "--filter", '{"zz": 1}'], "no column 'zz'"),
    (["materialize", "nope"], "no feature group 'nope'"),
    (["materialize", "items", "--commit", "9"], "no commit 9"),
    (["serve", "--host", "0.0.0.0", "--token", ""], "without a bearer token"),
])
def test_bad_input_is_one_line_and_exit_2(root: str, capsys: pytest.CaptureFixture[str],
                                          monkeypatch: pytest.MonkeyPatch, argv: list[str], says: str) -> None:
    monkeypatch.delenv("FEATURESTORE_TOKEN", raising=False)
    code, _, err = run(capsys, *argv, "--root", root)
    assert code == 2 and err.startswith("error: ") and says in err


def test_lookup_and_nearest_through_a_server(root: str, capsys: pytest.CaptureFixture[str]) -> None:
    store = FeatureStore(root)
    with ServerThread(create_app(store, token="tk")) as srv:
        code, out, _ = run(capsys, "lookup", "users", "7", "8", "--url", srv.url, "--token", "tk", "--json")
        assert code == 1 and json.loads(out)["found"] == [True, False]
        code, out, _ = run(capsys, "nearest", "items", "--key", "7", "--query-group", "users", "--k", "3",
                           "--url", srv.url, "--token", "tk", "--json")
        local = store.online("items").nearest(key=7, query_view=store.online("users"), k=3)
        assert code == 0 and json.loads(out)["keys"] == local.keys
        code, _, err = run(capsys, "lookup", "items", "k1", "--url", srv.url)
        assert code == 2 and "token" in err
        assert httpx.get(f"{srv.url}/health").status_code == 200
    store.close()


@pytest.mark.parametrize("argv", [
    ["lookup", "users", "seven"],
    ["nearest", "users", "--key", "seven"],
    ["nearest", "items", "--vector", "1,2"],
    ["nearest", "items", "--key", "k1", "--filter", "{bad"],
    ["nearest", "items", "--key", "k1", "--k", "0"],
    ["nearest", "items", "--key", "k1", "--exclude", "x", "--query-group", "users"],
])
def test_a_refused_request_writes_nothing(root: str, capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    from tests.conftest import tree_digest

    before = tree_digest(Path(root))
    code, _, err = run(capsys, *argv, "--root", root)
    assert code == 2 and err.startswith("error: ")
    assert tree_digest(Path(root)) == before  # no view was built to answer a request that is refused
