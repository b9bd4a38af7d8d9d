"""`featurestore demo --small`: the whole tour on a small data set."""

from __future__ import annotations

import re

from featurestore import FeatureStore
from featurestore.cli import main


def test_small_demo_runs_end_to_end(tmp_path, capsys):
    root = tmp_path / "demo"
    assert main(["demo", "--small", "--root", str(root), "--quiet", "--days", "3"]) == 0
    out = capsys.readouterr().out
    assert "apply: item_embeddings v1 created" in out
    assert out.count("purchase_embeddings cutoff") == 3
    assert "already done" in out and "Planted taste" in out and "<- planted taste" in out
    assert "picked from 300 sampled users" in out
    assert out.count("<- planted taste") >= 5  # the showcase is a user the model learned well
    hits, chance = map(int, re.search(r"(\d+)% of their 10 nearest items .* \(chance: (\d+)%\)", out).groups())
    assert hits > 1.5 * chance
    picture = root / "item_embeddings_map.png"
    assert f"projector map of item_embeddings (PCA, coloured by n_events): {picture}" in out
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    store = FeatureStore(root)
    assert len(store.feature_group("user_embeddings", 1).history()) == 4   # create + 3 runs
    store.close()
    # running it again starts fresh
    assert main(["demo", "--small", "--root", str(root), "--quiet", "--days", "1"]) == 0
    assert len(FeatureStore(root).feature_group("user_embeddings", 1).history()) == 2


def _snapshot(root):
    return {str(p.relative_to(root)): p.read_bytes() if p.is_file() else None for p in sorted(root.rglob("*"))}


def test_demo_refuses_a_folder_it_did_not_make(tmp_path, capsys):
    root = tmp_path / "real"
    root.mkdir()
    (root / "precious.parquet").write_bytes(b"not the demo's")
    before = _snapshot(root)
    assert main(["demo", "--small", "--root", str(root), "--quiet", "--days", "1"]) == 2
    err = capsys.readouterr().err
    assert "not empty" in err and str(root) in err and "--root" in err
    assert _snapshot(root) == before


def test_demo_refuses_a_demo_store_with_foreign_entries(tmp_path, capsys):
    root = tmp_path / "demo"
    assert main(["demo", "--small", "--root", str(root), "--quiet", "--days", "1"]) == 0
    (root / "mine.txt").write_text("added by the user")
    before = _snapshot(root)
    capsys.readouterr()
    assert main(["demo", "--small", "--root", str(root), "--quiet", "--days", "1"]) == 2
    assert "mine.txt" in capsys.readouterr().err
    assert _snapshot(root) == before
