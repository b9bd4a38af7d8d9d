"""Online views: materialisation, point lookups and similarity search against a plain reference."""

from __future__ import annotations

import json
import os
import time
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from featurestore import FeatureStore
from featurestore.errors import CommitNotFound, CorruptData, FeatureStoreError, InvalidQuery, KeyNotFound, NotFound
from featurestore.online import build as mat
from featurestore.online.view import OnlineView
from tests.conftest import T0
from tests.online_helpers import batch, brute_topk, keys_for, reference_latest, spec


def _store(tmp_path: Path, *specs: object) -> FeatureStore:
    s = FeatureStore(tmp_path / "store")
    s.apply(list(specs))
    return s


@pytest.mark.parametrize("key_type", ["string", "int64"])
def test_get_matches_latest_row_per_key(tmp_path: Path, key_type: str) -> None:
    store = _store(tmp_path, spec(key_type=key_type))
    fg = store.feature_group("items")
    b1 = batch(keys_for(50, key_type), seed=1)
    b2 = batch(keys_for(30, key_type, start=40), seed=2, event_time=T0 + timedelta(days=1))
    b3 = batch(keys_for(10, key_type, start=5), seed=3, event_time=T0 - timedelta(days=1))  # older: loses
    for b in (b1, b2, b3):
        fg.insert(b)
    ref = reference_latest([b1, b2, b3])
    view = store.online("items")
    assert view.commit == 3 and view.rows == len(ref) == 70
    absent = 10**9 if key_type == "int64" else "nope"
    asked = [*list(ref)[::3], absent]
    hit = view.get(asked, columns=["n_events", "category"])
    assert hit.found.tolist() == [True] * (len(asked) - 1) + [False]
    assert hit.missing == [absent]
    assert np.isnan(hit.vectors[-1]).all()
    for i, key in enumerate(asked[:-1]):
        np.testing.assert_array_equal(hit.vectors[i], np.asarray(ref[key]["embedding"], np.float32))
        assert hit.columns["n_events"][i] == ref[key]["n_events"]
        assert hit.columns["category"][i] == ref[key]["category"]
        np.testing.assert_array_equal(view[key], hit.vectors[i])
    assert hit.columns["n_events"][-1] is None
    with pytest.raises(KeyNotFound) as err:
        view[absent]
    assert isinstance(err.value, KeyError) and str(absent) in str(err.value)
    assert view.get([]).vectors.shape == (0, 8)
    view.warm()  # the hash map gives the same answers
    np.testing.assert_array_equal(view.get(asked).vectors[:-1], hit.vectors[:-1])


@pytest.mark.parametrize("key_type", ["string", "int64"])
def test_a_one_key_get_answers_as_a_batch_does(tmp_path: Path, key_type: str) -> None:
    """get() of one key takes its own path (one row number, no batch arrays): every field of its answer
    equals that key's row of a batch answer, found or missing, for numeric columns with and without nulls,
    strings and timestamps."""
    import pyarrow as pa

    store = _store(tmp_path, spec(key_type=key_type))
    b = batch(keys_for(40, key_type), seed=4)
    with_nulls = pa.array([None if i % 3 == 0 else v for i, v in enumerate(b["n_events"].to_pylist())], pa.int64())
    b = b.set_column(b.schema.get_field_index("n_events"), "n_events", with_nulls)
    store.feature_group("items").insert(b)
    view = store.online("items")
    absent = 10**9 if key_type == "int64" else "nope"
    columns = ["id", "event_time", "n_events", "category"]
    for key in [*keys_for(40, key_type)[::5], absent]:
        for features in (None, ["n_events"], ["embedding", "category"]):
            one = view.get([key], features=features, columns=columns)
            many = view.get([key, absent], features=features, columns=columns)
            assert one.keys == [key] and one.missing == many.missing[:-1]
            assert one.found.tolist() == many.found[:1].tolist() and one.rows.tolist() == many.rows[:1].tolist()
            np.testing.assert_array_equal(one.vectors, many.vectors[:1])
            assert one.columns == {c: v[:1] for c, v in many.columns.items()}
            assert list(one.features) == list(many.features)
            for f, v in one.features.items():
                if isinstance(v, np.ndarray):
                    assert v.dtype == many.features[f].dtype
                    np.testing.assert_array_equal(v, many.features[f][:1])
                else:
                    assert v == many.features[f][:1]


def test_wrong_key_types_and_queries_are_invalid(tmp_path: Path) -> None:
    store = _store(tmp_path, spec(key_type="int64"), spec("named"))
    store.feature_group("items").insert(batch(keys_for(20, "int64")))
    store.feature_group("named").insert(batch(keys_for(20, "string")))
    ints, strs = store.online("items"), store.online("named")
    for view, bad in ((ints, "7"), (ints, 1.5), (ints, True), (ints, 2**70), (strs, 7), (strs, None)):
        with pytest.raises(InvalidQuery):
            view.get([bad])
    with pytest.raises(InvalidQuery):
        ints.get(7)  # a bare key, not a sequence
    with pytest.raises(InvalidQuery, match="8 numbers"):
        ints.nearest([1.0, 2.0])
    with pytest.raises(InvalidQuery, match="NaN"):
        ints.nearest([float("nan")] * 8)
    with pytest.raises(InvalidQuery, match="zero"):
        ints.nearest([0.0] * 8)
    for k in (0, -1, 1.5, True):
        with pytest.raises(InvalidQuery):
            ints.nearest(key=7, k=k)
    with pytest.raises(InvalidQuery, match="exactly one"):
        ints.nearest([1.0] * 8, key=7)
    with pytest.raises(KeyNotFound):
        ints.nearest(key=8)
    with pytest.raises(InvalidQuery, match="no column 'nope'"):
        ints.nearest(key=7, filter={"nope": 1})
    with pytest.raises(InvalidQuery, match="unknown operator"):
        ints.nearest(key=7, filter={"n_events": {"between": 1}})
    with pytest.raises(InvalidQuery, match="does not fit"):
        ints.nearest(key=7, filter={"n_events": {"ge": "x"}})
    with pytest.raises(InvalidQuery, match="no scalar column"):
        ints.get([7], columns=["embedding"])


def test_view_is_built_once_and_reopened_fast(tmp_path: Path) -> None:
    store = _store(tmp_path, spec())
    fg = store.feature_group("items")
    fg.insert(batch(keys_for(100, "string")))
    view = store.online("items")
    path = view.path
    assert path == mat.view_path(fg, 1) and path.parent.name == "_online"
    stamp = (path / "manifest.json").stat().st_mtime_ns
    t = time.perf_counter()
    again = store.online("items")
    assert time.perf_counter() - t < 5  # generous: opening must not rebuild (checked by mtime below)
    assert (path / "manifest.json").stat().st_mtime_ns == stamp
    assert again.get(["k3"]).found.all()
    assert fg.read().num_rows == 100  # the Delta table ignores the _online folder
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]
    with pytest.raises(CommitNotFound, match="materialize"):
        store.online("items", commit=0, build=False)


def test_a_failed_build_publishes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = _store(tmp_path, spec())
    fg = store.feature_group("items")
    fg.insert(batch(keys_for(30, "string")))

    def broken(*_a: object, **_k: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(mat.np, "save", broken)
    with pytest.raises(OSError, match="disk full"):
        store.online("items")
    monkeypatch.undo()
    root = mat.views_dir(fg)
    assert list(root.iterdir()) == []  # neither a half-built view nor its temporary folder
    assert store.online("items").rows == 30


def test_commit_time_opens_the_commit_current_then(tmp_path: Path) -> None:
    store = _store(tmp_path, spec())
    fg = store.feature_group("items")
    b1 = batch(keys_for(20, "string"), seed=1)
    c1 = fg.insert(b1)
    time.sleep(0.01)
    c2 = fg.insert(batch(keys_for(20, "string"), seed=2, event_time=T0 + timedelta(days=1)))
    then = store.online("items", commit_time=c1.timestamp + (c2.timestamp - c1.timestamp) / 2)
    now = store.online("items")
    assert (then.commit, now.commit) == (c1.commit, c2.commit)
    np.testing.assert_array_equal(then["k4"], np.asarray(b1["embedding"][4].as_py(), np.float32))
    assert not np.array_equal(then["k4"], now["k4"])
    assert store.online("items", commit=c1.commit).commit == c1.commit
    with pytest.raises(CommitNotFound):
        store.online("items", commit_time=c1.timestamp - timedelta(days=1))
    with pytest.raises(InvalidQuery):
        store.online("items", commit=1, commit_time=c1.timestamp)
    with pytest.raises(NotFound):
        store.online("missing")


@pytest.mark.parametrize("metric", ["cosine", "dot", "l2"])
def test_filters_apply_before_ranking(tmp_path: Path, metric: str) -> None:
    store = _store(tmp_path, spec(metric=metric))
    b = batch(keys_for(300, "string"), seed=5)
    store.feature_group("items").insert(b)
    ref = reference_latest([b])
    view = store.online("items")
    q = np.random.default_rng(9).standard_normal(8).astype(np.float32)
    flt = {"category": ["a", "b"], "n_events": {"ge": 20, "lt": 90}}

    def keep(r: dict) -> bool:
        return r["category"] in ("a", "b") and 20 <= r["n_events"] < 90

    got = view.nearest(q, k=10, filter=flt)
    want = brute_topk(ref, q, 10, metric, keep)
    assert got.keys == [k for k, _ in want]
    np.testing.assert_allclose(got.scores, [s for _, s in want], rtol=1e-4, atol=1e-4)
    assert list(got.scores) == sorted(got.scores, reverse=True)
    few = {"n_events": {"lt": 3}}
    n_few = sum(r["n_events"] < 3 for r in ref.values())
    assert 0 < n_few < 10
    assert len(view.nearest(q, k=10, filter=few)) == n_few  # fewer than k match: all of them
    assert len(view.nearest(q, k=10, filter={"category": "zzz"})) == 0
    excl = [k for k, _ in want[:3]]
    after = view.nearest(q, k=10, filter=flt, exclude=excl)
    assert after.keys == [k for k, _ in brute_topk(ref, q, 13, metric, keep)[3:13]]


def test_cross_group_query(tmp_path: Path) -> None:
    store = _store(tmp_path, spec("items"), spec("users", key_type="int64"))
    items, users = batch(keys_for(100, "string"), seed=1), batch(keys_for(10, "int64"), seed=2)
    store.feature_group("items").insert(items)
    store.feature_group("users").insert(users)
    iv, uv = store.online("items"), store.online("users")
    got = iv.nearest(key=14, query_view=uv, k=5)
    want = brute_topk(reference_latest([items]), uv[14], 5, "cosine")
    assert got.keys == [k for k, _ in want]
    with pytest.raises(KeyNotFound, match="users"):
        iv.nearest(key=15, query_view=uv)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_exact_top_k_equals_brute_force(tmp_path_factory: pytest.TempPathFactory, data: st.DataObject) -> None:
    metric = data.draw(st.sampled_from(["cosine", "dot", "l2"]))
    n = data.draw(st.integers(1, 60))
    k = data.draw(st.integers(1, 70))
    seed = data.draw(st.integers(0, 10_000))
    tmp = tmp_path_factory.mktemp("prop")
    store = _store(tmp, spec(metric=metric, dim=4))
    b = batch(keys_for(n, "string"), seed=seed, dim=4)
    store.feature_group("items").insert(b)
    view = store.online("items")
    q = np.random.default_rng(seed + 1).standard_normal(4).astype(np.float32)
    exclude = data.draw(st.lists(st.sampled_from(keys_for(n, "string")), max_size=5))
    got = view.nearest(q, k=k, exact=True, exclude=exclude)
    want = brute_topk(reference_latest([b]), q, k, metric, lambda r: r["id"] not in exclude)
    assert len(got) == len(want) == min(k, n - len(set(exclude)))
    np.testing.assert_allclose(got.scores, [s for _, s in want], rtol=1e-4, atol=1e-4)
    # keys agree except where scores tie within float32 rounding
    for key, (wkey, wscore) in zip(got.keys, want):
        if key != wkey:
            assert abs(dict(want)[key] - wscore) < 1e-4 if key in dict(want) else False
    store.close()


@pytest.mark.parametrize(("index", "params"), [("ivf", {"nlist": 16}), ("hnsw", {"m": 16})])
def test_approximate_index_recall_and_filters(tmp_path: Path, index: str, params: dict) -> None:
    store = _store(tmp_path, spec(index=index, params=params, dim=16))
    b = batch(keys_for(3000, "string"), seed=3, dim=16, clustered=True)
    store.feature_group("items").insert(b)
    view = store.online("items")
    info = view.info()["index"]
    assert info["kind"] == index and info["recall_at_10"] >= 0.95 and info["breadth"] > 0
    assert (view.path / "index.faiss").exists()
    rng = np.random.default_rng(4)
    qs = np.asarray(view.matrix[rng.choice(3000, 50, replace=False)]) + 0.05 * rng.standard_normal((50, 16))
    approx = view.nearest_many(qs, k=10)
    exact = view.nearest_many(qs, k=10, exact=True)
    recall = np.mean([len(set(a.keys) & set(e.keys)) / 10 for a, e in zip(approx, exact)])
    assert recall >= 0.9 and not approx[0].exact and exact[0].exact
    # a filter matching few rows still returns k results, the exact ones
    few = {"n_events": {"lt": 2}, "category": "a"}
    ref = reference_latest([b])
    n_match = sum(r["n_events"] < 2 and r["category"] == "a" for r in ref.values())
    assert n_match > 10
    got = view.nearest(qs[0], k=10, filter=few)
    want = brute_topk(ref, qs[0], 10, "cosine", lambda r: r["n_events"] < 2 and r["category"] == "a")
    assert got.keys == [k for k, _ in want]
    # a broad filter goes through the index with the filter inside the search
    broad = view.nearest(qs[0], k=10, filter={"category": ["a", "b", "c"]})
    assert len(broad) == 10 and all(ref[k]["category"] != "d" for k in broad.keys)


def test_auto_index_is_exact_for_small_views_and_spec_errors(tmp_path: Path) -> None:
    from featurestore.errors import SpecError
    from featurestore.online import index as ix

    assert ix.resolve("auto", {}, 1000).kind == "flat"
    assert ix.resolve("auto", {}, 1_000_000).kind == "ivf"
    assert ix.resolve("auto", {}, 1_000_000).nlist == 2000
    with pytest.raises(SpecError, match="online.params"):
        ix.resolve("ivf", {"nlists": 3}, 10)
    with pytest.raises(SpecError, match="recall_target"):
        ix.resolve("ivf", {"recall_target": 1.5}, 10)
    store = _store(tmp_path, spec("bad", index="ivf", params={"nprobe": -1}))
    store.feature_group("bad").insert(batch(keys_for(10, "string")))
    with pytest.raises(SpecError, match="nprobe"):
        store.online("bad")
    views = mat.views_dir(store.feature_group("bad"))
    assert not views.exists() or not list(views.iterdir())


def test_empty_commit_and_corrupt_view(tmp_path: Path) -> None:
    store = _store(tmp_path, spec())
    empty = store.online("items")  # commit 0: the table was created, nothing inserted
    assert empty.rows == 0 and not empty.get(["k1"]).found.any()
    assert len(empty.nearest([1.0] * 8, k=3)) == 0
    manifest = empty.path / "manifest.json"
    good = manifest.read_text()
    (empty.path / "vectors.npy").write_bytes(b"garbage")
    with pytest.raises(CorruptData, match="vectors.npy"):
        OnlineView(empty.path)
    manifest.write_text(json.dumps({"format_version": 1}))
    with pytest.raises(CorruptData, match="no checksums"):
        OnlineView(empty.path)
    manifest.write_text(good[: len(good) // 2])
    with pytest.raises(FeatureStoreError, match="cannot open"):
        OnlineView(empty.path)


def _flip(path: Path, at: float = 0.5, n: int = 256) -> None:
    data = bytearray(path.read_bytes())
    start = min(int(len(data) * at), max(0, len(data) - n))
    for i in range(start, min(len(data), start + n)):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("key_type", ["string", "int64"])
@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_every_damaged_view_file_is_refused_naming_it(tmp_path: Path, key_type: str, damage: str) -> None:
    """Each file of a view, damaged in place: opening (as serving and reload do) refuses the view with a
    typed error naming the file; nothing is served from it; the next open of a rebuilt view answers."""
    store = _store(tmp_path, spec("items", key_type=key_type, index="ivf", params={"nlist": 4, "nprobe": 2},
                                  metric="cosine", normalized=False))
    keys = keys_for(400, key_type)
    store.feature_group("items").insert(batch(keys, seed=3))
    view = store.online("items")
    want = view.nearest(key=keys[0], k=5, exact=True)
    files = sorted(p.name for p in view.path.iterdir() if p.name != "manifest.json")
    assert {"keys.npy", "vectors.npy", "columns.arrow", "index.faiss"} <= set(files)
    for name in files:
        path = view.path / name
        original = path.read_bytes()
        if damage == "flip":
            _flip(path)
        else:
            path.write_bytes(original[: len(original) // 2])
        with pytest.raises(CorruptData, match=name):
            OnlineView(view.path)
        path.write_bytes(original)
    again = OnlineView(view.path)
    assert again.nearest(key=keys[0], k=5, exact=True).keys == want.keys


def test_keys_numpy_cannot_hold_are_found_exactly(tmp_path: Path) -> None:
    store = _store(tmp_path, spec())
    keys = ["a", "a\x00", "b", "é", ""]
    store.feature_group("items").insert(batch(keys, seed=3))
    view = store.online("items")
    assert view.manifest["key_hash_map"] is True
    hit = view.get(["a\x00", "a", "b\x00", ""])
    assert hit.found.tolist() == [True, True, False, True]
    assert not np.array_equal(view["a"], view["a\x00"])
    assert set(view.nearest([1.0] * 8, k=5).keys) == set(keys)
    plain = _store(tmp_path / "plain", spec())
    plain.feature_group("items").insert(batch(["a", "b"], seed=3))
    pv = plain.online("items")
    assert pv.manifest["key_hash_map"] is False
    assert pv.get(["a\x00", "a"]).found.tolist() == [False, True]
    assert "a\x00" not in pv and "a" in pv


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_search_breadth_is_honoured_and_tuned(kind: str) -> None:
    from featurestore.online import index as ix

    rng = np.random.default_rng(0)
    m = rng.standard_normal((4000, 16)).astype(np.float32)  # no clusters: approximate search is hard
    m /= np.linalg.norm(m, axis=1, keepdims=True)
    q = m[:100] + 0.1 * rng.standard_normal((100, 16)).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    exact, exact_sc = ix.exact_topk(m, q, 10, "cosine")
    cfg = ix.resolve(kind, {"nlist": 64} if kind == "ivf" else {"m": 8, "ef_construction": 40}, len(m))
    index = ix.build(m, "cosine", cfg)
    narrow, _ = ix.search(index, cfg, 1, q, 10, "cosine")
    wide, wide_sc = ix.search(index, cfg, 64 if kind == "ivf" else 512, q, 10, "cosine")
    assert ix.recall_at_k(narrow, exact) < ix.recall_at_k(wide, exact)
    assert ix.recall_at_k(wide, exact) >= 0.95
    if kind == "ivf":  # probing every list is exhaustive
        np.testing.assert_allclose(wide_sc, exact_sc, atol=1e-5)
    strict = ix.IndexConfig(**{**cfg.to_dict(), "recall_target": 0.99})
    breadth, recall = ix.tune(index, strict, m, "cosine")
    assert breadth > 1 and recall >= 0.99


_key_text = st.text(alphabet=st.sampled_from(["a", "b", "\x00", "é", "😀", "1"]), max_size=6)


@settings(max_examples=150, deadline=None)
@given(stored=st.sets(_key_text.filter(lambda k: not k.endswith("\x00")), max_size=60),
       extra=st.lists(_key_text, max_size=30))
def test_key_hash_table_agrees_with_a_dict(stored: set[str], extra: list[str]) -> None:
    from featurestore.online.keys import KeyIndex, build_hash_table, hash_string, hash_strings, sort_keys

    sorted_keys, _ = sort_keys(sorted(stored), "string")
    index = KeyIndex(sorted_keys, "string", slots=build_hash_table(sorted_keys))
    reference = {k: i for i, k in enumerate(sorted_keys.tolist())}
    queries = sorted(stored) + extra
    expected = [reference.get(q, -1) for q in queries]
    assert index.rows(queries).tolist() == expected
    assert [index.row(q) for q in queries] == expected
    assert index.rows(np.asarray(sorted(stored), dtype=str)).tolist() == expected[:len(stored)]
    for q in queries:
        assert hash_string(q) == int(hash_strings(np.asarray([q], dtype=str))[0])


def test_a_build_killed_midway_is_cleaned_by_the_next_build(tmp_path: Path) -> None:
    import subprocess
    import sys

    store = _store(tmp_path, spec())
    store.feature_group("items").insert(batch(keys_for(20, "string")))
    fg = store.feature_group("items")
    root = mat.views_dir(fg)
    root.mkdir(parents=True)
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = root / f".build-{int(gone.stdout)}-c1-0123abcd"  # the process that wrote it has exited
    dead.mkdir()
    (dead / "vectors.npy").write_bytes(b"x" * 1000)
    live = root / f".build-{os.getppid()}-c1-4567cdef"  # a build still running in a live process
    live.mkdir()
    store.online("items")
    assert not dead.exists() and live.exists()


@pytest.mark.parametrize(("metric", "index", "params"),
                         [("cosine", "ivf", {"nlist": 16}), ("dot", "ivf", {"nlist": 16}), ("l2", "hnsw", {"m": 8})])
def test_a_single_query_gets_what_the_index_itself_answers(tmp_path: Path, metric: str, index: str,
                                                           params: dict) -> None:
    """The one-query path (straight to faiss) answers as the batch path and as faiss called directly with
    the view's own breadth; anything unusual (a short answer, a bad vector) falls back to the full path."""
    import faiss

    store = _store(tmp_path, spec(metric=metric, index=index, params=params, dim=16))
    store.feature_group("items").insert(batch(keys_for(2000, "int64"), seed=5, dim=16, clustered=True))
    view = store.online("items")
    rng = np.random.default_rng(6)
    qs = (np.asarray(view.matrix[rng.choice(2000, 40, replace=False)])
          + 0.1 * rng.standard_normal((40, 16))).astype(np.float32)
    batch_answers = view.nearest_many(qs, k=10)
    raw = qs / np.linalg.norm(qs, axis=1, keepdims=True) if metric == "cosine" else qs
    faiss.omp_set_num_threads(1)
    dist, rows = view._index.search(np.ascontiguousarray(raw), 10)  # the view set its breadth on the index
    for q, many, d, r in zip(qs, batch_answers, dist, rows):
        one = view.nearest(q, k=10)
        assert not one.exact and one.rows.tolist() == many.rows.tolist() == r.tolist()
        assert one.keys == view.keys.keys[r].tolist()
        want = -np.sqrt(np.maximum(d, 0)) if metric == "l2" else d
        np.testing.assert_allclose(one.scores, want, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(many.scores, want, rtol=1e-5, atol=1e-5)
    # warmed for serving, the index is read into memory: the same answers
    view.warm()
    assert [view.nearest(q, k=10).rows.tolist() for q in qs] == [a.rows.tolist() for a in batch_answers]
    # k beyond what the probed lists hold: still k answers (searched wider), as many as rows at most
    assert len(view.nearest(qs[0], k=1500)) == 1500
    assert len(view.nearest(qs[0], k=5000)) == 2000
    for bad in ([np.nan] * 16, [1.0] * 15, "x", [[1.0] * 16]):
        with pytest.raises(InvalidQuery):
            view.nearest(bad, k=3)
    if metric == "cosine":
        with pytest.raises(InvalidQuery, match="zero"):
            view.nearest(np.zeros(16, np.float32), k=3)
        huge = np.full(16, 3e38, np.float32)  # finite, but its float32 sum of squares is not
        assert view.nearest(huge, k=3).keys == view.nearest(np.ones(16, np.float32), k=3).keys
