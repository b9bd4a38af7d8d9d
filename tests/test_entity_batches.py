"""An insert in batches (FeatureGroup.insert_batches, what a pipeline's entity commit uses): the same rows
and the same validation report as one batch holding them all, and nothing left behind when it fails."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from featurestore import FeatureStore
from featurestore.engine.events import EventSource
from featurestore.errors import DuplicateKey, ValidationFailed
from featurestore.pipeline import Pipeline
from featurestore.synthetic import purchase_histories
from featurestore.validation import report

from .conftest import SCHEMAS, T0, item_batch

W = {"view": 1.0, "add_to_cart": 2.0, "purchase": 4.0}
START = datetime(2026, 10, 1, tzinfo=UTC)


def _store(path: Path) -> FeatureStore:
    s = FeatureStore(path)
    s.apply(SCHEMAS)
    return s


def _sorted(t: pa.Table) -> pa.Table:
    return t.sort_by([(t.column_names[0], "ascending"), ("event_time", "ascending")])


def _checks(store: FeatureStore, name: str, commit: int) -> list[tuple[Any, ...]]:
    """The checks of the report linked from a commit, without timings and ids."""
    c = store.feature_group(name, 1).commit(commit)
    r = report.load(store.root, c.extra["validation_report"], name, 1)
    return [(k.name, k.success, k.skipped, repr(k.observed), repr(k.threshold), k.details) for k in r.checks]


def _added_files(store: FeatureStore, name: str, commit: int) -> set[str]:
    fg = store.feature_group(name, 1)
    return set(fg.files(commit)) - set(fg.files(commit - 1))


def _data_files(store: FeatureStore, name: str) -> set[str]:
    return {p.name for p in Path(store.root.uri_of(f"feature_groups/{name}/v1")).glob("*.parquet")}


@pytest.fixture(scope="module")
def events() -> pa.Table:
    return purchase_histories(n_users=300, n_items=120, n_events=9_000, n_categories=6, days=10, seed=4).events


def test_a_run_committed_in_batches_gives_the_rows_and_reports_of_one_batch(events, tmp_path):
    """Two dated runs (the second incremental: drift against the first) with one entity batch and with
    batches of 37 entities: identical rows, identical validation checks, several files per commit."""
    stores = {}
    for label, batch_rows in (("one", None), ("many", 37)):
        store = stores[label] = _store(tmp_path / label)
        p = Pipeline("batches", EventSource(events), weights=W, entity_batch_rows=batch_rows,
                     retrain_every=timedelta(days=30))
        for day in (6, 8):
            assert p.run(store, START + timedelta(days=day), quiet=True).status == "written"
    one, many = stores["one"], stores["many"]
    for name in ("item_embeddings", "user_embeddings"):
        assert _sorted(one.feature_group(name, 1).read()).equals(_sorted(many.feature_group(name, 1).read()))
    users_one, users_many = one.feature_group("user_embeddings", 1), many.feature_group("user_embeddings", 1)
    for c_one, c_many in zip(users_one.history()[1:], users_many.history()[1:], strict=True):
        assert c_one.row_count == c_many.row_count > 37
        assert _checks(one, "user_embeddings", c_one.commit) == _checks(many, "user_embeddings", c_many.commit)
        assert len(_added_files(one, "user_embeddings", c_one.commit)) == 1
        assert len(_added_files(many, "user_embeddings", c_many.commit)) == -(-c_many.row_count // 37)
    drift = [k for k in _checks(many, "user_embeddings", users_many.history()[-1].commit) if "drift" in k[0]]
    assert drift and not drift[0][2]  # the second run's drift check ran (not skipped) on the staged rows


def test_insert_batches_equals_insert_of_all_rows_with_every_check(tmp_path):
    """item_embeddings checks duplicates (row hashes), collapse and drift: the same report either way,
    with duplicate vectors spread over several batches."""
    base = item_batch(300, seed=3)
    vecs = base["embedding"].combine_chunks()
    dup = pa.concat_arrays([vecs.slice(0, 295), vecs.slice(0, 5)])  # the last 5 repeat the first 5
    whole = base.set_column(base.schema.get_field_index("embedding"), "embedding", dup)
    first = item_batch(200, seed=3)  # the same vectors for the first 200 keys: drift passes
    reports, rows = [], []
    for label, split in (("one", [whole]), ("many", [whole.slice(i, 70) for i in range(0, 300, 70)])):
        store = _store(tmp_path / label)
        fg = store.feature_group("item_embeddings", 1)
        fg.insert(first, cutoff=T0)
        commit = fg.insert(whole, cutoff=T0 + timedelta(hours=1)) if label == "one" else \
            fg.insert_batches(iter(split), cutoff=T0 + timedelta(hours=1))
        reports.append(_checks(store, "item_embeddings", commit.commit))
        rows.append(_sorted(fg.read(commit.commit)))
    assert rows[0].equals(rows[1])
    assert reports[0] == reports[1]
    dups = [k for k in reports[1] if "duplicate" in k[0]]
    assert dups and "'rows': 10" in dups[0][3]


def _user_batch(ids: range, *, norm: float = 1.0, seed: int = 0) -> pa.Table:
    v = np.random.default_rng(seed).standard_normal((len(ids), 64)).astype(np.float32)
    v *= np.float32(norm) / np.linalg.norm(v, axis=1, keepdims=True)
    return pa.table({
        "user_id": [f"u{i:04d}" for i in ids],
        "embedding": pa.FixedSizeListArray.from_arrays(pa.array(v.ravel()), 64),
        "n_events": pa.array(np.ones(len(ids), np.int64)),
        "last_event_time": pa.array([T0] * len(ids), pa.timestamp("us", tz="UTC")),
    })


@pytest.mark.parametrize("bad", ["strict_validation", "duplicate_key", "writer_error"])
def test_a_failing_batch_leaves_no_commit_and_no_files(tmp_path, bad):
    store = _store(tmp_path / "s")
    fg = store.feature_group("user_embeddings", 1)
    fg.insert(_user_batch(range(0, 100)), cutoff=T0)
    history, files = fg.history(), _data_files(store, "user_embeddings")

    def batches():
        yield _user_batch(range(100, 160))
        if bad == "writer_error":
            raise RuntimeError("the aggregation failed")
        yield _user_batch(range(160, 220), norm=2.0) if bad == "strict_validation" else _user_batch(range(150, 170))

    expected = {"strict_validation": ValidationFailed, "duplicate_key": DuplicateKey,
                "writer_error": RuntimeError}[bad]
    cached = _cached(store)
    with pytest.raises(expected):
        fg.insert_batches(batches(), cutoff=T0 + timedelta(hours=1))
    assert fg.history() == history
    assert _data_files(store, "user_embeddings") == files
    assert _cached(store) == cached == {f.removesuffix(".parquet") for f in files}  # no copy of a deleted file
    assert fg.read().num_rows == 100


def _cached(store: FeatureStore) -> set[str]:
    from featurestore.training.writer import flush_cache_writes

    flush_cache_writes()
    folder = Path(store.root.local_dir) / "_cache" / "vectors" / "user_embeddings" / "v1"
    return {p.name.removesuffix(".embedding.npy") for p in folder.glob("*.npy")}


def test_a_batched_insert_writes_the_vector_cache_of_every_file(tmp_path):
    """The commit holds no batch, so each batch's vectors are copied to the training cache as its files
    are written: one copy per data file, row for row the file's vectors, and a training set over the
    commit reads them (equal to the stored vectors)."""
    import pyarrow.parquet as pq

    store = _store(tmp_path / "s")
    fg = store.feature_group("user_embeddings", 1)
    whole = _user_batch(range(0, 230), seed=3)
    fg.insert_batches(iter([whole.slice(i, 50) for i in range(0, 230, 50)]), cutoff=T0)
    files = fg.files()
    assert len(files) == 5 and _cached(store) == {Path(f).name.removesuffix(".parquet") for f in files}
    folder = Path(store.root.local_dir) / "_cache" / "vectors" / "user_embeddings" / "v1"
    for f in files:
        mat = np.load(folder / f"{Path(f).name.removesuffix('.parquet')}.embedding.npy")
        assert mat.tolist() == pq.read_table(f, columns=["embedding"])["embedding"].to_pylist()
    spine = pa.table({"user_id": ["u0007", "u0199", "u9999"], "t": pa.array([T0 + timedelta(hours=1)] * 3,
                                                                          pa.timestamp("us", tz="UTC"))})
    got = store.training_set(spine, ["user_embeddings:1:embedding"], event_time="t").to_arrow()
    want = whole["embedding"].to_pylist()
    assert got["user_embeddings__embedding"].to_pylist() == [want[7], want[199], None]


def test_no_batch_is_an_empty_insert(tmp_path):
    """No batch at all is validated as an empty batch (user_embeddings needs at least one row)."""
    fg = _store(tmp_path / "s").feature_group("user_embeddings", 1)
    with pytest.raises(ValidationFailed, match="row"):
        fg.insert_batches(iter(()), cutoff=T0)
    assert [c.operation for c in fg.history()] == ["create"]


def test_a_refused_batched_insert_reports_what_one_batch_would(tmp_path):
    """Rows failing the suite's row-wise checks (norm, n_events) spread over several batches: the same
    refusal and the same report (counts, percentages, examples, row numbers) as one batch holding them all."""
    good = _user_batch(range(0, 240))
    v = good["embedding"].combine_chunks().flatten().to_numpy().reshape(240, 64).copy()
    bad_rows = np.arange(7, 240, 23)
    v[bad_rows] *= 3.0  # norm 3: out of [0.999, 1.001]
    n_events = np.ones(240, np.int64)
    n_events[bad_rows[::2]] = -1  # n_events: min 0
    whole = good.set_column(1, "embedding", pa.FixedSizeListArray.from_arrays(pa.array(v.ravel()), 64)) \
        .set_column(2, "n_events", pa.array(n_events))
    reports = []
    for label in ("one", "many"):
        fg = _store(tmp_path / label).feature_group("user_embeddings", 1)
        with pytest.raises(ValidationFailed) as err:
            if label == "one":
                fg.insert(whole, cutoff=T0)
            else:
                fg.insert_batches(iter([whole.slice(i, 50) for i in range(0, 240, 50)]), cutoff=T0)
        reports.append([(k.name, k.success, k.skipped, repr(k.observed), repr(k.threshold), k.details)
                        for k in err.value.report.checks])
    assert reports[0] == reports[1]
    failed = {k[0]: k[3] for k in reports[1] if not k[1]}
    assert "'unexpected_count': 11" in failed["embedding: norm between"]
    assert "'rows': [7, 30, 53, 76, 99]" in failed["embedding: norm between"]
    assert "'unexpected_count': 6" in failed["n_events: values between"]


def test_per_row_scalars_kept_as_one_value_read_like_full_arrays():
    """A batch whose rows are all valid keeps dimension, non-finite count and validity as one repeated
    value; joined with batches that are not (BatchChecks used on raw batches), every row reads the same
    as the arrays derive() gives, and the checks agree with those on the whole batch."""
    from featurestore.schema import load_spec
    from featurestore.validation import embedding
    from featurestore.validation.batches import BatchChecks, _joined

    spec = load_spec(SCHEMAS / "user_embeddings.v1.yaml")
    good, more = _user_batch(range(0, 40)), _user_batch(range(60, 90), seed=2)
    bad = _user_batch(range(40, 60), seed=1)
    vecs = bad["embedding"].combine_chunks().values.to_numpy().copy()
    vecs[5] = np.nan  # one row not finite: that batch keeps full arrays
    bad = bad.set_column(1, "embedding", pa.FixedSizeListArray.from_arrays(pa.array(vecs), 64))
    good, more, bad = (b.append_column("event_time", pa.array([T0] * b.num_rows, pa.timestamp("us", tz="UTC")))
                       for b in (good, more, bad))
    for order in ([good, good.slice(0, 0), more], [good, bad, more]):
        checks = BatchChecks(spec)
        for b in order:
            checks.add(b, [])
        _, derived = checks.finish()
        got = derived["embedding"]
        whole = embedding.derive(pa.concat_tables(order)["embedding"], "embedding", 64)
        for name in ("dims", "nonfinite", "valid"):
            assert np.array_equal(getattr(got, name), getattr(whole, name)), name
        assert (embedding.repeated(got.valid) is True) == bool(whole.valid.all())
        rule = next(r for r in checks.rules if r.feature == "embedding")
        assert embedding.check_dtype(got, 64) == embedding.check_dtype(whole, 64)
        assert embedding.check_norm_distribution(got, rule.norm_distribution) == \
            embedding.check_norm_distribution(whole, rule.norm_distribution)
    one = np.broadcast_to(np.int64(3), (4,))
    assert _joined([one, np.broadcast_to(np.int64(4), (2,))]).tolist() == [3, 3, 3, 3, 4, 4]
    assert _joined([one, np.array([3, 3])]).strides != (0,)
