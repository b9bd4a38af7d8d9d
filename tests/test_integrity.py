"""Damaged files never give wrong vectors: training caches (vector copies, join caches) are checked
against the checksum in their trailer and rebuilt with a warning; committed data files are checked
against the checksum their commit recorded before ``fg.read()``, training sets and ``materialize`` read
them, and a damaged or truncated one is a CorruptData naming it."""

from __future__ import annotations

import json
import logging
import os
from datetime import timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from featurestore import FeatureStore
from featurestore.errors import CorruptData
from featurestore.storage import checksums
from featurestore.training.writer import flush_cache_writes
from tests.conftest import SCHEMAS, T0, item_batch, tree_digest

UTC_US = pa.timestamp("us", tz="UTC")


def _store(root: Path) -> FeatureStore:
    store = FeatureStore(root)
    store.apply(SCHEMAS)
    fg = store.feature_group("item_embeddings", 1)
    fg.insert(item_batch(40, seed=1), cutoff=T0)
    fg.insert(item_batch(40, seed=2, start=40), cutoff=T0 + timedelta(days=1))
    return store


def _spine() -> pa.Table:
    ids = [f"i{i}" for i in range(0, 80, 3)]
    return pa.table({"item_id": ids, "t": pa.array([T0 + timedelta(days=2)] * len(ids), UTC_US)})


def _training(store: FeatureStore) -> pa.Table:
    out = store.training_set(_spine(), ["item_embeddings:1:embedding"], event_time="t").to_arrow()
    flush_cache_writes()
    return out


def _damage(path: Path, how: str, at: float = 0.5) -> None:
    data = bytearray(path.read_bytes())
    if how == "flip":
        i = min(int(len(data) * at), len(data) - 1)
        data[i] ^= 0x5A
    else:  # truncate
        data = data[: int(len(data) * at)]
    path.write_bytes(bytes(data))


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pa.Table]:
    """A store whose training caches exist (vector copies and join caches), and the reference result."""
    root = tmp_path_factory.mktemp("integrity") / "s"
    store = _store(root)
    reference = _training(store)
    assert _training(store).equals(reference)  # the second one reads the join cache
    store.close()
    return root, reference


def _caches(root: Path, kind: str) -> list[Path]:
    return sorted(p for p in (root / "_cache" / kind).rglob("*") if p.is_file())


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kind=st.sampled_from(["vectors", "joins"]), how=st.sampled_from(["flip", "truncate"]),
       at=st.floats(0.0, 0.999), which=st.integers(0, 10))
def test_a_damaged_training_cache_is_rebuilt_with_a_warning_never_a_wrong_vector(
        built, kind, how, at, which, caplog):
    root, reference = built
    files = _caches(root, kind)
    target = files[which % len(files)]
    original = target.read_bytes()
    _damage(target, how, at)
    store = FeatureStore(root)
    try:
        with caplog.at_level(logging.WARNING, logger="featurestore.training"):
            assert _training(store).equals(reference)
        assert any("damaged" in r.getMessage() and str(target) in r.getMessage() for r in caplog.records)
        assert _training(store).equals(reference)  # rebuilt: verifies now
        assert store.check() == []
    finally:
        store.close()
        if target.read_bytes() != original:  # not rewritten yet (a join cache is rebuilt behind)
            target.write_bytes(original)


def test_check_names_a_damaged_cache_and_repair_deletes_it(built):
    root, reference = built
    target = _caches(root, "vectors")[0]
    original = target.read_bytes()
    _damage(target, "flip", 0.7)
    store = FeatureStore(root)
    try:
        problems = store.check()
        assert [(p.what, p.where) for p in problems] == [("cache", str(target))]
        assert "checksum" in problems[0].detail
        store.check(repair=True)
        assert not target.exists() and store.check() == []
        assert _training(store).equals(reference)
    finally:
        store.close()
        if not target.exists():
            target.write_bytes(original)


@pytest.mark.parametrize("how", ["flip", "truncate"])
def test_a_damaged_data_file_is_refused_by_every_reader_naming_it(tmp_path, how):
    store = _store(tmp_path / "s")
    fg = store.feature_group("item_embeddings", 1)
    reference = fg.read()
    target = Path(sorted(fg.files(), key=os.path.getsize)[-1])
    _damage(target, how, 0.6)
    with pytest.raises(CorruptData, match=str(target)):
        fg.read()
    with pytest.raises(CorruptData, match=str(target)):
        fg.latest()
    with pytest.raises(CorruptData, match=str(target)):
        store.sql("SELECT count(*) FROM item_embeddings").fetchall()  # DuckDB's views over the files
    with pytest.raises(CorruptData, match=str(target)):
        store.online("item_embeddings")  # materialize
    store.cache_vectors = False
    store.join_caches = False
    with pytest.raises(CorruptData, match=str(target)):
        _training(store)
    assert [p.where for p in store.check()] == [str(target)]
    store.close()
    # a fresh process reads the same way: nothing was remembered as verified
    reopened = FeatureStore(tmp_path / "s")
    with pytest.raises(CorruptData, match=str(target)):
        reopened.feature_group("item_embeddings", 1).read()
    del reference


def test_each_data_file_is_hashed_once_per_process_while_unchanged(tmp_path, monkeypatch):
    store = _store(tmp_path / "s")
    fg = store.feature_group("item_embeddings", 1)
    hashed: list[str] = []
    real = checksums.matches
    monkeypatch.setattr(checksums, "matches", lambda p, w: hashed.append(p) or real(p, w))
    fg.read()
    assert hashed == []  # written by this process: hashed as they were written
    checksums._verified.clear()
    fg.read()
    fg.read()
    assert sorted(hashed) == sorted(f.removeprefix("file://") for f in fg.files(verify=False))
    target = Path(hashed[0])
    os.utime(target, ns=(target.stat().st_atime_ns, target.stat().st_mtime_ns + 1))
    fg.read()
    assert hashed[-1] == str(target) and len(hashed) == 3  # touched: hashed again
    store.close()


def test_sealed_files_carry_their_checksum(tmp_path):
    path = tmp_path / "m.npy"
    np.save(path, np.arange(12, dtype=np.float32).reshape(3, 4))
    checksums.seal(str(path))
    mm, length = checksums.sealed_payload(str(path))
    mm.close()
    assert length == path.stat().st_size - checksums.TRAILER
    for how in ("flip", "truncate"):
        saved = path.read_bytes()
        _damage(path, how, 0.9)
        with pytest.raises(CorruptData, match=str(path)):
            checksums.sealed_payload(str(path))
        path.write_bytes(saved)


def test_compacted_files_carry_checksums_and_a_damaged_file_is_never_compacted(tmp_path):
    store = _store(tmp_path / "s")
    fg = store.feature_group("item_embeddings", 1)
    reference = fg.read().sort_by("item_id")
    small = Path(fg.files()[0])
    original = small.read_bytes()
    _damage(small, "flip", 0.6)
    before = tree_digest(tmp_path / "s")
    with pytest.raises(CorruptData, match=str(small)):
        store.compact(dry_run=False)  # never rewritten under a new checksum
    assert tree_digest(tmp_path / "s") == before
    small.write_bytes(original)
    store.compact(dry_run=False)
    commit = fg.history()[-1]
    assert commit.operation == "compact" and commit.row_count == 0
    merged = [Path(f) for f in fg.files()]
    assert sorted(json.loads(commit.extra["checksums"])) == sorted(p.name for p in merged)
    assert fg.read().sort_by("item_id").equals(reference)
    _damage(merged[0], "flip", 0.5)
    store.close()
    reopened = FeatureStore(tmp_path / "s")  # a fresh process: nothing remembered as verified
    with pytest.raises(CorruptData, match=str(merged[0])):
        reopened.feature_group("item_embeddings", 1).read()
    with pytest.raises(CorruptData, match=str(merged[0])):
        reopened.sql("SELECT count(*) FROM item_embeddings").fetchall()
    assert [p.where for p in reopened.check()] == [str(merged[0])]
    reopened.close()
