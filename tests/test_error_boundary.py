"""Errors at the boundary: a backend failure (DuckDB, deltalake, pyarrow, faiss, great_expectations) at
any public entry point comes out as a :class:`FeatureStoreError` subclass naming the object at fault
(file path, table, feature group, query), never as the backend's own exception.

Failures are induced for real: files of a copy of a small store are truncated or have bytes flipped,
folders are replaced by files, queries are wrong, and great_expectations is made to raise.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from featurestore import FeatureStore
from featurestore.engine import Columns, EventSource, read_events
from featurestore.errors import (
    CorruptData,
    EventsError,
    FeatureStoreError,
    QueryError,
    StorageError,
    ValidationError,
)
from featurestore.online.view import open_view
from tests.conftest import T0
from tests.online_helpers import batch, keys_for, spec

SPINE = pa.table({"id": ["k1", "k2", "k3"],
                  "event_time": pa.array([T0 + timedelta(days=1)] * 3, pa.timestamp("us", tz="UTC"))})


def backend_classes() -> tuple[type[BaseException], ...]:
    from deltalake.exceptions import DeltaError

    return (duckdb.Error, pa.ArrowException, DeltaError)


def check(exc: BaseException, *names: str) -> None:
    """A featurestore error, not a backend's, whose message names ``names``."""
    assert isinstance(exc, FeatureStoreError)
    assert type(exc).__module__ == "featurestore.errors", type(exc)
    assert not isinstance(exc, backend_classes()), type(exc).__mro__
    for name in names:
        assert name in str(exc), (name, str(exc))


def raises(fn: Callable[[], Any], error: type[FeatureStoreError], *names: str) -> FeatureStoreError:
    with pytest.raises(FeatureStoreError) as info:
        fn()
    check(info.value, *names)
    assert isinstance(info.value, error), (type(info.value), info.value)
    return info.value


# ---- a pristine store, copied and damaged per test ----------------------------------------------------
@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("boundary") / "store"
    with FeatureStore(root) as s:
        s.apply([spec("items"), spec("ivf", index="ivf", params={"nlist": 4})])
        s.feature_group("items").insert(batch(keys_for(40, "string"), seed=1))
        s.feature_group("ivf").insert(batch(keys_for(300, "string"), seed=2, clustered=True))
        s.save_training_set("ts", SPINE, ["items:1"])
    from featurestore.training import flush_cache_writes

    flush_cache_writes()
    return root


@pytest.fixture
def root(pristine: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "store"
    shutil.copytree(pristine, copy)
    return copy


def table_dir(root: Path, name: str = "items") -> Path:
    return root / "feature_groups" / name / "v1"


def data_file(root: Path, name: str = "items") -> Path:
    files = sorted(table_dir(root, name).glob("*.parquet"))
    assert len(files) == 1
    return files[0]


def truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def flip(path: Path, start: int, stop: int) -> None:
    data = bytearray(path.read_bytes())
    for i in range(start, min(stop, len(data))):
        data[i] ^= 0x5A
    path.write_bytes(bytes(data))


def flip_column(path: Path, column: str) -> None:
    """Damage the pages of one column of a Parquet file; its footer (schema, row counts) stays intact."""
    rg = pq.ParquetFile(path).metadata.row_group(0)
    chunk = next(rg.column(i) for i in range(rg.num_columns) if rg.column(i).path_in_schema.split(".")[0] == column)
    flip(path, chunk.data_page_offset, chunk.data_page_offset + chunk.total_compressed_size)


def damage_log(root: Path) -> Path:
    log = table_dir(root) / "_delta_log" / f"{1:020d}.json"
    truncate(log, 0.3)
    return log


# ---- opening and registering ------------------------------------------------------------------------
def test_store_on_an_unusable_root(tmp_path: Path) -> None:
    raises(lambda: FeatureStore("nosuchscheme://bucket/store"), StorageError, "nosuchscheme://bucket/store")
    a_file = tmp_path / "not-a-folder"
    a_file.write_text("x")
    with FeatureStore(a_file) as s:
        raises(lambda: s.apply([spec("items")]), StorageError, str(a_file))
        raises(s.init, StorageError, str(a_file))
    blocked = tmp_path / "blocked"
    blocked.mkdir()
    (blocked / "feature_groups").write_text("a file where the registry folder belongs")
    with FeatureStore(blocked) as s:
        raises(s.specs, StorageError, str(blocked / "feature_groups"))
        raises(lambda: s.feature_group("items"), StorageError, str(blocked / "feature_groups"))


def test_damaged_registry_entry(root: Path) -> None:
    entry = table_dir(root) / "_spec.json"
    truncate(entry)
    with FeatureStore(root) as s:
        raises(lambda: s.feature_group("items"), StorageError, str(entry))
        raises(lambda: s.apply([spec("items")]), StorageError, str(entry))


# ---- SQL ----------------------------------------------------------------------------------------------
def test_sql_errors_are_query_errors(root: Path) -> None:
    with FeatureStore(root) as s:
        raises(lambda: s.sql("SELEC * FROM items"), QueryError, "SELEC")
        raises(lambda: s.sql("SELECT bogus FROM items"), QueryError, "bogus")
        # errors raised when the relation runs, not when it is made
        rel = s.sql("SELECT CAST(category AS INTEGER) AS n FROM items")
        raises(rel.fetchall, QueryError, "CAST(category AS INTEGER)")
        raises(lambda: s.sql("SELECT error('boom ' || id) FROM items").df(), QueryError, "boom", "items")
        raises(lambda: s.sql("SELECT CAST(category AS INTEGER) FROM items").filter("true").to_arrow_table(),
               QueryError, "category")
        raises(lambda: s.sql("SELECT CAST(category AS INTEGER) FROM items").to_arrow_reader().read_all(),
               QueryError, "category")
        # the relation is still a DuckDB relation: usable as one, and as a training spine
        ok = s.sql("SELECT id, event_time FROM items ORDER BY id LIMIT 3")
        assert isinstance(ok, duckdb.DuckDBPyRelation) and ok.columns == ["id", "event_time"] and len(ok) == 3
        assert s.training_set(ok, ["items:1:n_events"]).to_arrow().num_rows == 3


def test_sql_over_a_damaged_table(root: Path) -> None:
    path = data_file(root)
    flip_column(path, "category")
    with FeatureStore(root) as s:  # the files are checked against their checksums before DuckDB reads them
        raises(lambda: s.sql("SELECT count(*) FROM items"), CorruptData, str(path))
    damage_log(root)
    with FeatureStore(root) as s:
        raises(lambda: s.sql("SELECT 1"), StorageError, str(table_dir(root)))


def test_sql_over_a_truncated_data_file(root: Path) -> None:
    path = data_file(root)
    truncate(path)
    with FeatureStore(root) as s:
        raises(lambda: s.sql("SELECT * FROM items"), CorruptData, str(path))


# ---- feature groups -----------------------------------------------------------------------------------
@pytest.mark.parametrize("damage", ["truncated", "pages", "footer", "missing"])
def test_reads_of_a_damaged_data_file(root: Path, damage: str) -> None:
    path = data_file(root)
    if damage == "truncated":
        truncate(path)
    elif damage == "pages":
        flip(path, 4, path.stat().st_size // 2)
    elif damage == "footer":
        flip(path, path.stat().st_size - 200, path.stat().st_size - 8)
    else:
        path.unlink()
    with FeatureStore(root) as s:
        fg = s.feature_group("items")
        for call in (fg.read, fg.latest, fg.count):
            raises(call, StorageError, str(table_dir(root)))


def test_a_damaged_log(root: Path) -> None:
    damage_log(root)
    with FeatureStore(root) as s:
        fg = s.feature_group("items")
        for call in (fg.read, fg.latest, fg.count, fg.history, fg.commit_of):
            raises(call, StorageError, str(table_dir(root)))
        err = raises(lambda: fg.insert(batch(keys_for(3, "string"), seed=5, event_time=T0 + timedelta(days=1))),
                     StorageError, str(table_dir(root)))
        assert "<unknown>" not in str(err)  # deltalake's native backtrace is not part of the message
        raises(lambda: s.online("items"), StorageError, str(table_dir(root)))
        raises(lambda: s.validate("items"), StorageError, str(table_dir(root)))
        raises(lambda: s.training_set(SPINE, ["items:1"]).to_arrow(), StorageError, str(table_dir(root)))


def test_online_and_validate_over_a_damaged_data_file(root: Path) -> None:
    truncate(data_file(root))
    with FeatureStore(root) as s:
        raises(lambda: s.online("items"), StorageError, str(table_dir(root)))
        raises(lambda: s.validate("items"), StorageError, "items:1")


def test_validation_when_great_expectations_fails(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import great_expectations as gx
    from great_expectations.exceptions import GreatExpectationsError

    def broken(*_a: Any, **_k: Any) -> Any:
        raise GreatExpectationsError("the validation store is gone")

    monkeypatch.setattr(gx.ValidationDefinition, "run", broken)
    with FeatureStore(root) as s:
        raises(lambda: s.validate("items"), ValidationError, "items_v1", "the validation store is gone")
        fg = s.feature_group("items")
        before = fg.commit_of()
        raises(lambda: fg.insert(batch(keys_for(3, "string"), seed=5, event_time=T0 + timedelta(days=1))),
               ValidationError, "items_v1")
        assert fg.commit_of() == before  # nothing was committed


# ---- training sets --------------------------------------------------------------------------------------
def test_training_set_over_a_damaged_data_file(root: Path) -> None:
    path = data_file(root)
    truncate(path)
    with FeatureStore(root) as s:
        raises(lambda: s.training_set(SPINE, ["items:1"]).to_arrow(), StorageError, str(path))


def test_training_set_over_damaged_pages(root: Path) -> None:
    shutil.rmtree(root / "_cache")
    flip_column(data_file(root), "event_time")
    with FeatureStore(root, join_caches=False, cache_vectors=False) as s:
        # the file no longer matches the checksum its commit recorded: named as damaged, whatever DuckDB says
        raises(lambda: s.training_set(SPINE, ["items:1"]).to_arrow(), CorruptData, "items:1", str(data_file(root)))


def test_training_set_over_a_damaged_vector_column(root: Path) -> None:
    shutil.rmtree(root / "_cache")
    path = data_file(root)
    flip_column(path, "embedding")
    with FeatureStore(root, cache_vectors=False) as s:
        raises(lambda: s.training_set(SPINE, ["items:1"]).to_arrow(), CorruptData, str(path), "items:1")


@pytest.mark.parametrize("damage", ["truncated", "flipped"])
def test_a_damaged_vector_cache_is_rebuilt(pristine: Path, root: Path, damage: str) -> None:
    with FeatureStore(pristine) as s:
        want = s.training_set(SPINE, ["items:1"]).to_arrow()
    caches = list((root / "_cache" / "vectors").rglob("*.npy"))
    assert caches
    for c in caches:
        truncate(c) if damage == "truncated" else flip(c, 0, 64)
    with FeatureStore(root) as s:
        assert s.training_set(SPINE, ["items:1"]).to_arrow().equals(want)


def test_saved_training_set_with_damaged_files(root: Path) -> None:
    folder = root / "training_sets" / "ts" / "v1"
    manifest, data = folder / "manifest.json", folder / "data.parquet"
    good = manifest.read_text()
    with FeatureStore(root) as s:
        assert s.load_training_set("ts").to_arrow().num_rows == 3
        manifest.write_text(good[: len(good) // 2])
        raises(lambda: s.load_training_set("ts"), StorageError, "'ts'", str(manifest))
        manifest.write_text('{"name": "ts"}')
        raises(lambda: s.load_training_set("ts"), StorageError, "'ts'", str(manifest), "pins")
        manifest.write_text("[]")
        raises(lambda: s.load_training_set("ts"), StorageError, "'ts'", str(manifest))
        manifest.write_text(good)
        truncate(data)
        raises(s.load_training_set("ts").to_arrow, StorageError, "'ts'", str(data))


# ---- online views -----------------------------------------------------------------------------------------
VIEW_FILES = ["manifest.json", "vectors.npy", "search.npy", "keys.npy", "keyhash.npy", "columns.arrow",
              "index.faiss"]


@pytest.mark.parametrize("damage", ["truncated", "flipped"])
@pytest.mark.parametrize("name", VIEW_FILES)
def test_online_view_with_a_damaged_file(root: Path, name: str, damage: str) -> None:
    with FeatureStore(root) as s:
        path = s.online("ivf").path
    target = path / name
    assert target.exists()
    truncate(target) if damage == "truncated" else flip(target, 0, 64)
    if (name, damage) == ("columns.arrow", "flipped"):  # an Arrow file is read from its footer
        truncate(target, 0.9)
    raises(lambda: open_view(path), StorageError, str(path))
    with FeatureStore(root) as s:
        raises(lambda: s.online("ivf"), StorageError, str(path))


# ---- event sources ----------------------------------------------------------------------------------------
def test_event_sources_that_fail(tmp_path: Path) -> None:
    events = pa.table({"user_id": ["u1", "u2"] * 20, "item_id": [f"i{i % 5}" for i in range(40)],
                       "event_type": ["view"] * 40,
                       "event_time": pa.array([T0] * 40, pa.timestamp("us", tz="UTC"))})
    good = tmp_path / "events.parquet"
    pq.write_table(events, good)
    assert len(read_events(EventSource(str(good)))) == 40
    bad_query = "SELEC user_id FROM nowhere"
    raises(lambda: read_events(EventSource(query=bad_query)), EventsError, bad_query)
    fails_later = ("SELECT 'u1' AS user_id, error('no item here') AS item_id, 'view' AS event_type, "
                   "now() AS event_time")
    raises(lambda: read_events(EventSource(query=fails_later)), EventsError, "no item here", "SELECT 'u1'")
    with duckdb.connect() as con:
        raises(lambda: read_events(EventSource(query=fails_later, connection=con)), EventsError, "no item here")
    truncated = tmp_path / "truncated.parquet"
    truncated.write_bytes(good.read_bytes()[:80])
    raises(lambda: read_events(EventSource(str(truncated))), EventsError, str(truncated))
    pages = tmp_path / "pages.parquet"
    shutil.copy(good, pages)
    flip_column(pages, "item_id")
    raises(lambda: read_events(EventSource(str(pages))), EventsError, str(pages))
    raises(lambda: read_events(EventSource(str(tmp_path / "absent.parquet"))), EventsError, "absent.parquet")
    raises(lambda: read_events(EventSource(str(good), columns=Columns(entity="customer"))), EventsError,
           "'customer'")


def test_the_checks_can_fail() -> None:
    """``check`` itself refuses raw backend errors and messages that do not name the object."""
    with pytest.raises(AssertionError):
        check(duckdb.InvalidInputException("x"), "x")
    with pytest.raises(AssertionError):
        check(StorageError("cannot read it"), "/some/file")
    with pytest.raises(FileNotFoundError):  # a raw error passes through ``raises``: the test fails
        raises(lambda: np.load("/nonexistent.npy"), StorageError)
    with pytest.raises(AssertionError):
        raises(lambda: (_ for _ in ()).throw(QueryError("a query")), StorageError)
