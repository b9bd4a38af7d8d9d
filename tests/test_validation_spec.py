"""The expectations block: its schema and defaults, errors naming file and field, the stored GE suite."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from featurestore import FeatureStore, SpecError, ValidationError, load_spec
from featurestore.validation import parse_expectations, suite_for
from tests.conftest import ROOT, SCHEMAS, run_python


def _spec_file(tmp_path, expectations, name="item_embeddings"):
    doc = yaml.safe_load((SCHEMAS / f"{name}.v1.yaml").read_text())
    doc["expectations"] = expectations
    path = tmp_path / f"{name}.v1.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_shipped_schemas_declare_expectations():
    for path in sorted(SCHEMAS.glob("*.yaml")):
        exp = parse_expectations(load_spec(path))
        (vec,) = exp.vectors
        assert vec.dim == 64 and vec.norm is not None and vec.norm.min == pytest.approx(0.999)
        assert vec.drift is not None and vec.drift.min_mean_cosine == 0.5 and vec.collapse is not None
        if exp is not None and path.name.startswith("item_"):  # a few rare items may share a vector
            assert vec.duplicates_max_share == 0.05 and vec.drift.min_neighbor_overlap == 0.2
        assert {c.column for c in exp.columns} == {"n_events", "last_event_time"}


def test_defaults_when_block_is_absent(tmp_path):
    exp = parse_expectations(load_spec(_spec_file(tmp_path, None)))
    assert exp.row_count.min == 1 and exp.keys_not_null and exp.keys_unique
    (vec,) = exp.vectors
    assert vec.finite and vec.norm.min == pytest.approx(0.999)  # normalized: true -> unit norm by default
    assert vec.drift.min_mean_cosine == 0.5 and vec.coverage is None
    assert vec.collapse.min_effective_rank == 4


def test_checks_can_be_switched_off(tmp_path):
    exp = parse_expectations(load_spec(_spec_file(tmp_path, {"vectors": {"embedding": {
        "drift": False, "collapse": False, "duplicates": False, "norm": False, "norm_distribution": False}}})))
    (vec,) = exp.vectors
    assert (vec.drift, vec.collapse, vec.duplicates_max_share, vec.norm, vec.norm_distribution) == (None,) * 5


@pytest.mark.parametrize("block, field", [
    ({"row_cnt": {"min": 1}}, "expectations"),
    ({"row_count": {"min": 5, "max": 1}}, "expectations.row_count"),
    ({"row_count": {"min": "many"}}, "expectations.row_count.min"),
    ({"columns": {"nope": {"min": 0}}}, "expectations.columns.nope"),
    ({"columns": {"embedding": {"min": 0}}}, "expectations.columns.embedding"),
    ({"columns": {"n_events": {"in_set": ["a"]}}}, "expectations.columns.n_events.in_set"),
    ({"columns": {"n_events": {}}}, "expectations.columns.n_events"),
    ({"columns": {"last_event_time": {"min": "yesterday"}}}, "expectations.columns.last_event_time.min"),
    ({"vectors": {"other": {}}}, "expectations.vectors"),
    ({"vectors": {"embedding": {"dim": 32}}}, "expectations.vectors.embedding.dim"),
    ({"vectors": {"embedding": {"drift": {"min_mean_cos": 0.5}}}}, "expectations.vectors.embedding.drift"),
    ({"vectors": {"embedding": {"drift": {"min_mean_cosine": 2}}}},
     "expectations.vectors.embedding.drift.min_mean_cosine"),
    ({"vectors": {"embedding": {"drift": {"k": 10, "sample": 10}}}}, "expectations.vectors.embedding.drift.k"),
    ({"vectors": {"embedding": {"coverage": {"expected": "yesterday"}}}},
     "expectations.vectors.embedding.coverage.expected"),
    ({"vectors": {"embedding": {"norm": {"mostly": 1.5, "min": 0}}}}, "expectations.vectors.embedding.norm.mostly"),
    ({"keys": {"not_null": "yes"}}, "expectations.keys.not_null"),
])
def test_bad_expectations_name_file_and_field(tmp_path, block, field):
    path = _spec_file(tmp_path, block)
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert info.value.field == field
    assert str(path) in str(info.value)


def test_bad_expectations_are_refused_by_apply_and_nothing_is_created(tmp_path):
    path = _spec_file(tmp_path, {"columns": {"n_events": {"min": 3, "max": 1}}})
    store = FeatureStore(tmp_path / "s")
    with pytest.raises(SpecError, match="expectations.columns.n_events"):
        store.apply(path)
    assert not (tmp_path / "s" / "feature_groups").exists()


def test_suite_is_stored_beside_the_table_and_round_trips_through_great_expectations(store):
    from featurestore.validation import gx

    spec = store.feature_group("item_embeddings", 1).spec
    stored = json.loads(Path(store.root.base, "feature_groups/item_embeddings/v1/_suite.json").read_text())
    assert stored == json.loads(json.dumps(suite_for(spec)))
    back = gx.suite_json(stored)
    assert back["name"] == "item_embeddings_v1"
    assert [(e["type"], e["kwargs"], e["meta"]["check"]) for e in back["expectations"]] == \
        [(e["type"], e["kwargs"], e["meta"]["check"]) for e in stored["expectations"]]
    types = {e["type"] for e in stored["expectations"]}
    assert {"expect_table_row_count_to_be_between", "expect_column_values_to_be_unique",
            "expect_column_values_to_not_be_null", "expect_column_values_to_be_between"} <= types


def test_great_expectations_errors_are_translated():
    import pandas as pd

    from featurestore.validation import gx

    frame = pd.DataFrame({"a": [1.0, 2.0]})
    unknown = {"name": "x", "expectations": [{"type": "expect_no_such_thing", "kwargs": {}, "meta": {"check": "?"}}]}
    bad_kwargs = {"name": "x", "expectations": [{"type": "expect_column_values_to_be_between",
                                                 "kwargs": {"column": "a", "min_value": "zero"},
                                                 "meta": {"check": "a: between"}}]}
    for doc in (unknown, bad_kwargs):
        with pytest.raises(ValidationError, match="suite 'x'"):
            gx.run(doc, frame)


def test_import_featurestore_does_not_import_great_expectations():
    code = ("import sys, featurestore, featurestore.validation, featurestore.cli\n"
            "bad = sorted(m for m in sys.modules if m.startswith('great_expectations'))\n"
            "print(len(bad)); sys.exit(1 if bad else 0)")
    out = subprocess.run([sys.executable, "-X", "importtime", "-c", code], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stdout
    assert "great_expectations" not in out.stderr  # -X importtime lists every module imported


def test_reading_and_querying_do_not_import_great_expectations(tmp_path):
    store = FeatureStore(tmp_path / "s")
    store.apply(SCHEMAS)
    store.close()
    code = ("import sys\nfrom featurestore import FeatureStore\n"
            f"s = FeatureStore({str(tmp_path / 's')!r})\n"
            "fg = s.feature_group('item_embeddings', 1); fg.read(); fg.history()\n"
            "s.sql('SELECT count(*) FROM item_embeddings').fetchall()\n"
            "s.sql('SELECT count(*) FROM validation_reports').fetchall()\n"
            "sys.exit(1 if any(m.startswith('great_expectations') for m in sys.modules) else 0)")
    out = run_python(code, timeout=120)
    assert out.returncode == 0, out.stderr


def test_fields_left_out_keep_their_defaults_and_null_switches_one_off(tmp_path):
    exp = parse_expectations(load_spec(_spec_file(tmp_path, {"vectors": {"embedding": {
        "drift": {"k": 5, "min_neighbor_overlap": None}, "collapse": {"sample": 500}}}})))
    (vec,) = exp.vectors
    assert (vec.drift.k, vec.drift.min_mean_cosine, vec.drift.min_neighbor_overlap) == (5, 0.5, None)
    assert (vec.collapse.sample, vec.collapse.min_effective_rank, vec.collapse.max_mean_cosine) == (500, 4, 0.9)
