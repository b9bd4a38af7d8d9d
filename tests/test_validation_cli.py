"""``featurestore validate``: pass/fail per expectation with observed values, exit codes, an HTML report."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pyarrow as pa
import pytest

from featurestore import FeatureStore, load_specs
from featurestore.cli import main
from tests.conftest import ROOT, SCHEMAS, T0, item_batch


@pytest.fixture
def root(tmp_path):
    """A warn-policy store with a good commit (1) and a commit of vectors of norm 2 (2)."""
    store = FeatureStore(tmp_path / "s")
    store.apply([dataclasses.replace(s, policy="warn") for s in load_specs(SCHEMAS)])
    fg = store.feature_group("item_embeddings", 1)
    fg.insert(item_batch(60), cutoff=T0)
    t = item_batch(60, seed=1, start=100)
    v = t["embedding"].combine_chunks().values.to_numpy() * 2
    fg.insert(t.set_column(1, "embedding", pa.FixedSizeListArray.from_arrays(pa.array(v), 64)),
              cutoff=T0 + timedelta(days=1))
    store.close()
    return str(tmp_path / "s")


def test_good_commit_exits_0_and_prints_every_check(root, capsys, tmp_path):
    html = tmp_path / "r.html"
    assert main(["validate", "item_embeddings", "--root", root, "--commit", "1", "--html", str(html)]) == 0
    out = capsys.readouterr().out
    assert "passed: 0 of" in out
    for name in ("rows: row count", "embedding: norm between", "embedding: drift (mean cosine)",
                 "embedding: collapse (effective rank)"):
        assert name in out
    page = html.read_text()
    assert page.startswith("<!doctype html>") and "embedding: norm between" in page and "passed" in page


def test_bad_commit_exits_1_shows_the_observed_value_and_stores_html(root, capsys):
    assert main(["validate", "item_embeddings", "--root", root, "--version", "1", "--commit", "2"]) == 1
    captured = capsys.readouterr()
    line = next(x for x in captured.out.splitlines() if "embedding: norm between" in x)
    assert line.startswith("FAIL") and "60 of 60 unexpected" in line
    html_path = captured.err.split("html:")[1].strip()
    assert "FAIL" in Path(html_path).read_text()


def test_json_output_and_the_report_lands_in_the_sql_view(root, capsys):
    assert main(["validate", "item_embeddings", "--root", root, "--json"]) == 1  # newest = commit 2
    doc = json.loads(capsys.readouterr().out)
    assert doc["commit"] == 2 and doc["mode"] == "commit" and doc["status"] == "failed"
    store = FeatureStore(root)
    modes = store.sql("SELECT mode, count(*) FROM validation_reports GROUP BY mode ORDER BY mode").fetchall()
    assert modes == [("commit", 1), ("insert", 2)]


def test_unknown_feature_group_or_commit_is_a_clear_error(root, capsys):
    assert main(["validate", "nope", "--root", root]) == 2
    assert "no feature group 'nope'" in capsys.readouterr().err
    assert main(["validate", "item_embeddings", "--root", root, "--commit", "9"]) == 2
    assert "no commit 9" in capsys.readouterr().err


def test_console_script_runs_in_a_real_process(root):
    out = subprocess.run([sys.executable, "-m", "featurestore", "validate", "item_embeddings", "--root", root,
                          "--commit", "1"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "passed" in out.stdout
    assert "Calculating Metrics" not in out.stderr  # great_expectations' progress bars are off
