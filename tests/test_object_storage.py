"""A store rooted at s3://bucket/prefix, against a real S3-compatible server (moto's server mode on
127.0.0.1, started and stopped here): tables, specs, the store marker, validation reports, SQL, saved
training sets, online views uploaded and downloaded (verified), typed errors, and concurrent writer
processes whose every commit lands once or fails typed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from featurestore import FeatureStore
from featurestore.errors import (
    BucketNotFound,
    CorruptData,
    StorageAccessDenied,
    StorageError,
    StorageUnreachable,
)
from featurestore.storage.objectstore import resolve
from featurestore.training import flush_cache_writes
from featurestore.training.saved import list_training_sets
from tests.conftest import ROOT, SCHEMAS, T0, item_batch
from tests.s3_server import S3Server, free_port, serving

BUCKET = "featurestore-tests"


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    yield from serving(BUCKET)


@pytest.fixture
def env(s3: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The AWS variables of the test server, a fresh local cache folder, and a fresh prefix: ``env["uri"]``."""
    values = s3.use_in(monkeypatch, FEATURESTORE_CACHE=str(tmp_path / "cache"))
    return {**values, "uri": f"s3://{BUCKET}/{uuid.uuid4().hex[:10]}"}


def fresh_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, name: str) -> None:
    """Another machine: same bucket, an empty local cache."""
    monkeypatch.setenv("FEATURESTORE_CACHE", str(tmp_path / name))


def test_tables_specs_marker_reports_and_sql(env: dict[str, str], monkeypatch: pytest.MonkeyPatch,
                                             tmp_path: Path) -> None:
    with FeatureStore(env["uri"]) as store:
        store.apply(SCHEMAS)
        fg = store.feature_group("item_embeddings", 1)
        first = fg.insert(item_batch(20, seed=1, event_time=T0))
        second = fg.insert(item_batch(10, seed=2, event_time=T0 + timedelta(hours=1)))
        assert store.root.exists("featurestore.json")
        assert store.root.exists("feature_groups/item_embeddings/v1/_spec.json")
        assert [c.commit for c in fg.history()][-2:] == [first.commit, second.commit]
        assert second.extra["checksums"]  # data files' CRC-32 recorded on object storage too
        want = fg.read().sort_by("item_id").to_pandas()
    fresh_cache(monkeypatch, tmp_path, "other-machine")
    with FeatureStore(env["uri"]) as other:  # reads everything back from the bucket alone
        assert not Path(other.root.cache or "").exists()
        fg = other.feature_group("item_embeddings", 1)
        got = fg.read().sort_by("item_id").to_pandas()
        pd.testing.assert_frame_equal(got, want)
        assert fg.read(first.commit).num_rows == 20
        assert other.sql("SELECT count(*) FROM item_embeddings_v1").fetchall() == [(30,)]
        assert other.sql("SELECT count(*) FROM item_embeddings_latest").fetchall() == [(20,)]
        reports = other.sql("SELECT count(*) FROM validation_reports").fetchall()[0]
        assert reports is not None and reports[0] == 2
        assert other.check() == []
        assert other.specs()[0].name == "item_embeddings"


def test_data_files_read_from_an_object_store_are_verified(env: dict[str, str], monkeypatch: pytest.MonkeyPatch,
                                                           tmp_path: Path) -> None:
    """A damaged local copy is fetched again; a damaged object is a CorruptData naming it, from every
    reader (fg.read, store.sql, check), and compacted files carry checksums too."""
    with FeatureStore(env["uri"]) as store:
        store.apply(SCHEMAS)
        fg = store.feature_group("item_embeddings", 1)
        fg.insert(item_batch(20, seed=1, event_time=T0))
        fg.insert(item_batch(10, seed=2, event_time=T0 + timedelta(hours=1)))
        want = fg.read().sort_by("item_id")
        store.compact(dry_run=False)
        assert fg.history()[-1].operation == "compact"
        (uri,) = fg.file_uris()
        rel = store.root.rel_of(uri)
        good = store.root.read_bytes(rel)
    for name in ("copy", "object"):
        fresh_cache(monkeypatch, tmp_path, name)
        with FeatureStore(env["uri"]) as store:
            fg = store.feature_group("item_embeddings", 1)
            copy = Path(fg.files(verify=False)[0])  # downloaded, not yet verified
            damaged = bytearray(good)
            damaged[len(damaged) // 2] ^= 0x5A
            if name == "copy":
                copy.write_bytes(bytes(damaged))
                assert fg.read().sort_by("item_id").equals(want)  # fetched again, then verified
                assert copy.read_bytes() == good
                continue
            store.root.write_bytes(rel, bytes(damaged))
            copy.write_bytes(bytes(damaged))
            with pytest.raises(CorruptData, match=uri):
                fg.read()
            with pytest.raises(CorruptData, match=uri):
                store.sql("SELECT count(*) FROM item_embeddings").fetchall()
            assert [(p.what, p.where) for p in store.check()] == [("table", uri)]
    with FeatureStore(env["uri"]) as store:
        store.root.write_bytes(rel, good)


def test_online_view_built_once_uploaded_downloaded_and_verified(
        env: dict[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    with FeatureStore(env["uri"]) as store:
        store.apply(SCHEMAS)
        store.feature_group("item_embeddings", 1).insert(item_batch(40, seed=3, event_time=T0))
        built = store.online("item_embeddings", 1)
        want = built.get(["i5", "i7"]).vectors
        rel = "feature_groups/item_embeddings/v1/_online/c1"
        manifest = store.root.read_json(f"{rel}/manifest.json")
    fresh_cache(monkeypatch, tmp_path, "server")
    with FeatureStore(env["uri"]) as server:
        view = server.online("item_embeddings", 1, build=False)  # downloaded, not rebuilt
        np.testing.assert_array_equal(view.get(["i5", "i7"]).vectors, want)
        assert json.loads((Path(str(view.path)) / "manifest.json").read_text())["build"] == manifest["build"]
        # a damaged upload is refused, never served
        server.root.write_bytes(f"{rel}/b-{manifest['build']}/vectors.npy", b"\x93NUMPY damaged")
    fresh_cache(monkeypatch, tmp_path, "second-server")
    with FeatureStore(env["uri"]) as again, pytest.raises(CorruptData, match="vectors.npy"):
        again.online("item_embeddings", 1, build=False)
    assert not any((tmp_path / "second-server").rglob("vectors.npy"))  # nothing of it stayed
    with FeatureStore(env["uri"]) as store:  # an upload killed midway: a build folder no manifest names
        store.root.write_bytes(f"{rel}/b-deadbeef0000/vectors.npy", b"partial")
        removed = store.vacuum(timedelta(0), dry_run=False).removed
        assert f"{env['uri']}/{rel}/b-deadbeef0000" in removed
        assert store.root.listdir(rel) == [f"b-{manifest['build']}", "manifest.json"]


def test_saved_training_sets(env: dict[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    spine = pd.DataFrame({"item_id": ["i1", "i2", "i9"], "event_time": [T0 + timedelta(minutes=5)] * 3})
    with FeatureStore(env["uri"]) as store:
        store.apply(SCHEMAS)
        store.feature_group("item_embeddings", 1).insert(item_batch(5, seed=4, event_time=T0))
        first = store.save_training_set("ctr", spine, ["item_embeddings:1"],
                                        entity_keys={"item_embeddings": "item_id"})
        second = store.save_training_set("ctr", spine, ["item_embeddings:1"],
                                         entity_keys={"item_embeddings": "item_id"})
        assert (first.version, second.version) == (1, 2)
        assert first.path == f"{env['uri']}/training_sets/ctr/v1/data.parquet"
        want = first.to_arrow()
    fresh_cache(monkeypatch, tmp_path, "trainer")
    with FeatureStore(env["uri"]) as trainer:
        loaded = trainer.load_training_set("ctr", 1)
        assert loaded.to_arrow().equals(want)
        assert loaded.pins == first.pins
        assert [s.version for s in list_training_sets(trainer.catalog)] == [1, 2]
        again = trainer.training_set(spine, ["item_embeddings:1"], entity_keys={"item_embeddings": "item_id"})
        assert again.to_arrow().equals(want)  # rebuilt from the pins on a fresh machine: the same rows
        flush_cache_writes()
        assert any((tmp_path / "trainer").rglob("_cache/joins/**/*.arrow"))  # training caches work here too


def test_explicit_storage_options_without_environment(env: dict[str, str], s3: S3Server,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name)
    keys = s3.env()
    options = {"aws_access_key_id": keys["AWS_ACCESS_KEY_ID"], "secret_access_key": keys["AWS_SECRET_ACCESS_KEY"],
               "region": "us-east-1", "endpoint_url": s3.endpoint}
    with FeatureStore(env["uri"], storage_options=options) as store:
        store.apply(SCHEMAS)
        store.feature_group("item_embeddings", 1).insert(item_batch(3, seed=5, event_time=T0))
        assert store.feature_group("item_embeddings", 1).count() == 3
        assert store.root.explicit_options == options


def test_typed_errors_name_the_store(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(BucketNotFound, match="s3://no-such-bucket/x"):
        FeatureStore("s3://no-such-bucket/x")
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    with pytest.raises(StorageUnreachable, match=f"{BUCKET}"):
        FeatureStore(env["uri"])
    with pytest.raises(StorageError, match="AWS_ALLOW_HTTP"):
        resolve(env["uri"], {"endpoint_url": "http://storage.example.com:9000"})
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    with pytest.raises(StorageAccessDenied, match="AWS_SECRET_ACCESS_KEY"):
        resolve(env["uri"], {"aws_access_key_id": "only-the-id"})


def test_refused_credentials_are_typed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    guarded = S3Server(extra_env={"INITIAL_NO_AUTH_ACTION_COUNT": "0"})  # moto checks every key
    try:
        for k, v in guarded.env().items():
            monkeypatch.setenv(k, v)
        monkeypatch.setenv("FEATURESTORE_CACHE", str(tmp_path))
        with pytest.raises(StorageAccessDenied, match="s3://guarded/store"):
            FeatureStore("s3://guarded/store")
    finally:
        guarded.stop()


WRITER = """
import json, os, sys, time
from datetime import timedelta
from featurestore import FeatureStore
from featurestore.errors import FeatureStoreError
from tests.conftest import item_batch, T0
from featurestore.validation import gx
uri, worker, n, gate = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
store = FeatureStore(uri)
fg = store.feature_group("item_embeddings", 1)
gx.load()  # imports done before the start: the writers race on their commits, not on their imports
open(f"{gate}.ready-{worker}", "w").close()
while not os.path.exists(gate):
    time.sleep(0.005)
out = []
for i in range(n):
    batch = item_batch(4, seed=worker * 100 + i, start=worker * 1000 + i * 10,
                       event_time=T0 + timedelta(minutes=worker * 100 + i))
    try:
        c = fg.insert(batch, metadata={"worker": worker, "i": i})
        out.append({"ok": c.run_id})
    except FeatureStoreError as exc:
        out.append({"error": type(exc).__name__})
import pandas as pd
spine = pd.DataFrame({"item_id": ["i0"], "event_time": [T0 + timedelta(days=1)]})
saved = store.save_training_set("race", spine, ["item_embeddings:1"], entity_keys={"item_embeddings": "item_id"})
out.append({"saved": saved.version})
print(json.dumps(out), flush=True)
"""


def _python_env(env: dict[str, str]) -> dict[str, str]:
    return {**os.environ, **{k: v for k, v in env.items() if k != "uri"}, "PYTHONPATH": str(ROOT),
            "PYTHONWARNINGS": "ignore"}


def _script(tmp_path: Path, code: str) -> str:
    """The code of a child process as a script file (its tracebacks then name lines of a file)."""
    path = tmp_path / f"script-{uuid.uuid4().hex[:6]}.py"
    path.write_text(code)
    return str(path)


def test_concurrent_writer_processes_each_commit_lands_once(env: dict[str, str], tmp_path: Path) -> None:
    with FeatureStore(env["uri"]) as store:
        store.apply(SCHEMAS)
    workers, each = 3, 2
    gate = tmp_path / "go"
    script = _script(tmp_path, WRITER)
    procs = [subprocess.Popen([sys.executable, script, env["uri"], str(w), str(each), str(gate)],
                              cwd=ROOT, env=_python_env(env), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for w in range(workers)]
    deadline = time.monotonic() + 300
    while len(list(tmp_path.glob("go.ready-*"))) < workers:  # all started and imported: open the gate
        assert all(p.poll() is None for p in procs) and time.monotonic() < deadline
        time.sleep(0.05)
    gate.touch()
    results = []
    for p in procs:
        out, err = p.communicate(timeout=180)
        assert p.returncode == 0, err
        results += json.loads(out.strip().splitlines()[-1])
    saved = sorted(r.pop("saved") for r in results if "saved" in r)
    assert saved == list(range(1, workers + 1))  # racing saves of one name: each its own version
    results = [r for r in results if r]
    assert all(set(r) in ({"ok"}, {"error"}) for r in results)
    assert {r["error"] for r in results if "error" in r} <= {"CommitConflict"}  # typed, never a backend error
    landed = [r["ok"] for r in results if "ok" in r]
    with FeatureStore(env["uri"]) as store:
        fg = store.feature_group("item_embeddings", 1)
        runs = [c.run_id for c in fg.history() if c.operation != "CREATE TABLE" and c.run_id]
        assert sorted(runs) == sorted(landed)  # every success is in the log exactly once, nothing else
        assert len(runs) == len(set(runs))
        assert fg.read().num_rows == 4 * len(landed)
        assert [c.commit for c in fg.history()] == list(range(len(landed) + 1))  # no version lost or reused


KILLED = """
import os, sys, time
from featurestore import FeatureStore
from tests.conftest import item_batch, T0
store = FeatureStore(sys.argv[1])
fg = store.feature_group("item_embeddings", 1)
table = "feature_groups/item_embeddings/v1"
def stall(fg_, batch):
    while sum(n.startswith("part-") for n in store.root.listdir(table)) < 2:
        time.sleep(0.02)  # the data file is uploaded; the commit is not written yet
    open(sys.argv[2], "w").close()
    time.sleep(600)
fg.before_commit.append(stall)
fg.insert(item_batch(30, seed=9, event_time=T0))
"""


def test_a_killed_writer_leaves_no_commit_and_no_visible_rows(env: dict[str, str], tmp_path: Path) -> None:
    with FeatureStore(env["uri"]) as store:
        store.apply(SCHEMAS)
        fg = store.feature_group("item_embeddings", 1)
        fg.insert(item_batch(5, seed=1, event_time=T0))
        before = fg.read()
    ready = tmp_path / "ready"
    with open(tmp_path / "writer.log", "w") as log:
        proc = subprocess.Popen([sys.executable, _script(tmp_path, KILLED), env["uri"], str(ready)], cwd=ROOT,
                                env=_python_env(env), stdout=subprocess.DEVNULL, stderr=log)
    try:
        deadline = time.monotonic() + 120
        while not ready.exists():
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "writer.log").read_text()
            time.sleep(0.05)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    with FeatureStore(env["uri"]) as store:
        fg = store.feature_group("item_embeddings", 1)
        assert [c.commit for c in fg.history()] == [0, 1]
        assert fg.read().equals(before)
        table = "feature_groups/item_embeddings/v1"
        orphans = [n for n in store.root.listdir(table) if n.startswith("part-")]
        assert len(orphans) == 2  # the committed file and the killed writer's upload, which no commit names
        removed = store.vacuum(timedelta(0), dry_run=False).removed
        assert [r.rsplit("/", 1)[1] for r in removed if r.startswith("s3://") and "part-" in r] == \
            sorted(set(orphans) - {os.path.basename(u) for u in fg.file_uris()})
        assert fg.read().equals(before)
        assert any("cached cop" in r for r in removed)  # this machine's copy of the orphan went too


def test_a_batched_insert_uploads_each_batch_and_a_refused_one_leaves_no_object(env: dict[str, str]) -> None:
    import pyarrow as pa

    from featurestore.errors import ValidationFailed

    with FeatureStore(env["uri"]) as store:
        store.apply(SCHEMAS)
        fg = store.feature_group("item_embeddings", 1)
        whole = item_batch(90, seed=4)
        commit = fg.insert_batches(iter([whole.slice(0, 40), whole.slice(40, 50)]), cutoff=T0)
        assert commit.row_count == 90
        got = fg.read().sort_by("item_id")
        want = whole.sort_by("item_id")
        assert got["item_id"].equals(want["item_id"])
        assert got["embedding"].combine_chunks().flatten().equals(want["embedding"].combine_chunks().flatten())
        objects = {n for n in store.root.listdir(fg.rel) if n.endswith(".parquet")}
        assert len(objects) == 2  # one data file per batch
        bad = item_batch(30, seed=5, start=200)
        doubled = pa.FixedSizeListArray.from_arrays(
            pa.array(bad["embedding"].combine_chunks().flatten().to_numpy() * 2), 64)
        bad = bad.set_column(bad.schema.get_field_index("embedding"), "embedding", doubled)
        with pytest.raises(ValidationFailed):
            fg.insert_batches(iter([item_batch(30, seed=6, start=100), bad]), cutoff=T0 + timedelta(hours=1))
        assert {n for n in store.root.listdir(fg.rel) if n.endswith(".parquet")} == objects
        assert [c.commit for c in fg.history()] == [0, commit.commit]
