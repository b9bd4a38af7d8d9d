"""Specs: parsing, canonical form, and errors that name the file and the field."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest
import yaml

from featurestore import FeatureGroupSpec, SpecError, load_spec, load_specs
from tests.conftest import SCHEMAS

GOOD = {
    "name": "things",
    "version": 2,
    "entity_keys": [{"name": "thing_id", "type": "int64"}],
    "features": [
        {"name": "vec", "type": "vector", "dim": 8, "metric": "dot", "normalized": False},
        {"name": "score", "type": "float64"},
    ],
}


def write(tmp_path: Path, doc: dict, name: str = "things.v2.yaml") -> Path:
    p = tmp_path / name
    p.write_text(yaml.safe_dump(doc))
    return p


def test_shipped_specs_parse_to_64d_cosine_normalized():
    specs = {s.name: s for s in load_specs(SCHEMAS)}
    assert set(specs) == {"item_embeddings", "user_embeddings"}
    for spec in specs.values():
        (vec,) = spec.vector_features
        assert (vec.dim, vec.metric, vec.normalized) == (64, "cosine", True)
        assert spec.arrow_schema().field("embedding").type == pa.list_(pa.field("item", pa.float32()), 64)
        assert spec.policy == "strict"


def test_round_trip_through_dict_keeps_spec_equal(tmp_path):
    spec = load_spec(write(tmp_path, GOOD))
    again = FeatureGroupSpec.from_dict(spec.to_dict())
    assert again == spec
    assert again.fingerprint() == spec.fingerprint()


def test_specs_are_frozen(tmp_path):
    spec = load_spec(write(tmp_path, {**GOOD, "expectations": {"row_count": {"min": 1}}}))
    with pytest.raises(AttributeError):
        spec.name = "x"  # type: ignore[misc]
    with pytest.raises(TypeError):
        spec.expectations["row_count"] = 3  # type: ignore[index]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"name": "Bad-Name"}, "name"),
        ({"version": 0}, "version"),
        ({"version": "one"}, "version"),
        ({"entity_keys": []}, "entity_keys"),
        ({"entity_keys": [{"name": "k", "type": "float"}]}, "entity_keys[0].type"),
        ({"features": [{"name": "v", "type": "vector"}]}, "features[0].dim"),
        ({"features": [{"name": "v", "type": "vector", "dim": 4, "metric": "hamming"}]}, "features[0].metric"),
        ({"features": [{"name": "v", "type": "vector", "dim": 4, "normalized": "yes"}]},
         "features[0].normalized"),
        ({"features": [{"name": "v", "type": "complex"}]}, "features[0].type"),
        ({"features": [{"name": "s", "type": "int64", "dim": 3}]}, "features[0].dim"),
        ({"features": [{"name": "thing_id", "type": "int64"}]}, "features"),
        ({"policy": "lenient"}, "policy"),
        ({"online": {"index": "annoy"}}, "online.index"),
        ({"online": {"vector": "score"}}, "online.vector"),
        ({"colour": "blue"}, None),
    ],
)
def test_bad_field_names_file_and_field(tmp_path, change, field):
    path = write(tmp_path, {**GOOD, **change})
    with pytest.raises(SpecError) as err:
        load_spec(path)
    assert str(path) in str(err.value)
    if field:
        assert err.value.field == field
        assert field in str(err.value)


def test_missing_required_field(tmp_path):
    doc = dict(GOOD)
    del doc["features"]
    with pytest.raises(SpecError, match="features: is required"):
        load_spec(write(tmp_path, doc))


def test_file_name_must_agree_with_spec(tmp_path):
    with pytest.raises(SpecError, match="file name says"):
        load_spec(write(tmp_path, GOOD, name="things.v3.yaml"))


def test_invalid_yaml_and_missing_file(tmp_path):
    bad = tmp_path / "x.v1.yaml"
    bad.write_text("name: [unclosed")
    with pytest.raises(SpecError, match="not valid YAML"):
        load_spec(bad)
    with pytest.raises(SpecError, match="no such file"):
        load_specs(tmp_path / "nowhere")


def test_same_name_version_twice_in_a_folder(tmp_path):
    write(tmp_path, GOOD)
    write(tmp_path, GOOD, name="copy.yaml")
    with pytest.raises(SpecError, match="also defined"):
        load_specs(tmp_path)


def test_a_spec_that_is_not_utf8_is_a_spec_error_naming_the_file(tmp_path, capsys):
    from featurestore import FeatureStore
    from featurestore.cli import main

    bad = tmp_path / "specs" / "things.v2.yaml"
    bad.parent.mkdir()
    bad.write_bytes(yaml.safe_dump(GOOD).encode() + b"\n# caf\xe9\n")  # latin-1, not UTF-8
    with pytest.raises(SpecError, match="not UTF-8") as err:
        load_spec(bad)
    assert str(bad) in str(err.value)
    root = tmp_path / "store"
    with pytest.raises(SpecError, match="not UTF-8"):
        FeatureStore(root).apply(bad.parent)
    assert not root.exists()  # nothing was created
    assert main(["apply", str(bad.parent), "--root", str(root)]) == 2
    captured = capsys.readouterr()
    assert "not UTF-8" in captured.err and "Traceback" not in captured.err
