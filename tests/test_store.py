"""The store: apply (create, idempotent, refused changes), a self-describing registry, lookups."""

from __future__ import annotations

import shutil

import pytest
import yaml

from featurestore import FeatureGroupNotFound, FeatureStore, SpecConflict, SpecError
from tests.conftest import SCHEMAS, T0, item_batch, tree_digest


def test_apply_creates_tables_then_is_a_no_op(tmp_path):
    store = FeatureStore(tmp_path / "s")
    first = store.apply(SCHEMAS)
    assert [(r.name, r.action) for r in first] == [("item_embeddings", "created"), ("user_embeddings", "created"),
                                                   ("recommend", "created")]  # the feature service (services/)
    before = tree_digest(tmp_path / "s")
    again = store.apply(SCHEMAS)
    assert {r.action for r in again} == {"unchanged"}
    assert tree_digest(tmp_path / "s") == before


def test_changed_spec_for_existing_version_is_refused(tmp_path, store):
    spec_dir = tmp_path / "schemas"
    shutil.copytree(SCHEMAS, spec_dir)
    path = spec_dir / "user_embeddings.v1.yaml"
    doc = yaml.safe_load(path.read_text())
    doc["features"][0]["dim"] = 32
    path.write_text(yaml.safe_dump(doc))
    before = tree_digest(tmp_path / "store")
    with pytest.raises(SpecConflict, match=r"bump the version \(v2\)") as err:
        store.apply(spec_dir)
    assert "features" in str(err.value)
    assert tree_digest(tmp_path / "store") == before


def test_a_change_of_descriptions_only_updates_the_registry(tmp_path, store):
    """Descriptions are metadata, not schema: a store made with an older wording takes the new one (and
    its data is untouched); a description change together with a schema change is still refused."""
    fg = store.feature_group("item_embeddings", 1)
    fg.insert(item_batch(5), cutoff=T0)
    rows = fg.read()
    spec_dir = tmp_path / "schemas"
    shutil.copytree(SCHEMAS, spec_dir)
    path = spec_dir / "item_embeddings.v1.yaml"
    doc = yaml.safe_load(path.read_text())
    doc["description"] = "Item vectors; event_time is the run's cutoff."
    doc["features"][0]["description"] = "unit-length item vector"
    path.write_text(yaml.safe_dump(doc))
    table = tmp_path / "store" / "feature_groups" / "item_embeddings" / "v1"
    data_before = tree_digest(table / "_delta_log")
    result = {r.name: r.action for r in store.apply(spec_dir)}
    assert result == {"item_embeddings": "updated", "user_embeddings": "unchanged", "recommend": "unchanged"}
    reopened = FeatureStore(tmp_path / "store")
    spec = reopened.feature_group("item_embeddings", 1).spec
    assert spec.description == doc["description"] and spec.features[0].description == "unit-length item vector"
    assert reopened.feature_group("item_embeddings", 1).read().equals(rows)
    assert tree_digest(table / "_delta_log") == data_before
    assert {r.action for r in reopened.apply(spec_dir)} == {"unchanged"}
    doc["features"][0]["metric"] = "dot"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(SpecConflict, match="changed: features"):
        reopened.apply(spec_dir)


def test_new_version_lives_beside_the_old(tmp_path, store):
    doc = yaml.safe_load((SCHEMAS / "user_embeddings.v1.yaml").read_text())
    doc["version"] = 2
    doc["features"][0]["dim"] = 32
    p = tmp_path / "user_embeddings.v2.yaml"
    p.write_text(yaml.safe_dump(doc))
    assert store.apply(p)[0].action == "created"
    assert store.versions("user_embeddings") == [1, 2]
    assert store.feature_group("user_embeddings").version == 2
    assert store.feature_group("user_embeddings", version=1).spec.vector_features[0].dim == 64


def test_reopening_needs_no_schema_folder(tmp_path, store):
    store.feature_group("item_embeddings").insert(item_batch(5), cutoff=T0)
    reopened = FeatureStore(tmp_path / "store")
    fg = reopened.feature_group("item_embeddings", version=1)
    assert fg.spec == store.feature_group("item_embeddings", version=1).spec
    assert fg.read().num_rows == 5


def test_unknown_feature_group_and_version(store):
    with pytest.raises(FeatureGroupNotFound, match="registered: item_embeddings, user_embeddings"):
        store.feature_group("nope")
    with pytest.raises(KeyError):
        store.feature_group("nope")
    with pytest.raises(FeatureGroupNotFound, match=r"no version 7 \(registered: \[1\]\)"):
        store.feature_group("item_embeddings", version=7)


def test_bad_spec_registers_nothing(tmp_path):
    good = tmp_path / "good"
    shutil.copytree(SCHEMAS, good)
    (good / "zz.v1.yaml").write_text("name: zz\nversion: 1\nentity_keys: [k]\nfeatures: []\n")
    store = FeatureStore(tmp_path / "s")
    with pytest.raises(SpecError, match="zz.v1.yaml: features"):
        store.apply(good)
    assert store.specs() == []


def test_env_var_sets_the_default_root(tmp_path, monkeypatch):
    monkeypatch.setenv("FEATURESTORE_ROOT", str(tmp_path / "env-root"))
    store = FeatureStore()
    assert store.root.uri == str(tmp_path / "env-root")


def test_file_uri_root(tmp_path):
    store = FeatureStore(f"file://{tmp_path}/u")
    store.apply(SCHEMAS)
    assert (tmp_path / "u" / "feature_groups" / "item_embeddings" / "v1" / "_delta_log").is_dir()

