"""Every bad input of docs/errors.md's table that a user can send, through each door that takes it (the
library, the CLI, HTTP): a typed error naming the offending thing, and the store byte-identical."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from featurestore import FeatureStore, errors
from featurestore.cli import main
from featurestore.server.app import create_app
from featurestore.server.reload import ReloadPolicy
from tests.conftest import SCHEMAS, T0, item_batch, tree_digest
from tests.online_helpers import ServerThread

TOKEN = "bad-inputs"
UTC_US = pa.timestamp("us", tz="UTC")


@dataclass(frozen=True)
class Case:
    error: type[errors.FeatureStoreError]
    names: str  # what the message must name
    library: Callable[[FeatureStore, Path], Any] | None = None
    cli: list[str] | None = None
    http: tuple[str, str, Any] | None = None  # method, path, JSON body
    status: int = 0


def _bad_spec(tmp: Path) -> str:
    doc = yaml.safe_load((SCHEMAS / "item_embeddings.v1.yaml").read_text())
    doc["features"][0]["dim"] = "sixty-four"
    path = tmp / "item_embeddings.v1.yaml"
    path.write_text(yaml.safe_dump(doc))
    return str(path)


def _changed_spec(tmp: Path) -> str:
    doc = yaml.safe_load((SCHEMAS / "item_embeddings.v1.yaml").read_text())
    doc["features"][0]["dim"] = 32
    (tmp / "changed").mkdir(exist_ok=True)
    path = tmp / "changed" / "item_embeddings.v1.yaml"
    path.write_text(yaml.safe_dump(doc))
    return str(path)


def _spine_without_time(tmp: Path) -> str:
    path = tmp / "spine.parquet"
    pq.write_table(pa.table({"item_id": ["i1"], "when": pa.array([T0], UTC_US)}), path)
    return str(path)


def _without(column: str) -> pa.Table:
    batch = item_batch(3)
    return batch.drop_columns([column])


CASES = {
    "SpecError": Case(errors.SpecError, "dim", library=lambda s, t: s.apply(_bad_spec(t)),
                      cli=["apply", "{bad_spec}"]),
    "SpecConflict": Case(errors.SpecConflict, "item_embeddings v1", library=lambda s, t: s.apply(_changed_spec(t)),
                         cli=["apply", "{changed_spec}"]),
    "FeatureGroupNotFound": Case(errors.FeatureGroupNotFound, "nope", library=lambda s, t: s.feature_group("nope"),
                                 cli=["show", "nope"], http=("GET", "/feature-groups/nope", None), status=404),
    "CommitNotFound": Case(errors.CommitNotFound, "99",
                           library=lambda s, t: s.feature_group("item_embeddings", 1).read(commit=99),
                           cli=["sql", "SELECT count(*) FROM item_embeddings", "--commit", "item_embeddings=99"]),
    "KeyNotFound": Case(errors.KeyNotFound, "nope",
                        library=lambda s, t: s.online("item_embeddings").nearest(key="nope"),
                        cli=["nearest", "item_embeddings", "--key", "nope"],
                        http=("POST", "/feature-groups/item_embeddings/nearest", {"key": "nope"}), status=404),
    "InvalidQuery": Case(errors.InvalidQuery, "string", library=lambda s, t: s.online("item_embeddings").get([7]),
                         cli=None, http=("POST", "/feature-groups/item_embeddings/lookup", {"keys": [7]}), status=422),
    "InvalidQuery (vector)": Case(errors.InvalidQuery, "64",
                                  library=lambda s, t: s.online("item_embeddings").nearest([1.0, 2.0]),
                                  cli=["nearest", "item_embeddings", "--vector", "1,2"],
                                  http=("POST", "/feature-groups/item_embeddings/nearest", {"vector": [1.0, 2.0]}),
                                  status=422),
    "TrainingSetNotFound": Case(errors.TrainingSetNotFound, "nope", library=lambda s, t: s.load_training_set("nope")),
    "SchemaMismatch": Case(errors.SchemaMismatch, "n_events",
                           library=lambda s, t: s.feature_group("item_embeddings", 1).insert(_without("n_events"))),
    "BadVector": Case(errors.BadVector, "embedding", library=lambda s, t: s.feature_group("item_embeddings", 1).insert(
        item_batch(3, dim=8), cutoff=T0)),
    "SpineError": Case(errors.SpineError, "event_time",
                       library=lambda s, t: s.training_set(pa.table({"item_id": ["i1"]}), ["item_embeddings:1"]),
                       cli=["training-set", "--spine", "{spine}", "--feature", "item_embeddings:1", "--out",
                            "{out}"]),
    "QueryError": Case(errors.QueryError, "nope_column",
                       library=lambda s, t: s.sql("SELECT nope_column FROM item_embeddings").fetchall(),
                       cli=["sql", "SELECT nope_column FROM item_embeddings"]),
}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Any:
    tmp = tmp_path_factory.mktemp("bad")
    store = FeatureStore(tmp / "s")
    store.apply(SCHEMAS)
    store.feature_group("item_embeddings", 1).insert(item_batch(20), cutoff=T0)
    app = create_app(store, groups=[("item_embeddings", 1)], token=TOKEN, policy=ReloadPolicy(interval=0))
    with ServerThread(app) as srv:
        srv.store, srv.tmp = store, tmp
        yield srv
    store.close()


@pytest.mark.parametrize("name", list(CASES))
def test_a_bad_input_is_a_typed_error_naming_it_and_changes_nothing(served: Any, name: str, capsys) -> None:
    case = CASES[name]
    root, tmp = served.tmp / "s", served.tmp
    before = tree_digest(root)
    if case.library is not None:
        with pytest.raises(case.error, match=case.names):
            case.library(served.store, tmp)
        assert tree_digest(root) == before, "the library call changed the store"
    if case.cli is not None:
        args = [a.format(bad_spec=_bad_spec(tmp), changed_spec=_changed_spec(tmp), spine=_spine_without_time(tmp),
                         out=tmp / "out.parquet") for a in case.cli]
        capsys.readouterr()
        assert main([*args, "--root", str(root)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and case.names in err and "Traceback" not in err, err
        assert tree_digest(root) == before, "the CLI changed the store"
    if case.http is not None:
        method, path, body = case.http
        r = httpx.request(method, f"{served.url}{path}", json=body, headers={"Authorization": f"Bearer {TOKEN}"})
        assert r.status_code == case.status, r.text
        assert r.json()["error"] == case.error.__name__ and case.names in r.json()["detail"], r.text
        assert tree_digest(root) == before, "the request changed the store"
