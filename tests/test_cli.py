"""The featurestore command: each sub-command over a real store, run in-process and as a program."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys

import pyarrow.parquet as pq
import pytest

from featurestore.cli import main
from tests.conftest import ROOT, SCHEMAS, T0, item_batch


@pytest.fixture
def root(tmp_path, monkeypatch):
    path = tmp_path / "cli-store"
    monkeypatch.setenv("FEATURESTORE_ROOT", str(path))
    return path


def run(capsys, *args):
    code = main([*map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def test_init_apply_ls_show_history(root, capsys):
    assert run(capsys, "init")[0] == 0
    assert root.joinpath("featurestore.json").exists()
    code, out, _ = run(capsys, "apply", SCHEMAS)
    assert code == 0 and "created    item_embeddings v1" in out
    assert "unchanged  item_embeddings v1" in run(capsys, "apply", SCHEMAS)[1]
    from featurestore import FeatureStore

    FeatureStore(root).feature_group("item_embeddings").insert(item_batch(12), cutoff=T0, metadata={"by": "cli"})
    code, out, _ = run(capsys, "ls", "--json")
    rows = {r["name"]: r for r in json.loads(out)}
    assert rows["item_embeddings"]["rows"] == 12 and rows["item_embeddings"]["commit"] == 1
    code, out, _ = run(capsys, "show", "item_embeddings")
    assert "embedding" in out and "cosine" in out and "12 rows" in out
    code, out, _ = run(capsys, "history", "item_embeddings", "--json")
    hist = json.loads(out)
    assert [h["operation"] for h in hist] == ["create", "insert"] and hist[1]["metadata"] == {"by": "cli"}


def test_sql_formats(root, tmp_path, capsys):
    run(capsys, "apply", SCHEMAS)
    from featurestore import FeatureStore

    FeatureStore(root).feature_group("item_embeddings").insert(item_batch(5), cutoff=T0)
    q = "SELECT item_id, n_events, embedding FROM item_embeddings ORDER BY item_id"
    code, out, _ = run(capsys, "sql", q)
    assert code == 0 and "i0" in out and "(5 rows)" in out and "(64)" in out
    code, out, _ = run(capsys, "sql", q, "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [r["item_id"] for r in rows] == ["i0", "i1", "i2", "i3", "i4"]
    assert len(json.loads(rows[0]["embedding"])) == 64
    code, out, _ = run(capsys, "sql", q, "--format", "json")
    assert json.loads(out)[2]["n_events"] == 2
    dest = tmp_path / "out.parquet"
    assert run(capsys, "sql", q, "--format", "parquet", "--out", dest)[0] == 0
    assert pq.read_table(dest).num_rows == 5
    code, out, _ = run(capsys, "sql", "SELECT count(*) AS n FROM item_embeddings", "--commit", "item_embeddings=0")
    assert "0" in out.splitlines()[2]


def test_errors_are_one_line_and_exit_2(root, capsys):
    run(capsys, "apply", SCHEMAS)
    code, _, err = run(capsys, "history", "nope")
    assert code == 2 and err.startswith("error: no feature group 'nope'")
    code, _, err = run(capsys, "sql", "SELECT * FROM nowhere")
    assert code == 2 and "nowhere" in err
    code, _, err = run(capsys, "sql", "SELECT 1", "--format", "parquet")
    assert code == 2 and "--out" in err
    code, _, err = run(capsys, "sql", "SELECT 1", "--commit", "x")
    assert code == 2 and "VIEW=N" in err


def test_every_command_has_help_with_an_example():
    out = subprocess.run([sys.executable, "-m", "featurestore", "--help"], capture_output=True, text=True,
                         cwd=ROOT, check=True).stdout
    commands = ["init", "apply", "ls", "show", "history", "sql"]
    for cmd in commands:
        assert cmd in out
        sub = subprocess.run([sys.executable, "-m", "featurestore", cmd, "--help"], capture_output=True,
                             text=True, cwd=ROOT, check=True).stdout
        assert "example:" in sub and f"featurestore {cmd}" in sub and "--root" in sub


def test_the_command_exits_fast_but_finishes_threads_exit_handlers_and_output(tmp_path):
    """exit_now skips the interpreter's teardown, not what teardown must do."""
    import os

    from tests.conftest import run_python

    code = f"""
import atexit, sys, time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from featurestore.cli import exit_now
out = Path({str(tmp_path)!r})
atexit.register(lambda: (out / "handler").write_text("ran"))
pool = ThreadPoolExecutor(max_workers=1)      # an idle worker, like the store's background pools
pool.submit(lambda: (time.sleep(0.3), (out / "thread").write_text("done")))
sys.stdout.write("x" * 100)                     # stays in the buffer: no newline, not unbuffered
exit_now(int(sys.argv[1]) if len(sys.argv) > 1 else 3)
print("never reached")
"""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    proc = run_python(code, env=env)
    assert proc.returncode == 3, proc.stderr
    assert proc.stdout == "x" * 100
    assert (tmp_path / "handler").read_text() == "ran" and (tmp_path / "thread").read_text() == "done"
    # output that cannot be written makes a success fail, as Python's own exit does
    with open("/dev/full", "w") as full:
        failed = subprocess.run([sys.executable, "-c", code, "0"], cwd=ROOT, stdout=full, stderr=subprocess.PIPE,
                                text=True, env=env, timeout=120)
    assert failed.returncode == 120


def test_root_goes_before_or_after_the_command(root, capsys, tmp_path, monkeypatch):
    monkeypatch.delenv("FEATURESTORE_ROOT")
    assert run(capsys, "--root", root, "apply", SCHEMAS)[0] == 0
    code, out, _ = run(capsys, "--root", root, "ls")
    assert code == 0 and "item_embeddings" in out
    code, out, _ = run(capsys, "ls", "--root", root)  # after the command: the same store
    assert code == 0 and "item_embeddings" in out
    other = tmp_path / "other"
    code, _, _ = run(capsys, "--root", other, "ls", "--root", root)  # the command's own wins
    assert code == 0 and not other.exists()


@pytest.mark.parametrize("command", [["ls"], ["show", "item_embeddings"], ["history", "item_embeddings"],
                                     ["sql", "SELECT 1"], ["lookup", "item_embeddings", "i0"],
                                     ["validate", "item_embeddings"], ["cache"]])
def test_a_folder_that_is_not_a_store_is_refused_and_left_alone(tmp_path, capsys, command):
    typo = tmp_path / "featurestore_dta"
    code, _, err = run(capsys, *command, "--root", typo)
    assert code == 2 and "is not a feature store" in err and str(typo) in err and "Traceback" not in err
    assert not typo.exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert run(capsys, *command, "--root", empty)[0] == 2
    assert list(empty.iterdir()) == []


def test_history_ls_and_show_say_which_commit_was_only_warned(tmp_path, capsys):
    import dataclasses

    from featurestore import FeatureStore, load_specs
    from tests.test_validation_insert import off_norm

    root = tmp_path / "warned"
    store = FeatureStore(root)
    store.apply([dataclasses.replace(s, policy="warn") for s in load_specs(SCHEMAS)])
    fg = store.feature_group("item_embeddings", 1)
    fg.insert(item_batch(60), cutoff=T0)
    fg.insert(off_norm(60, start=100), cutoff=T0)
    code, out, _ = run(capsys, "history", "item_embeddings", "--root", root)
    lines = out.splitlines()
    assert code == 0 and "validation" in lines[0]
    assert "passed" in lines[3] and "WARNED: " in lines[4] and "norm" in lines[4]  # header, rule, commits 0..2
    code, out, _ = run(capsys, "ls", "--root", root)
    assert "WARNED" in out
    code, out, _ = run(capsys, "show", "item_embeddings", "--root", root)
    assert "validation: WARNED" in out
    code, out, _ = run(capsys, "show", "item_embeddings", "--root", root, "--json")
    assert json.loads(out)["validation"].startswith("WARNED")


def test_a_closed_pipe_ends_the_command_quietly(root, tmp_path):
    env = {**__import__("os").environ, "FEATURESTORE_ROOT": str(root)}
    subprocess.run([sys.executable, "-m", "featurestore", "apply", str(SCHEMAS)], env=env, check=True,
                   capture_output=True, cwd=ROOT)
    p = subprocess.run(f"{sys.executable} -m featurestore sql 'SELECT range FROM range(200000)' --limit 200000 "
                       "| head -n 2", shell=True, env=env, capture_output=True, text=True, cwd=ROOT)
    assert len(p.stdout.splitlines()) == 2
    assert "Traceback" not in p.stderr and "BrokenPipe" not in p.stderr
