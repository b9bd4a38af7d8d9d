"""Point-in-time training sets: a property test against a plain-Python reference join, TTL edges,
leakage at one microsecond, corrections in both modes, pins, spine inputs and errors."""

from __future__ import annotations

import itertools
import tempfile
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from featurestore import FeatureStore, FeatureStoreError, InvalidData, SpineError
from featurestore.errors import FeatureGroupNotFound, QueryError
from featurestore.schema import FeatureGroupSpec
from featurestore.training import flush_cache_writes
from tests.conftest import T0, item_batch

US = timedelta(microseconds=1)
UTCZ = pa.timestamp("us", tz="UTC")


def _spec(name: str, key: str, key_type: str) -> FeatureGroupSpec:
    return FeatureGroupSpec.from_dict({
        "name": name, "version": 1, "entity_keys": [{"name": key, "type": key_type}], "event_time": "event_time",
        "policy": "warn",
        "features": [{"name": "vec", "type": "vector", "dim": 2, "metric": "dot"},
                     {"name": "x", "type": "float64"}]})


GROUPS = {"ga": ("k", "string"), "gb": ("u", "int64")}


def _new_store() -> tuple[FeatureStore, tempfile.TemporaryDirectory]:
    tmp = tempfile.TemporaryDirectory()
    store = FeatureStore(Path(tmp.name) / "s")
    store.apply([_spec(n, k, t) for n, (k, t) in GROUPS.items()])
    return store, tmp


def _batch(key: str, key_type: str, rows: list[tuple[int, datetime, float | None]], commit: int = 0) -> pa.Table:
    """A batch whose vectors say which commit and row they came from: [commit, row]."""
    keys = [f"k{k}" if key_type == "string" else k for k, _, _ in rows]
    vec = np.array([[float(commit), float(i)] for i in range(len(rows))], np.float32)
    return pa.table({key: keys, "event_time": pa.array([t for _, t, _ in rows], UTCZ),
                     "vec": pa.FixedSizeListArray.from_arrays(pa.array(vec.ravel().reshape(-1)), 2),
                     "x": pa.array([x for _, _, x in rows], pa.float64())})


def reference(stored: dict[str, list[dict]], spine: list[dict], ttl: timedelta | None, known_at: str) -> list[dict]:
    """The plain-Python join: per spine row and group, the row of that key with the greatest
    (event_time, _ingested_at) among event_time <= t (and >= t - ttl; and _ingested_at <= t for
    known_at="spine"), else nulls."""
    out = []
    for row in spine:
        t = row["t"]
        res = {}
        for name, (key, _) in GROUPS.items():
            best = None
            if t is not None and row[key] is not None:
                for r in stored[name]:
                    if r[key] != row[key] or r["event_time"] > t:
                        continue
                    if known_at == "spine" and r["_ingested_at"] > t:
                        continue
                    order = (r["event_time"], r["_ingested_at"])
                    if best is None or order > (best["event_time"], best["_ingested_at"]):
                        best = r
            if best is not None and ttl is not None and best["event_time"] < t - ttl:
                best = None
            res[f"{name}__x"] = best["x"] if best else None
            res[f"{name}__vec"] = list(best["vec"]) if best else None
            res[f"{name}__event_time"] = best["event_time"] if best else None
        out.append(res)
    return out


ZONES = [None, "UTC", "America/New_York", "Asia/Kolkata"]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_matches_reference_join(data: st.DataObject) -> None:
    store, tmp = _new_store()
    try:
        base = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
        offsets = st.integers(0, 3).map(lambda h: base + timedelta(minutes=10 * h))
        for name, (key, ktype) in GROUPS.items():
            for c in range(data.draw(st.integers(0 if name == "gb" else 1, 3), label=f"{name} commits")):
                rows = data.draw(st.lists(st.tuples(st.integers(0, 3), offsets,
                                                    st.one_of(st.none(), st.floats(-9, 9, allow_nan=False))),
                                          min_size=1, max_size=6, unique_by=lambda r: (r[0], r[1])))
                store.feature_group(name, 1).insert(_batch(key, ktype, rows, commit=c))
        stored = {n: store.feature_group(n, 1).read(system_columns=True).to_pylist() for n in GROUPS}
        # candidate spine times: every stored event and commit time, a microsecond either side, others
        times = [base - timedelta(minutes=5), datetime.now(UTC) + timedelta(minutes=1)]
        for rows in stored.values():
            for r in rows:
                for t in (r["event_time"], r["_ingested_at"]):
                    times += [t - US, t, t + US]
        n = data.draw(st.integers(0, 12), label="spine rows")
        spine = []
        for _ in range(n):
            spine.append({"k": data.draw(st.one_of(st.integers(0, 4).map(lambda i: f"k{i}"), st.none())),
                          "u": data.draw(st.one_of(st.integers(0, 4), st.none())),
                          "t": data.draw(st.one_of(st.sampled_from(times), st.just(None)))})
        if spine and data.draw(st.booleans(), label="duplicate a row"):
            spine.append(dict(spine[0]))
        ttl = data.draw(st.sampled_from([None, timedelta(0), timedelta(minutes=10), timedelta(minutes=25)]))
        zone = data.draw(st.sampled_from(ZONES), label="spine time zone")
        tz = ZoneInfo(zone) if zone else None
        local = [None if r["t"] is None else (r["t"].astimezone(tz) if tz else r["t"].replace(tzinfo=None))
                 for r in spine]
        df = pd.DataFrame({"k": pd.Series([r["k"] for r in spine], dtype=object),
                           "u": pd.Series([r["u"] for r in spine], dtype="Int64"),
                           "t": pd.Series(local, dtype=f"datetime64[us, {zone}]" if zone else "datetime64[us]"),
                           "label": np.arange(len(spine))})
        features = ["ga:1:x,vec,event_time", "gb:1:x,vec,event_time"]
        store.training_set(df, features, event_time="t").to_arrow()  # leaves a join cache per group behind
        flush_cache_writes()
        for known_at, indexed in itertools.product(("latest", "spine"), (True, False)):
            store.join_caches = indexed  # the sorted join cache and the Parquet files give the same rows
            ts = store.training_set(df, features, event_time="t", ttl=ttl, known_at=known_at)
            assert ("{cache" in ts.sql) == indexed  # ga always has rows: its join cache was left behind
            got = ts.to_arrow()
            assert got.column("label").to_pylist() == list(range(len(spine)))  # order and every row kept
            want = reference(stored, spine, ttl, known_at)
            for name in GROUPS:
                for col in ("x", "vec", "event_time"):
                    c = f"{name}__{col}"
                    values = got.column(c).to_pylist()
                    if col == "vec":
                        values = [None if v is None else [float(a) for a in v] for v in values]
                    assert values == [w[c] for w in want], (known_at, indexed, c, spine)
    finally:
        store.close()
        tmp.cleanup()


def _one(store: FeatureStore, t: datetime, ttl: timedelta | None = None, key: str = "i0") -> datetime | None:
    spine = pa.table({"item_id": [key], "ts": pa.array([t], UTCZ)})
    got = store.training_set(spine, ["item_embeddings:1:event_time"], event_time="ts", ttl=ttl).to_arrow()
    return got.column("item_embeddings__event_time")[0].as_py()


def test_row_one_microsecond_after_the_spine_time_is_never_used(items: FeatureStore) -> None:
    t1 = T0 + timedelta(hours=1)
    assert _one(items, t1 - US) == T0
    assert _one(items, t1) == t1
    assert _one(items, T0 - US) is None


def test_ttl_edges_are_inclusive(items: FeatureStore) -> None:
    t = T0 + timedelta(minutes=30)
    assert _one(items, t, ttl=timedelta(minutes=30)) == T0
    assert _one(items, t + US, ttl=timedelta(minutes=30)) is None  # latest row is stale: null, not an older one
    assert _one(items, T0, ttl=timedelta(0)) == T0
    assert _one(items, T0 + US, ttl=timedelta(0)) is None
    assert _one(items, t, ttl=timedelta(minutes=30), key="i4") == T0


def test_corrections_latest_vs_spine(store: FeatureStore) -> None:
    fg = store.feature_group("item_embeddings", 1)
    t_event = datetime.now(UTC) - timedelta(hours=1)
    first = item_batch(2, seed=1, event_time=t_event)
    fg.insert(first)
    landed_first = fg.read(system_columns=True).column("_ingested_at")[0].as_py()
    fix = item_batch(2, seed=2, event_time=t_event)  # a correction of the same (key, event_time)
    fix = fix.set_column(fix.schema.get_field_index("n_events"), "n_events", pa.array([100, 101], pa.int64()))
    fg.insert(fix)
    landed_fix = max(fg.read(system_columns=True).column("_ingested_at").to_pylist())
    times = [t_event, landed_first, landed_fix - US, landed_fix]
    spine = pa.table({"item_id": ["i0"] * 4, "ts": pa.array(times, UTCZ)})
    latest = store.training_set(spine, ["item_embeddings:1:n_events"], event_time="ts").to_arrow()
    assert latest.column("item_embeddings__n_events").to_pylist() == [100, 100, 100, 100]
    served = store.training_set(spine, ["item_embeddings:1:n_events"], event_time="ts", known_at="spine")
    assert served.to_arrow().column("item_embeddings__n_events").to_pylist() == [None, 0, 0, 100]


def test_backfill_of_an_older_time_in_spine_mode(store: FeatureStore) -> None:
    """A backfill committed later for an older event_time never replaces a newer row, and in spine mode
    it is invisible before it landed."""
    fg = store.feature_group("item_embeddings", 1)
    now = datetime.now(UTC)
    fg.insert(item_batch(1, seed=1, event_time=now - timedelta(hours=1)))
    fg.insert(item_batch(1, seed=2, event_time=now - timedelta(hours=3)))  # backfill
    landed = max(fg.read(system_columns=True).column("_ingested_at").to_pylist())
    times = [now - timedelta(hours=2), landed + US]
    spine = pa.table({"item_id": ["i0", "i0"], "ts": pa.array(times, UTCZ)})
    for known_at, want in (("latest", [now - timedelta(hours=3), now - timedelta(hours=1)]),
                           ("spine", [None, now - timedelta(hours=1)])):
        got = store.training_set(spine, ["item_embeddings:1:event_time"], event_time="ts", known_at=known_at)
        assert got.to_arrow().column("item_embeddings__event_time").to_pylist() == want


def test_pins_rebuild_identical_bytes(items: FeatureStore, tmp_path: Path) -> None:
    spine = pa.table({"item_id": ["i0", "i1", "i9", "i2"], "ts": pa.array([T0 + timedelta(hours=2)] * 4, UTCZ)})
    ts = items.training_set(spine, ["item_embeddings:1"], event_time="ts")
    first = ts.to_arrow()
    ts.to_parquet(tmp_path / "a.parquet")
    fg = items.feature_group("item_embeddings", 1)
    fg.insert(item_batch(3, seed=9, event_time=T0 + timedelta(hours=1)))  # a correction
    fg.insert(item_batch(3, seed=8, event_time=T0 + timedelta(hours=1, minutes=30)))
    again = items.training_set(spine, ["item_embeddings:1"], event_time="ts", pins=ts.pins)
    again.to_parquet(tmp_path / "b.parquet")
    assert (tmp_path / "a.parquet").read_bytes() == (tmp_path / "b.parquet").read_bytes()
    assert again.to_arrow().equals(first)
    assert not items.training_set(spine, ["item_embeddings:1"], event_time="ts").to_arrow().equals(first)


def test_spine_inputs_agree(items: FeatureStore, tmp_path: Path) -> None:
    spine = pa.table({"item_id": ["i2", "i0", None, "i0", "zz"], "ts": pa.array(
        [T0 + timedelta(minutes=m) for m in (90, 5, 5, 61, 120)], UTCZ), "y": [1, 0, 1, 1, 0]})
    pq.write_table(spine.slice(0, 2), tmp_path / "s1.parquet")
    pq.write_table(spine.slice(2), tmp_path / "s2.parquet")
    pq.write_table(spine, tmp_path / "all.parquet", row_group_size=2)
    features = ["item_embeddings:1:embedding,n_events"]
    want = items.training_set(spine, features, event_time="ts").to_arrow()
    assert want.column("y").to_pylist() == [1, 0, 1, 1, 0]
    assert want.column("item_embeddings__n_events").to_pylist() == [2, 0, None, 0, None]
    rel = items.duck.con.cursor().sql(f"SELECT * FROM read_parquet('{tmp_path / 'all.parquet'}')")
    for source in (spine.to_pandas(), tmp_path / "all.parquet", str(tmp_path / "s*.parquet"),
                   [tmp_path / "s1.parquet", tmp_path / "s2.parquet"], rel, spine.to_batches()[0]):
        got = items.training_set(source, features, event_time="ts").to_arrow()
        assert got.select(want.column_names).cast(want.schema).equals(want), type(source)


def test_several_groups_with_their_own_keys(store: FeatureStore) -> None:
    items = store.feature_group("item_embeddings", 1)
    users = store.feature_group("user_embeddings", 1)
    items.insert(item_batch(3, event_time=T0))
    u = item_batch(2, seed=5, event_time=T0 + timedelta(hours=1)).rename_columns(
        ["user_id", "embedding", "n_events", "last_event_time", "event_time"])
    users.insert(u.set_column(0, "user_id", pa.array(["u0", "u1"])))
    spine = pd.DataFrame({"uid": ["u0", "u1", "u0"], "item_id": ["i1", "i2", "i0"],
                          "label_time": [T0 + timedelta(hours=2), T0, T0 + timedelta(hours=1)], "y": [1, 0, 1]})
    ts = store.training_set(spine, ["user_embeddings:1:embedding", "item_embeddings:1"],
                            entity_keys={"user_embeddings": "uid"}, event_time="label_time")
    got = ts.to_pandas()
    assert list(got.columns) == ["uid", "item_id", "label_time", "y", "user_embeddings__embedding",
                                 "item_embeddings__embedding", "item_embeddings__n_events",
                                 "item_embeddings__last_event_time"]
    assert got["user_embeddings__embedding"].isna().tolist() == [False, True, False]
    assert got["item_embeddings__n_events"].tolist() == [1, 2, 0]
    np.testing.assert_array_equal(got["user_embeddings__embedding"][0],
                                  users.read().column("embedding")[0].values.to_numpy())
    assert set(ts.pins) == {"user_embeddings:1", "item_embeddings:1"}
    with pytest.raises(InvalidData, match="clashes"):
        store.training_set(spine, ["user_embeddings:1", "item_embeddings:1"],
                           entity_keys={"user_embeddings": "uid"}, event_time="label_time", prefix=False)


def test_to_parquet_streams_exact_row_groups(items: FeatureStore, tmp_path: Path) -> None:
    n = 5000
    spine = pa.table({"item_id": [f"i{i % 7}" for i in range(n)],
                      "ts": pa.array([T0 + timedelta(seconds=i) for i in range(n)], UTCZ)})
    ts = items.training_set(spine, ["item_embeddings:1"], event_time="ts")
    assert ts.to_parquet(tmp_path / "t.parquet", row_group_size=1024) == n
    meta = pq.ParquetFile(tmp_path / "t.parquet").metadata
    assert [meta.row_group(i).num_rows for i in range(meta.num_row_groups)] == [1024] * 4 + [904]
    back = pq.read_table(tmp_path / "t.parquet")
    assert back.equals(ts.to_arrow())
    assert back.schema.field("item_embeddings__embedding").type == pa.list_(pa.float32(), 64)
    empty = items.training_set(spine.slice(0, 0), ["item_embeddings:1"], event_time="ts")
    assert empty.to_parquet(tmp_path / "e.parquet") == 0
    assert pq.read_table(tmp_path / "e.parquet").schema.names == empty.columns


def test_empty_feature_group_gives_nulls(store: FeatureStore) -> None:
    spine = pa.table({"item_id": ["i0"], "ts": pa.array([T0], UTCZ)})
    got = store.training_set(spine, ["item_embeddings:1"], event_time="ts").to_arrow()
    assert got.column("item_embeddings__embedding").null_count == 1


def test_decoded_vectors_are_cached_and_reused(items: FeatureStore) -> None:
    spine = pa.table({"item_id": ["i0", "i3"], "ts": pa.array([T0 + timedelta(hours=2)] * 2, UTCZ)})
    first = items.training_set(spine, ["item_embeddings:1:embedding"], event_time="ts").to_arrow()
    flush_cache_writes()  # the cache is written behind
    cached = sorted((Path(items.root.uri) / "_cache").rglob("*.npy"))
    assert len(cached) == 2
    for p in cached:  # a cache file of the wrong shape is ignored and rewritten
        np.save(p, np.zeros((1, 3), np.float32))
    reopened = FeatureStore(items.root.uri)
    again = reopened.training_set(spine, ["item_embeddings:1:embedding"], event_time="ts").to_arrow()
    assert again.equals(first)
    reopened.close()


@pytest.mark.parametrize("kwargs, error, match", [
    ({"event_time": "nope"}, SpineError, "no event-time column 'nope'"),
    ({"event_time": "item_id"}, SpineError, "must be a timestamp"),
    ({"features": ["nope:1"]}, FeatureGroupNotFound, "nope"),
    ({"features": ["item_embeddings:1:nope"]}, InvalidData, "no feature 'nope'"),
    ({"features": ["Item Embeddings"]}, InvalidData, "bad feature reference"),
    ({"features": []}, InvalidData, "features is empty"),
    ({"entity_keys": {"item_embeddings": "missing"}}, SpineError, "no column 'missing'"),
    ({"entity_keys": {"item_embeddings": "n"}}, SpineError, "cannot join"),
    ({"entity_keys": {"user_embeddings": "item_id"}}, InvalidData, "not in features"),
    ({"pins": {"item_embeddings:1": 99}}, FeatureStoreError, "99"),
    ({"pins": {"user_embeddings:1": 0}}, InvalidData, "no commit for item_embeddings:1"),
    ({"known_at": "later"}, InvalidData, "known_at"),
    ({"ttl": timedelta(days=-1)}, InvalidData, "non-negative"),
])
def test_bad_requests_raise_typed_errors(items: FeatureStore, kwargs: dict, error: type, match: str) -> None:
    spine = pa.table({"item_id": ["i0"], "n": [1], "ts": pa.array([T0], UTCZ)})
    args = {"features": ["item_embeddings:1"], "event_time": "ts", **kwargs}
    with pytest.raises(error, match=match):
        items.training_set(spine, **args).to_arrow()


def test_bad_spines(items: FeatureStore, tmp_path: Path) -> None:
    with pytest.raises(SpineError, match="not found"):
        items.training_set(tmp_path / "missing.parquet", ["item_embeddings:1"], event_time="ts")
    with pytest.raises(SpineError, match="must be a pandas"):
        items.training_set({"item_id": ["i0"]}, ["item_embeddings:1"], event_time="ts")
    (tmp_path / "junk.parquet").write_bytes(b"not parquet")
    with pytest.raises(SpineError, match="cannot read the spine"):
        items.training_set(tmp_path / "junk.parquet", ["item_embeddings:1"], event_time="ts")
    with pytest.raises(SpineError, match="reserved"):
        items.training_set(pa.table({"item_id": ["i0"], "ts": pa.array([T0], UTCZ), "__fs_row": [1]}),
                           ["item_embeddings:1"], event_time="ts")


def test_sql_is_visible_and_query_errors_are_translated(items: FeatureStore) -> None:
    spine = pa.table({"item_id": ["i0"], "ts": pa.array([T0], UTCZ)})
    ts = items.training_set(spine, ["item_embeddings:1"], event_time="ts")
    assert "ASOF LEFT JOIN" in ts.sql
    # a data file gone between planning and running: the engine's error arrives as a QueryError
    gone = tuple(f + ".gone" for f in ts._request.groups[0].files)
    ts._request = replace(ts._request, groups=(replace(ts._request.groups[0], files=gone, cache=None),),
                          caches={})
    with pytest.raises(QueryError, match="training-set query failed"):
        ts.to_arrow()


def test_memory_limit_is_lowered_for_the_call_only(items: FeatureStore, tmp_path: Path) -> None:
    spine = pa.table({"item_id": ["i0"], "ts": pa.array([T0], UTCZ)})
    ts = items.training_set(spine, ["item_embeddings:1"], event_time="ts")

    def limit() -> str:
        return items.duck.con.cursor().execute("SELECT current_setting('memory_limit')").fetchall()[0][0]

    before = limit()
    seen = []
    for table in ts.to_batches(memory_limit="300MB"):
        seen.append((limit(), table.num_rows))
    assert seen == [("286.1 MiB", 1)]
    assert limit() == before
    assert ts.to_parquet(tmp_path / "t.parquet", memory_limit=None) == 1
    with pytest.raises(InvalidData, match="memory_limit"):
        ts.to_parquet(tmp_path / "u.parquet", memory_limit="lots")
    assert limit() == before


def test_columns_named_like_duckdb_virtual_columns_join_right(tmp_path: Path) -> None:
    """Row positions come from DuckDB's virtual file_index/file_row_number columns unless a real column
    hides one; either way each spine row gets the vectors of its own commit and row."""
    base = _spec("plain", "k", "string").to_dict()
    hidden = {**base, "name": "hidden", "features": [*base["features"], {"name": "file_index", "type": "int64"}]}
    store = FeatureStore(tmp_path / "s")
    store.apply([FeatureGroupSpec.from_dict(base), FeatureGroupSpec.from_dict(hidden)])
    for c in range(3):  # three commits: three files
        rows = [(k, T0 + timedelta(days=c), float(k)) for k in range(4)]
        store.feature_group("plain").insert(_batch("k", "string", rows, commit=c))
        store.feature_group("hidden").insert(_batch("k", "string", rows, commit=c).append_column(
            "file_index", pa.array([100 + c] * 4, pa.int64())))
    spine = pa.table({"k": ["k0", "k3", "k2", "k1"],
                      "t": pa.array([T0 + timedelta(days=d, hours=1) for d in (2, 0, 1, 2)], UTCZ)})
    got = store.training_set(spine, ["plain:1", "hidden:1"], event_time="t").to_arrow().to_pydict()
    expected = [[2.0, 0.0], [0.0, 3.0], [1.0, 2.0], [2.0, 1.0]]  # [commit, row] of the matched rows
    assert got["plain__vec"] == expected
    assert got["hidden__vec"] == expected
    assert got["hidden__file_index"] == [102, 100, 101, 102]


@pytest.mark.parametrize("cache", [True, False])
def test_inserts_write_the_vector_cache_behind(tmp_path: Path, cache: bool) -> None:
    import featurestore.storage.staging as staging

    store = FeatureStore(tmp_path / "s", cache_vectors=cache)
    store.apply([_spec("ga", "k", "string")])
    fg = store.feature_group("ga")
    rows = [(k, T0, float(k)) for k in range(10)]
    old = staging.TARGET_FILE_BYTES
    staging.TARGET_FILE_BYTES = 200  # a few rows per file: the batch is split across files
    try:
        fg.insert(_batch("k", "string", rows))
    finally:
        staging.TARGET_FILE_BYTES = old
    flush_cache_writes()
    files = fg.files()
    assert len(files) > 1
    cached = sorted((tmp_path / "s" / "_cache").rglob("*.npy"))
    assert len(cached) == (len(files) if cache else 0)
    for f in files if cache else []:
        base = Path(f).name.removesuffix(".parquet")
        mat = np.load(tmp_path / "s" / "_cache" / "vectors" / "ga" / "v1" / f"{base}.vec.npy")
        stored = pq.read_table(f, columns=["vec"])["vec"].to_pylist()
        assert mat.tolist() == stored  # row for row the file's own vectors
    spine = pa.table({"k": [f"k{i}" for i in (9, 0, 4)], "t": pa.array([T0] * 3, UTCZ)})
    got = store.training_set(spine, ["ga:1:vec"], event_time="t").to_arrow()["ga__vec"].to_pylist()
    assert got == [[0.0, 9.0], [0.0, 0.0], [0.0, 4.0]]
    store.close()


def test_cache_command_shows_prunes_and_clears(items: FeatureStore, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from featurestore.cli import main

    flush_cache_writes()
    root = str(items.root.uri)
    folder = Path(root) / "_cache" / "vectors" / "item_embeddings" / "v1"
    live = sorted(p.name for p in folder.iterdir())
    assert len(live) == 2  # one per data file, written at insert
    np.save(folder / "part-00000-gone-c000.snappy.embedding.npy", np.zeros((3, 64), np.float32))  # vacuumed file
    spine = pa.table({"item_id": ["i0", "i4"], "ts": pa.array([T0 + timedelta(hours=2)] * 2, UTCZ)})
    before = items.training_set(spine, ["item_embeddings:1:embedding"], event_time="ts").to_arrow()
    flush_cache_writes()
    joins = Path(root) / "_cache" / "joins" / "item_embeddings" / "v1"
    index = next(joins.iterdir())  # built by that training set
    table = pa.table({"x": [1]}).replace_schema_metadata({"featurestore.files": '["part-gone.parquet"]'})
    with pa.OSFile(str(joins / "old.arrow"), "wb") as sink, pa.ipc.new_file(sink, table.schema) as w:
        w.write_table(table)  # the index of a commit whose files were vacuumed
    assert main(["cache", "--root", root, "--json"]) == 0
    usage = json.loads(capsys.readouterr().out)
    assert [(u["table"], u["files"], u["orphans"]) for u in usage] == [
        ("item_embeddings/v1 (vectors)", 3, 1), ("item_embeddings/v1 (joins)", 2, 1)]
    assert main(["cache", "--root", root, "--prune"]) == 0
    assert "deleted 2 cache file(s)" in capsys.readouterr().out
    assert sorted(p.name for p in folder.iterdir()) == live
    assert list(joins.iterdir()) == [index]
    assert main(["cache", "--root", root, "--clear"]) == 0
    assert not list(folder.iterdir()) and not list(joins.iterdir())
    capsys.readouterr()
    assert main(["cache", "--root", root]) == 0
    assert capsys.readouterr().out.strip() == "the training-set cache is empty"
    fresh = FeatureStore(root)
    assert fresh.training_set(spine, ["item_embeddings:1:embedding"], event_time="ts").to_arrow().equals(before)
    fresh.close()


def _files_under(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_ino for p in folder.iterdir()} if folder.exists() else {}


def test_join_index_is_built_once_reused_rebuilt_and_bounded(tmp_path: Path) -> None:
    """The first training set over a commit sorts its rows into a join cache; later ones map it
    (same file), a damaged one is rebuilt, at most KEEP are kept per feature group version, and
    every result equals the one read straight from the Parquet files."""
    from featurestore.training import join_cache

    store = FeatureStore(tmp_path / "s")
    store.apply([_spec("ga", "k", "string")])
    fg = store.feature_group("ga")
    spine = pa.table({"k": ["k3", "k0", "k9", "k1"], "t": pa.array([T0 + timedelta(days=9)] * 4, UTCZ)})
    folder = tmp_path / "s" / "_cache" / "joins" / "ga" / "v1"

    def run(**kw: Any) -> pa.Table:
        out = store.training_set(spine, ["ga:1"], event_time="t", **kw).to_arrow()
        flush_cache_writes()  # the index is saved behind
        return out

    def plain(**kw: Any) -> pa.Table:
        store.join_caches = False
        try:
            return run(**kw)
        finally:
            store.join_caches = True

    fg.insert(_batch("k", "string", [(k, T0 + timedelta(days=k % 3), float(k)) for k in range(5)]))
    first = run()
    built = _files_under(folder)
    assert len(built) == 1
    assert first.equals(plain())
    assert run().equals(first) and _files_under(folder) == built  # mapped, not rebuilt
    index = folder / next(iter(built))
    index.write_bytes(b"not an arrow file")
    assert run().equals(first)
    assert join_cache.join_cache_sources(str(index)) == [Path(f).name for f in fg.files()]  # rebuilt
    pins = store.training_set(spine, ["ga:1"], event_time="t").pins
    for c in range(1, join_cache.KEEP + 2):  # a new commit: a new index, the oldest ones dropped
        fg.insert(_batch("k", "string", [(k, T0 + timedelta(days=c), float(c)) for k in range(0, 5, 2)], commit=c))
        assert run().equals(plain())
        assert len(_files_under(folder)) == min(c + 1, join_cache.KEEP)
    assert run(pins=pins).equals(first)  # an old commit's index is built again when needed
    assert plain(pins=pins).equals(first)
    # a group with an index gets its new commit's index at insert, so the next training set maps one
    fg.insert(_batch("k", "string", [(1, T0 + timedelta(days=20), 9.0)], commit=99))
    flush_cache_writes()
    ts = store.training_set(spine, ["ga:1"], event_time="t")
    assert "{cache0}" in ts.sql and ts.to_arrow().equals(plain())
    # a group never read into a training set gets none
    store.apply([_spec("gz", "k", "string")])
    store.feature_group("gz").insert(_batch("k", "string", [(1, T0, 1.0)]))
    flush_cache_writes()
    assert not (tmp_path / "s" / "_cache" / "joins" / "gz").exists()
    store.close()


def test_int_keys_are_narrowed_in_the_index_only_when_they_fit(tmp_path: Path) -> None:
    """An int64 key whose values fit in int32 is stored as int32 in the join cache; a spine key out of
    that range then matches nothing (it is never wrapped onto a small key), and a group with a key
    beyond int32 keeps int64 and joins it."""
    from featurestore.training import join_cache

    store = FeatureStore(tmp_path / "s")
    store.apply([_spec("small", "u", "int64"), _spec("big", "u", "int64")])
    store.feature_group("small").insert(_batch("u", "int64", [(3, T0, 1.0), (5, T0, 2.0)]))
    store.feature_group("big").insert(_batch("u", "int64", [(3, T0, 1.0), (1 << 40, T0, 2.0)]))
    spine = pa.table({"u": pa.array([3, (1 << 32) + 3, -(1 << 31) - 1, 1 << 40], pa.int64()),
                      "t": pa.array([T0 + timedelta(hours=1)] * 4, UTCZ)})

    def run() -> dict[str, list]:
        out = store.training_set(spine, ["small:1:x", "big:1:x"], event_time="t").to_arrow().to_pydict()
        flush_cache_writes()
        return out

    first = run()  # from the Parquet files
    second = run()  # from the join caches
    assert first == second
    assert second["small__x"] == [1.0, None, None, None]
    assert second["big__x"] == [1.0, None, None, 2.0]
    ts = store.training_set(spine, ["small:1:x", "big:1:x"], event_time="t")
    assert "TRY_CAST" in ts.sql and ts.sql.count("{cache") == 2  # both groups read from their join caches

    def index_of(name: str) -> pa.Table:
        (path,) = (tmp_path / "s" / "_cache" / "joins" / name / "v1").iterdir()
        return join_cache.open_join_cache(str(path))

    assert join_cache.has_key32(index_of("small"))
    assert not join_cache.has_key32(index_of("big"))
    store.close()


def test_arrow_results_do_not_import_pandas(items: FeatureStore, tmp_path: Path) -> None:
    """A training set from a Parquet or Arrow spine to Arrow never imports pandas (pyarrow's
    ``to_numpy``/``pa.array`` would, at 0.3 s a fresh process), on both the Parquet and index paths;
    nulls (an absent key) still come out as null vectors."""
    from tests.conftest import run_python

    flush_cache_writes()
    spine = tmp_path / "spine.parquet"
    pq.write_table(pa.table({"item_id": ["i1", "nope", "i4"],
                             "ts": pa.array([T0 + timedelta(hours=2)] * 3, UTCZ)}), spine)
    code = (
        "import sys\n"
        "import pyarrow.parquet as pq\n"
        "from featurestore import FeatureStore\n"
        "from featurestore.training import flush_cache_writes\n"
        f"store = FeatureStore({str(items.root.uri)!r})\n"
        "for _ in range(2):  # the first leaves the join cache behind, the second maps it\n"
        f"    for spine in ({str(spine)!r}, pq.ParquetFile({str(spine)!r}).read()):\n"
        "        got = store.training_set(spine, ['item_embeddings:1'], event_time='ts').to_arrow()\n"
        "        vec = got.column('item_embeddings__embedding')\n"
        "        assert vec.null_count == 1 and vec[1].as_py() is None and len(vec[0].as_py()) == 64\n"
        "    flush_cache_writes()\n"
        "store.close()\n"
        "assert 'pandas' not in sys.modules, 'a training set imported pandas'\n"
        "print('ok')\n")
    out = run_python(code, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


def test_a_training_set_without_any_value_from_a_group_says_so(items: FeatureStore, caplog) -> None:
    """known_at='spine' over rows committed after the labels (a backfill) finds nothing: say why."""
    import logging

    spine = pa.table({"item_id": ["i0", "i1"], "ts": pa.array([T0 + timedelta(hours=2)] * 2, UTCZ)})
    with caplog.at_level(logging.WARNING, logger="featurestore.training"):
        got = items.training_set(spine, ["item_embeddings:1"], event_time="ts", known_at="spine").to_arrow()
    assert got.column("item_embeddings__n_events").null_count == 2
    assert "no feature values for any of the 2 spine rows from item_embeddings:1" in caplog.text
    assert "known_at='latest' reads them" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="featurestore.training"):
        got = items.training_set(spine, ["item_embeddings:1"], event_time="ts").to_arrow()
    assert got.column("item_embeddings__n_events").null_count == 0 and caplog.text == ""
    with caplog.at_level(logging.WARNING, logger="featurestore.training"):
        list(items.training_set(spine, ["item_embeddings:1"], event_time="ts", known_at="spine").to_batches())
    assert "no feature values" in caplog.text  # streamed too
