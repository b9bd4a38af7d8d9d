"""Saved training datasets (Parquet + manifest, versioned under the root) and `featurestore training-set`."""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from featurestore import FeatureStore, InvalidData, TrainingSetNotFound
from featurestore.cli import main
from featurestore.training.saved import list_training_sets
from tests.conftest import T0, item_batch

UTCZ = pa.timestamp("us", tz="UTC")


@pytest.fixture
def spine_file(tmp_path: Path) -> Path:
    spine = pa.table({"item_id": ["i0", "i4", "i9", "i1"], "label_time": pa.array(
        [T0 + timedelta(minutes=m) for m in (30, 90, 90, 61)], UTCZ), "label": [1, 0, 1, 0]})
    path = tmp_path / "spine.parquet"
    pq.write_table(spine, path)
    return path


def _sha(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def test_save_versions_manifest_and_rebuild(items: FeatureStore, spine_file: Path) -> None:
    features = ["item_embeddings:1:embedding,n_events"]
    first = items.save_training_set("ctr", spine_file, features, event_time="label_time", ttl=timedelta(hours=1))
    assert first.version == 1
    m = first.manifest
    assert m["pins"] == {"item_embeddings:1": 2} and m["rows"] == 4
    assert m["params"]["ttl"] == {"item_embeddings:1": 3600.0} and m["params"]["event_time"] == "label_time"
    assert m["data"]["sha256"] == _sha(first.path)
    assert m["spine"]["rows"] == 4 and len(m["spine"]["sha256"]) == 64
    on_disk = json.loads((Path(first.path).parent / "manifest.json").read_text())
    assert on_disk["pins"] == m["pins"]
    # newer commits land, including a correction; rebuilding from the manifest gives the same bytes
    fg = items.feature_group("item_embeddings", 1)
    fg.insert(item_batch(3, seed=7, event_time=T0))
    again = items.save_training_set("ctr", spine_file, features, event_time="label_time",
                                    ttl=timedelta(hours=1), pins=m["pins"])
    assert again.version == 2
    assert again.manifest["data"]["sha256"] == m["data"]["sha256"]
    assert again.manifest["spine"]["sha256"] == m["spine"]["sha256"]
    newer = items.save_training_set("ctr", spine_file, features, event_time="label_time", ttl=timedelta(hours=1))
    assert newer.version == 3 and newer.pins == {"item_embeddings:1": 3}
    assert newer.manifest["data"]["sha256"] != m["data"]["sha256"]
    assert items.load_training_set("ctr").version == 3
    assert items.load_training_set("ctr", 1).to_arrow().equals(first.to_arrow())
    assert [(s.name, s.version) for s in list_training_sets(items.catalog)] == [("ctr", 1), ("ctr", 2), ("ctr", 3)]


def test_spine_hash_is_the_same_for_every_input_form(items: FeatureStore, spine_file: Path) -> None:
    table = pq.read_table(spine_file)
    hashes = {items.save_training_set(f"s{i}", source, ["item_embeddings:1"], event_time="label_time")
              .manifest["spine"]["sha256"] for i, source in enumerate([spine_file, table, table.to_batches()[0]])}
    assert len(hashes) == 1
    other = table.set_column(2, "label", pa.array([1, 1, 1, 1]))
    assert items.save_training_set("s9", other, ["item_embeddings:1"], event_time="label_time") \
        .manifest["spine"]["sha256"] not in hashes


def test_save_errors_leave_nothing(items: FeatureStore, spine_file: Path) -> None:
    with pytest.raises(InvalidData, match="bad training set name"):
        items.save_training_set("Bad Name", spine_file, ["item_embeddings:1"], event_time="label_time")
    with pytest.raises(InvalidData):
        items.save_training_set("ok", spine_file, ["item_embeddings:1:nope"], event_time="label_time")
    assert not (Path(items.root.uri) / "training_sets" / "ok").exists()
    with pytest.raises(TrainingSetNotFound, match="no training set 'ok'"):
        items.load_training_set("ok")


def test_cli_out_and_save(items: FeatureStore, spine_file: Path, tmp_path: Path,
                          capsys: pytest.CaptureFixture[str]) -> None:
    root = items.root.uri
    out = tmp_path / "train.parquet"
    code = main(["training-set", "--root", root, "--spine", str(spine_file), "--event-time", "label_time",
                 "--feature", "item_embeddings:1:embedding", "--ttl", "1h", "--out", str(out), "--json"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["rows"] == 4 and summary["pins"] == {"item_embeddings:1": 2}
    want = items.training_set(spine_file, ["item_embeddings:1:embedding"], event_time="label_time",
                              ttl=timedelta(hours=1)).to_arrow()
    assert pq.read_table(out).equals(want)
    pins = tmp_path / "pins.json"
    pins.write_text(json.dumps(summary["pins"]))
    code = main(["training-set", "--root", root, "--spine", str(spine_file), "--event-time", "label_time",
                 "--feature", "item_embeddings:1:embedding", "--ttl", "1h", "--save", "ctr", "--pins", str(pins)])
    assert code == 0
    assert "ctr v1" in capsys.readouterr().out
    assert items.load_training_set("ctr").manifest["data"]["sha256"] == _sha(out)


@pytest.mark.parametrize("args, message", [
    (["--ttl", "7 days"], "--ttl takes"),
    (["--pins", "{not json"], "--pins takes JSON"),
    (["--entity-key", "item_embeddings"], "--entity-key takes"),
    (["--event-time", "nope"], "no event-time column"),
])
def test_cli_errors(items: FeatureStore, spine_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                    args: list[str], message: str) -> None:
    base = ["training-set", "--root", items.root.uri, "--spine", str(spine_file), "--event-time", "label_time",
            "--feature", "item_embeddings:1", "--out", str(tmp_path / "x.parquet")]
    assert main(base + args) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x.parquet").exists()


def test_a_killed_save_leaves_debris_that_the_next_save_removes(items, tmp_path):
    import subprocess
    import sys

    staging = Path(items.root.uri) / "training_sets" / ".staging"
    staging.mkdir(parents=True)
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    debris = staging / f"fs-training-{int(gone.stdout)}-abc123"  # a save killed mid-write
    debris.mkdir()
    (debris / "data.parquet").write_bytes(b"half a file")
    spine = pa.table({"item_id": ["i0"], "ts": pa.array([T0 + timedelta(days=1)], pa.timestamp("us", tz="UTC"))})
    saved = items.save_training_set("ctr", spine, ["item_embeddings:1"], event_time="ts")
    assert not debris.exists() and not staging.exists()  # nothing left of either save
    assert saved.to_arrow().num_rows == 1
    assert [s.name for s in list_training_sets(items.catalog)] == ["ctr"]
