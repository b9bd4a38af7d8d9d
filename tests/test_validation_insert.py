"""Every insert validates before it commits: strict rejects and leaves the table as it was, warn records."""

from __future__ import annotations

import dataclasses
import json
from datetime import timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from featurestore import FeatureStore, ValidationFailed, load_specs
from featurestore.validation import ValidationReport, load
from tests.conftest import SCHEMAS, T0, item_batch, tree_digest


def off_norm(n: int = 60, seed: int = 0, start: int = 0) -> pa.Table:
    """Vectors of norm 2 where the spec says unit vectors: only the validation catches it."""
    t = item_batch(n, seed=seed, start=start)
    v = t["embedding"].combine_chunks().values.to_numpy().reshape(n, 64) * 2
    return t.set_column(1, "embedding", pa.FixedSizeListArray.from_arrays(pa.array(v.ravel()), 64))


def test_passing_insert_links_its_report_from_the_commit(store):
    fg = store.feature_group("item_embeddings", 1)
    commit = fg.insert(item_batch(60), cutoff=T0)
    assert commit.extra["validation_status"] == "passed"
    assert commit.extra["validation_policy"] == "strict"
    report = load(store.root, commit.extra["validation_report"])
    assert report.success and report.committed and report.commit == commit.commit
    assert report.row_count == 60 and report.mode == "insert"
    assert fg.history()[-1].extra["validation_report"] == report.report_id


def test_strict_failure_raises_commits_nothing_and_keeps_the_report(tmp_path, store):
    fg = store.feature_group("item_embeddings", 1)
    fg.insert(item_batch(60), cutoff=T0)
    table_dir = Path(store.root.base) / store.table_path("item_embeddings", 1)
    before = tree_digest(table_dir)
    with pytest.raises(ValidationFailed) as info:
        fg.insert(off_norm(60, start=100), cutoff=T0 + timedelta(days=1))
    assert tree_digest(table_dir) == before  # byte-for-byte: no data file, no log entry
    assert fg.commit_of() == 1
    report = info.value.report
    assert isinstance(report, ValidationReport) and not report.success and not report.committed
    assert "embedding: norm between" in str(info.value) and "Nothing was committed" in str(info.value)
    stored = load(store.root, report.report_id)
    assert stored == report
    assert {c.name for c in stored.failed} >= {"embedding: norm between", "embedding: norm distribution"}


def test_warn_policy_commits_and_records_the_failure(tmp_path):
    store = FeatureStore(tmp_path / "s")
    store.apply([dataclasses.replace(s, policy="warn") for s in load_specs(SCHEMAS)])
    fg = store.feature_group("item_embeddings", 1)
    commit = fg.insert(off_norm(60), cutoff=T0)
    assert commit.extra["validation_status"] == "failed" and commit.extra["validation_policy"] == "warn"
    report = load(store.root, commit.extra["validation_report"])
    assert report.committed and report.commit == commit.commit and not report.success
    assert fg.count() == 60
    rows = store.sql("SELECT status, committed, \"commit\" FROM validation_reports").fetchall()
    assert rows == [("failed", True, commit.commit)]


def test_report_round_trips_through_json_and_the_sql_view(store):
    fg = store.feature_group("item_embeddings", 1)
    fg.insert(item_batch(60), cutoff=T0)
    with pytest.raises(ValidationFailed):
        fg.insert(off_norm(60), cutoff=T0 + timedelta(days=1))
    files = sorted((Path(store.root.base) / "validation" / "item_embeddings" / "v1").glob("*.json"))
    assert len(files) == 2
    reports = {r.report_id: r for r in (ValidationReport.from_json(f.read_bytes()) for f in files)}
    for r in reports.values():
        assert ValidationReport.from_json(r.to_json()) == r
    view = store.sql("SELECT * FROM validation_reports ORDER BY created_at").to_arrow_table().to_pylist()
    assert [v["report_id"] for v in view] == sorted(reports)
    for row in view:
        r = reports[row["report_id"]]
        assert (row["status"], row["success"], row["committed"], row["commit"]) == \
            (r.status, r.success, r.committed, r.commit)
        assert (row["n_checks"], row["n_failed"], row["row_count"]) == (len(r.checks), len(r.failed), r.row_count)
        assert row["created_at"] == r.created_at
        assert [c["name"] for c in row["checks"]] == [c.name for c in r.checks]
        assert [json.loads(c["observed"]) for c in row["checks"]] == \
            [json.loads(json.dumps(c.to_dict()["observed"])) for c in r.checks]
    failed = store.sql("SELECT name FROM validation_checks WHERE NOT success ORDER BY name").fetchall()
    assert ("embedding: norm between",) in failed


def test_views_exist_before_any_report_and_are_per_store(tmp_path):
    a = FeatureStore(tmp_path / "a")
    a.apply(SCHEMAS)
    assert a.sql("SELECT count(*) FROM validation_reports").fetchall() == [(0,)]
    assert a.sql("SELECT count(*) FROM validation_checks").fetchall() == [(0,)]
    a.feature_group("item_embeddings", 1).insert(item_batch(60), cutoff=T0)
    b = FeatureStore(tmp_path / "b")
    b.apply(SCHEMAS)
    assert a.sql("SELECT count(*) FROM validation_reports").fetchall() == [(1,)]
    assert b.sql("SELECT count(*) FROM validation_reports").fetchall() == [(0,)]


def test_validate_commit_rechecks_a_stored_commit(tmp_path):
    store = FeatureStore(tmp_path / "s")
    store.apply([dataclasses.replace(s, policy="warn") for s in load_specs(SCHEMAS)])
    fg = store.feature_group("item_embeddings", 1)
    fg.insert(item_batch(60), cutoff=T0)
    fg.insert(off_norm(60, seed=1, start=100), cutoff=T0 + timedelta(days=1))
    good, bad = store.validate("item_embeddings", 1, 1), store.validate("item_embeddings", 1, 2)
    assert good.success and good.commit == 1 and good.mode == "commit" and good.base_commit is None
    assert not bad.success and bad.commit == 2 and bad.base_commit == 1 and bad.row_count == 60
    newest = store.validate("item_embeddings")
    assert newest.commit == 2


def test_multiple_rows_per_key_compare_the_newest(store):
    """Drift compares each key's newest row in the batch with its newest row in the previous commit."""
    fg = store.feature_group("item_embeddings", 1)
    t1, t2 = T0, T0 + timedelta(days=1)
    base = item_batch(60, event_time=t1)
    fg.insert(pa.concat_tables([item_batch(60, seed=9, event_time=t1 - timedelta(days=1)), base]))
    c = fg.insert(pa.concat_tables([item_batch(60, seed=5, event_time=t1), item_batch(60, event_time=t2)]))
    report = load(store.root, c.extra["validation_report"])
    drift = next(x for x in report.checks if x.name == "embedding: drift (mean cosine)")
    assert drift.observed["mean_cosine"] == pytest.approx(1.0, abs=1e-6)
    assert np.isclose(report.checks[0].observed, 120)


def test_compound_integer_and_string_keys_validate_and_compare_by_both(tmp_path):
    from featurestore import FeatureGroupSpec

    spec = FeatureGroupSpec.from_dict({
        "name": "pairs", "version": 1,
        "entity_keys": [{"name": "user_id", "type": "int64"}, {"name": "market", "type": "string"}],
        "features": [{"name": "vec", "type": "vector", "dim": 8, "metric": "dot"}],
        "expectations": {"vectors": {"vec": {"drift": {"sample": 100, "k": 5, "min_shared": 10},
                                             "coverage": {"expected": "table", "min_share": 0.5}}}},
    })
    store = FeatureStore(tmp_path / "s")
    store.apply(spec)
    fg = store.feature_group("pairs", 1)
    rng = np.random.default_rng(0)
    v = rng.standard_normal((120, 8)).astype(np.float32)

    def rows(vectors: np.ndarray) -> pa.Table:
        return pa.table({"user_id": pa.array(np.repeat(np.arange(60), 2), pa.int64()),
                         "market": ["de", "fr"] * 60,
                         "vec": pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), 8)})

    fg.insert(rows(v), cutoff=T0)
    c = fg.insert(rows(v * 1.01), cutoff=T0 + timedelta(days=1))
    report = load(store.root, c.extra["validation_report"])
    assert report.success, report.summary()
    by = {x.expectation: x for x in report.checks}
    assert by["vector_drift_mean_cosine"].observed["mean_cosine"] == pytest.approx(1.0, abs=1e-6)
    assert by["vector_drift_mean_cosine"].observed["shared_keys"] == 120
    assert by["entity_coverage"].observed == {"share": 1.0, "present": 120, "expected": 120, "base_commit": 1}
    swapped = np.concatenate([v[1::2], v[0::2]], axis=1).reshape(120, 8)  # de <-> fr vectors per user
    with pytest.raises(ValidationFailed, match="drift"):
        fg.insert(rows(swapped), cutoff=T0 + timedelta(days=2))


def test_dry_run_validate_commits_and_stores_nothing(store):
    fg = store.feature_group("item_embeddings", 1)
    fg.insert(item_batch(60), cutoff=T0)
    root = Path(store.root.base)
    before = tree_digest(root)
    good, bad = fg.check(item_batch(60), cutoff=T0 + timedelta(days=1)), fg.check(off_norm(60), cutoff=T0)
    assert good.success and good.base_commit == 1 and not good.committed
    assert "embedding: norm between" in {c.name for c in bad.failed}
    assert tree_digest(root) == before
    again = store.validate("item_embeddings", commit=1)
    assert again.success and again.commit == 1 and again.mode == "commit"


def test_validation_runs_in_a_python_c_script(tmp_path: Path) -> None:
    """With pyspark installed, importing great_expectations imports Spark Connect, which exits the process
    when the main module has no file (``python -c``): the adapter keeps such scripts alive."""
    import subprocess
    import sys

    script = (
        "from featurestore import FeatureStore\n"
        "from tests.conftest import SCHEMAS, T0, item_batch\n"
        f"s = FeatureStore({str(tmp_path / 's')!r}); s.apply(SCHEMAS)\n"
        "c = s.feature_group('item_embeddings', version=1).insert(item_batch(3), cutoff=T0)\n"
        "print('committed', c.commit)\n"
    )
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=root, timeout=300)
    assert out.returncode == 0 and out.stdout.strip() == "committed 1", out.stderr[-2000:]
