"""`featurestore run`: the reference pipeline file, any events file with --columns, backfill, re-runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pyarrow.parquet as pq
import pytest

from featurestore import FeatureStore
from featurestore.cli import main
from featurestore.synthetic import purchase_histories

from .conftest import ROOT, SCHEMAS

REFERENCE = str(ROOT / "pipelines" / "purchase_embeddings.py")


@pytest.fixture(scope="module")
def events_file(tmp_path_factory):
    data = purchase_histories(n_users=300, n_items=150, n_events=12_000, n_categories=6, days=6, seed=4)
    path = tmp_path_factory.mktemp("events") / "events.parquet"
    pq.write_table(data.events, path)
    renamed = data.events.rename_columns(["customer", "sku", "action", "ts"]).drop_columns(["action"])
    other = path.parent / "other.parquet"
    pq.write_table(renamed, other)
    return path, other


def test_reference_pipeline_runs_once_per_date(tmp_path, events_file, capsys, monkeypatch):
    root = str(tmp_path / "store")
    monkeypatch.setenv("FEATURESTORE_EVENTS", str(events_file[0]))
    assert main(["apply", "schemas", "--root", root]) == 0 if os.getcwd() == str(ROOT) else \
        main(["apply", str(SCHEMAS), "--root", root]) == 0
    assert main(["run", REFERENCE, "--cutoff", "2026-10-05", "--root", root, "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "purchase_embeddings cutoff 2026-10-05T00:00:00+00:00" in out and "item model retrained" in out
    assert "item_embeddings v1 commit 1" in out and "user_embeddings v1 commit 1" in out
    assert main(["run", REFERENCE, "--cutoff", "2026-10-05T00:00:00+00:00", "--root", root, "--quiet"]) == 0
    assert "already done" in capsys.readouterr().out
    assert main(["run", REFERENCE, "--backfill", "2026-10-04", "2026-10-06", "--every", "1d", "--root", root,
                 "--quiet", "--json"]) == 0
    results = json.loads(capsys.readouterr().out)
    assert [r["status"] for r in results] == ["written", "skipped", "written"]
    store = FeatureStore(root)
    hist = store.feature_group("user_embeddings", 1).history()
    assert [c.cutoff for c in hist[1:]] == [datetime(2026, 10, d, tzinfo=UTC) for d in (5, 4, 6)]
    store.close()


def test_any_events_file_with_columns_and_no_type_column(tmp_path, events_file, capsys):
    root = str(tmp_path / "store")
    main(["apply", str(SCHEMAS), "--root", root])
    code = main(["run", "--events", str(events_file[1]), "--columns", "entity=customer,item=sku,type=,time=ts",
                 "--cutoff", "2026-10-05", "--root", root, "--quiet", "--name", "plain"])
    assert code == 0
    assert "plain cutoff 2026-10-05" in capsys.readouterr().out
    store = FeatureStore(root)
    meta = store.feature_group("user_embeddings", 1).history()[-1].metadata
    assert meta["pipeline"] == "plain" and meta["params"]["columns"]["type"] is None
    assert store.sql("SELECT count(*) FROM user_embeddings").fetchall()[0][0] > 200
    store.close()


def test_cli_errors_are_one_line(tmp_path, events_file, capsys):
    root = str(tmp_path / "store")
    main(["apply", str(SCHEMAS), "--root", root])
    assert main(["run", "--events", str(events_file[1]), "--cutoff", "2026-10-05", "--root", root]) == 2
    assert "no column(s) 'user_id'" in capsys.readouterr().err
    assert main(["run", "--cutoff", "2026-10-05", "--root", root]) == 2
    assert "give a pipeline file" in capsys.readouterr().err
    assert main(["run", str(tmp_path / "missing.py"), "--cutoff", "2026-10-05", "--root", root]) == 2
    assert "no pipeline file" in capsys.readouterr().err
    assert main(["run", "--events", str(events_file[0]), "--cutoff", "yesterday", "--root", root]) == 2
    assert "ISO-8601" in capsys.readouterr().err
    assert main(["run", "--events", str(events_file[0]), "--weights", "view=1", "--cutoff", "2026-10-05",
                 "--root", root]) == 2
    assert "unknown event type(s) 'add_to_cart', 'purchase'" in capsys.readouterr().err


def test_run_in_a_real_process(tmp_path, events_file):
    root = str(tmp_path / "store")
    env = {**os.environ, "FEATURESTORE_EVENTS": str(events_file[0])}
    cmd = [sys.executable, "-m", "featurestore"]
    subprocess.run([*cmd, "apply", str(SCHEMAS), "--root", root], check=True, env=env, capture_output=True)
    p = subprocess.run([*cmd, "run", REFERENCE, "--cutoff", "2026-10-03", "--root", root], env=env,
                       capture_output=True, text=True, check=False)
    assert p.returncode == 0, p.stderr
    assert "1 run(s): 1 written, 0 already done; 2 commit(s)" in p.stderr


def test_events_from_a_duckdb_query(tmp_path, events_file, capsys):
    root = str(tmp_path / "store")
    main(["apply", str(SCHEMAS), "--root", root])
    query = f"SELECT * FROM read_parquet('{events_file[0]}') WHERE event_type <> 'view'"
    assert main(["run", "--query", query, "--cutoff", "2026-10-06", "--root", root, "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "embeddings cutoff 2026-10-06" in out
    store = FeatureStore(root)
    meta = store.feature_group("item_embeddings", 1).history()[-1].metadata
    assert meta["event_types"].keys() == {"add_to_cart", "purchase"}
    store.close()


def test_force_runs_a_done_date_again_and_runs_are_named_after_their_events(tmp_path, events_file, capsys):
    root = str(tmp_path / "store")
    main(["apply", str(SCHEMAS), "--root", root])
    argv = ["run", "--events", str(events_file[0]), "--cutoff", "2026-10-05", "--root", root, "--quiet"]
    assert main(argv) == 0
    assert "events_embeddings cutoff 2026-10-05" in capsys.readouterr().out  # named after events.parquet
    assert main(argv) == 0
    assert "already done" in capsys.readouterr().out
    assert main([*argv, "--force"]) == 0
    out = capsys.readouterr().out
    assert "item model retrained" in out and "already done" not in out
    store = FeatureStore(root)
    hist = store.feature_group("user_embeddings", 1).history()
    assert [c.cutoff for c in hist[1:]] == [datetime(2026, 10, 5, tzinfo=UTC)] * 2
    assert hist[-1].metadata["pipeline"] == "events_embeddings"
    store.close()


def test_a_backfill_past_the_end_of_the_events_rewrites_nothing(tmp_path, events_file, capsys):
    import pyarrow.parquet as pq

    last = pq.read_table(events_file[0], columns=["event_time"])["event_time"].to_pylist()
    end = max(last).replace(hour=0, minute=0, second=0, microsecond=0)
    root = str(tmp_path / "store")
    main(["apply", str(SCHEMAS), "--root", root])
    days = [(end + timedelta(days=d)).date().isoformat() for d in (0, 1, 3)]
    capsys.readouterr()
    assert main(["run", "--events", str(events_file[0]), "--backfill", days[0], days[2], "--root", root,
                 "--quiet", "--json"]) == 0
    results = json.loads(capsys.readouterr().out)
    # the day after the last event still sees that day's events; later days see nothing new
    assert [r["status"] for r in results] == ["written", "written", "skipped", "skipped"]
    assert "no event since the previous run's cutoff" in results[-1]["message"]
    store = FeatureStore(root)
    assert len(store.feature_group("user_embeddings", 1).history()) == 3  # create + two runs
    store.close()
