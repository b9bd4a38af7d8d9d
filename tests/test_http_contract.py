"""The HTTP service against its own OpenAPI document: schemathesis (every check, every phase: examples,
coverage, fuzzing, stateful) over a real server on 127.0.0.1, a bounded number of examples per
endpoint, 0 failures.

The path's feature-group name is fixed to a served group, so that lookups and searches reach a view
(generated names are almost never served). The schema is shared by every feature group, so it cannot
state each group's key type, dimension or columns: a request that is valid for the schema but not for
the group gets 422 naming what is wrong, and the positive-data check counts 422 as expected.
A limit exceeded (too many keys, k, a vector's length) is 413.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from featurestore import FeatureStore
from featurestore.server.app import create_app
from featurestore.server.openapi import ERROR_SCHEMA
from featurestore.server.reload import ReloadPolicy
from featurestore.server.wire import Limits
from tests.online_helpers import ServerThread, batch, keys_for, spec

TOKEN = "contract-token"
LIMITS = Limits(max_keys=50, max_k=20, max_vector_length=64, max_body_bytes=100_000)
CONFIG = """
[checks.positive_data_acceptance]
expected-statuses = ["2xx", "401", "404", "422"]
[checks.negative_data_rejection]
expected-statuses = ["400", "401", "404", "405", "413", "415", "422"]
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    root = tmp_path_factory.mktemp("contract")
    store = FeatureStore(root / "store")
    store.apply([spec("items"), spec("users", key_type="int64")])
    store.feature_group("items").insert(batch(keys_for(100, "string"), seed=1))
    store.feature_group("users").insert(batch(keys_for(20, "int64"), seed=2))
    app = create_app(store, token=TOKEN, limits=LIMITS, policy=ReloadPolicy(interval=0))
    with ServerThread(app) as srv:
        srv.root = root
        yield srv
    store.close()


def _schemathesis(server: Any, examples: int, seed: int, config: str) -> subprocess.CompletedProcess[str]:
    path = Path(server.root) / f"schemathesis-{seed}.toml"
    path.write_text(config)
    return subprocess.run(
        [sys.executable, "-m", "schemathesis.cli", "--config-file", str(path), "run",
         f"{server.url}/openapi.json", "--checks", "all", "--max-examples", str(examples), "--seed", str(seed),
         "--generation-database", "none", "--header", f"Authorization: Bearer {TOKEN}", "--no-color",
         "--request-timeout", "30"],
        cwd=server.root, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_schemathesis_finds_no_failure_of_any_check(server: Any) -> None:
    run = _schemathesis(server, 10, 7, CONFIG + '[parameters]\n"path.name" = "items"\n')
    summary = run.stdout[run.stdout.rfind("SUMMARY"):]
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    assert "passed" in summary and "failure" not in summary.lower(), summary


def test_the_schema_declares_every_failure_with_the_error_body(server: Any) -> None:
    doc = httpx.get(f"{server.url}/openapi.json").json()
    for path, item in doc["paths"].items():
        for method, op in item.items():
            statuses = set(op["responses"])
            assert "400" in statuses, (method, path)
            if path != "/health":
                assert "401" in statuses, (method, path)
            if "{name}" in path:
                assert "404" in statuses, (method, path)
            if method == "post":
                assert {"413", "415", "422"} <= statuses, (method, path)
            for status in statuses - {"200"}:
                body = op["responses"][status]["content"]["application/json"]["schema"]
                assert body == ERROR_SCHEMA or body.get("$ref"), (method, path, status)
    assert list(doc["paths"]["/metrics"]["get"]["responses"]["200"]["content"]) == ["text/plain"]
    nearest = doc["paths"]["/feature-groups/{name}/nearest"]["post"]["requestBody"]["content"]["application/json"]
    assert [o["required"] for o in nearest["schema"]["oneOf"]] == [["key"], ["vector"], ["vectors"], ["query"]]


def test_a_wrong_method_gets_405_with_allow(server: Any) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    for method, path, allowed in [("DELETE", "/feature-groups/items/lookup", "POST"),
                                  ("PUT", "/health", "GET"), ("TRACE", "/metrics", "GET")]:
        r = httpx.request(method, f"{server.url}{path}", headers=auth)
        assert r.status_code == 405 and r.headers["allow"] == allowed, (method, path, r.headers)
        assert r.json()["error"] == "HTTPError"
