"""A batched insert past ``SPILL_ROWS`` rows keeps its keys on disk in hash buckets, not in memory: the
same commit, the same validation report and the same refusals as with the keys in memory, and nothing
of the spill left behind."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from featurestore import FeatureGroupSpec, FeatureStore
from featurestore.errors import DuplicateKey
from featurestore.validation import batches, embedding, gx, report

T = datetime(2026, 11, 1, tzinfo=UTC)
DIM = 8
SPECS = {
    "strings": {  # every vector check: duplicates (keys of the candidates), collapse, drift, coverage
        "name": "things", "version": 1,
        "entity_keys": [{"name": "thing_id", "type": "string"}],
        "features": [{"name": "embedding", "type": "vector", "dim": DIM},
                     {"name": "n_events", "type": "int64"}],
        "expectations": {
            "row_count": {"min": 1, "max": 10_000},
            "keys": {"not_null": True, "unique_per_event_time": True},
            "columns": {"n_events": {"min": 0, "not_null": True}},
            "vectors": {"embedding": {
                "duplicates": {"max_share": 0.5},
                "norm_distribution": {"p01_min": 0.0, "p99_max": 100.0, "cv_max": 10.0},
                "collapse": {"sample": 150, "min_effective_rank": 2, "max_mean_cosine": 0.9, "min_rows": 20},
                "drift": {"sample": 150, "k": 5, "min_mean_cosine": 0.0, "min_neighbor_overlap": 0.0, "min_shared": 10},
                "coverage": {"expected": "previous_commit", "min_share": 0.1},
            }},
        },
    },
    "compound": {  # an integer and a string key; coverage of every key in the table
        "name": "pairs", "version": 1,
        "entity_keys": [{"name": "user_id", "type": "int64"}, {"name": "market", "type": "string"}],
        "features": [{"name": "embedding", "type": "vector", "dim": DIM, "metric": "dot"},
                     {"name": "n_events", "type": "int64"}],
        "expectations": {"vectors": {"embedding": {
            "duplicates": {"max_share": 0.5},
            "drift": {"sample": 100, "k": 5, "min_shared": 10, "min_mean_cosine": -1.0, "min_neighbor_overlap": 0.0},
            "coverage": {"expected": "table", "min_share": 0.1}}}},
    },
}


def rows(kind: str, ids: np.ndarray, seed: int, when: datetime) -> pa.Table:
    """Rows for ``ids``; a tenth of them share the vector of the row before (duplicates across keys)."""
    rng = np.random.default_rng(seed)
    v = rng.standard_normal((len(ids), DIM)).astype(np.float32)
    v[1::10] = v[0::10][: len(v[1::10])]
    keys: dict[str, Any] = {"thing_id": [f"t{i:05d}" for i in ids]} if kind == "strings" else \
        {"user_id": pa.array(ids // 2, pa.int64()), "market": ["de" if i % 2 else "fr" for i in ids]}
    return pa.table({**keys, "event_time": pa.array([when] * len(ids), pa.timestamp("us", tz="UTC")),
                     "embedding": pa.FixedSizeListArray.from_arrays(pa.array(v.ravel()), DIM),
                     "n_events": pa.array(rng.integers(0, 9, len(ids)), pa.int64())})


def checks(store: FeatureStore, name: str, commit: int) -> list[tuple[Any, ...]]:
    c = store.feature_group(name, 1).commit(commit)
    r = report.load(store.root, c.extra["validation_report"], name, 1)
    return [(k.name, k.success, k.skipped, repr(k.observed), repr(k.threshold), k.details) for k in r.checks]


def insert_twice(path: Path, kind: str, monkeypatch: pytest.MonkeyPatch, spill_rows: int
                 ) -> tuple[FeatureStore, int, list[bool]]:
    """A first commit, then 700 rows in batches of 90 (keys in shuffled order, a third of the first
    commit's keys again); whether each batch found the keys spilled as it arrived."""
    monkeypatch.setattr(batches, "SPILL_ROWS", spill_rows)
    spill = path / "spill"
    spill.mkdir(parents=True)
    store = FeatureStore(path / "store", temp_directory=str(spill))
    store.apply(FeatureGroupSpec.from_dict(SPECS[kind]))
    fg = store.feature_group(SPECS[kind]["name"], 1)
    fg.insert(rows(kind, np.arange(300), 1, T), cutoff=T)
    seen: list[bool] = []
    fg.before_commit.append(lambda _fg, _batch: seen.append(any(spill.iterdir())) or {})
    ids = np.random.default_rng(5).permutation(np.arange(200, 900))
    whole = rows(kind, ids, 2, T + timedelta(days=1))
    commit = fg.insert_batches((whole.slice(i, 90) for i in range(0, 700, 90)), cutoff=T + timedelta(days=2))
    assert not any(spill.iterdir())  # the spilled keys were removed
    return store, commit.commit, seen


@pytest.mark.parametrize("kind", sorted(SPECS))
def test_spilled_keys_give_the_commit_and_report_of_keys_in_memory(tmp_path, monkeypatch, kind):
    memory, c_memory, seen_memory = insert_twice(tmp_path / "memory", kind, monkeypatch, 10_000)
    disk, c_disk, seen_disk = insert_twice(tmp_path / "disk", kind, monkeypatch, 250)
    assert not any(seen_memory) and seen_disk == [False] * 3 + [True] * 5  # spilled from the 4th batch
    name = SPECS[kind]["name"]
    got, want = checks(disk, name, c_disk), checks(memory, name, c_memory)
    assert got == want
    ran = {k[0]: k for k in got}
    assert any("drift" in n and not k[2] for n, k in ran.items())  # drift compared sampled keys
    coverage = next(k for n, k in ran.items() if "coverage" in n)
    assert "'present': 100" in coverage[3] or "'present': 100," in coverage[3], coverage  # ids 200..299
    if kind == "strings":
        dup = next(k for n, k in ran.items() if "duplicate" in n)
        assert "'groups': 70" in dup[3] and "t00" in dup[3]  # the keys of duplicate candidates, read back
    a = memory.feature_group(name, 1).read(c_memory)
    b = disk.feature_group(name, 1).read(c_disk)
    assert a.drop(["_ingested_at"]).equals(b.drop(["_ingested_at"])) if "_ingested_at" in a.column_names \
        else a.equals(b)


@pytest.mark.parametrize("kind", sorted(SPECS))
def test_a_duplicate_key_among_spilled_keys_is_refused_as_in_memory(tmp_path, monkeypatch, kind):
    """Repeated keys far apart in the insert: DuplicateKey with the same count and first example; no
    commit, no data file and no spilled key left."""
    messages = []
    for label, spill_rows in (("memory", 10_000), ("disk", 100)):
        monkeypatch.setattr(batches, "SPILL_ROWS", spill_rows)
        spill = tmp_path / label / "spill"
        spill.mkdir(parents=True)
        store = FeatureStore(tmp_path / label / "store", temp_directory=str(spill))
        store.apply(FeatureGroupSpec.from_dict(SPECS[kind]))
        fg = store.feature_group(SPECS[kind]["name"], 1)
        parts = [*(np.arange(i, min(i + 60, 400)) for i in range(0, 400, 60)), [350, 17, 399], [17]]
        with pytest.raises(DuplicateKey) as err:  # 3 keys repeated (17 three times), each batch unique
            fg.insert_batches((rows(kind, np.asarray(p), 3, T) for p in parts), cutoff=T)
        messages.append(str(err.value))
        assert [c.operation for c in fg.history()] == ["create"]
        assert not list(Path(store.root.uri_of(fg.rel)).glob("*.parquet"))
        assert not any(spill.iterdir())
    assert messages[0] == messages[1]
    assert "3 key(s)" in messages[1]


@pytest.mark.parametrize("shown_only", [False, True])
@pytest.mark.parametrize("high", [150, 200])
def test_table_level_expectations_over_groups_of_whole_keys_add_up_to_one_run(high, shown_only):
    """great_expectations' values-unique and row count run on groups of whole keys (rows renumbered)
    merge to the results of one run on every row: counts, percentage, the first values and row numbers in
    row order, and the row count's verdict (every group is under the bound of 150, all 200 rows are not)."""
    gx.load()
    unique = {"type": gx.UNIQUE, "kwargs": {"column": "k"}, "meta": {"check": "k unique", "column": "k"}}
    count = {"type": gx.ROW_COUNT, "kwargs": {"min_value": 10, "max_value": high}, "meta": {"check": "rows"}}
    doc = {"name": "t", "expectations": [count, unique]}
    values = np.random.default_rng(1).integers(0, 60, 200).astype(float)
    values[[5, 50]] = np.nan  # missing values count as neither
    whole = gx.run(doc, pd.DataFrame({"k": values}))
    group_of = np.where(np.isnan(values), 0, values) % 3
    parts, numbers = [], []
    for g in range(3):
        at = np.flatnonzero(group_of == g)
        parts.append(gx.outcomes(doc, pd.DataFrame({"k": values[at]})))
        shown = parts[-1][1].result["partial_unexpected_index_list"]  # what SuiteParts keeps of a group
        numbers.append({int(i): int(at[i]) for i in shown} if shown_only else at)
    got = [gx.merged(item, [p[k] for p in parts], rows=numbers) for k, item in enumerate(doc["expectations"])]
    assert got == whole
    assert [r.success for r in got] == [high == 200, False]
    with pytest.raises(ValueError, match="not row-wise"):
        gx.merged(unique, [p[1] for p in parts], starts=[0, 70, 140])


@settings(max_examples=60, deadline=None)
@given(n=st.integers(0, 2_000), share=st.floats(0.0, 1.0), k=st.integers(1, 400), seed=st.integers(0, 99),
       chunk=st.sampled_from([1, 7, 64, 1 << 20]))
def test_sample_rows_draws_what_choice_over_the_row_numbers_draws(n, share, k, seed, chunk):
    """The collapse and drift samples of a large insert, drawn chunk by chunk without a row number per
    valid row, are the very rows the draw over every valid row number gives."""
    mask = np.random.default_rng(seed).random(n) < share
    rows = np.flatnonzero(mask)
    want = rows if len(rows) <= k else np.sort(np.random.default_rng(seed).choice(rows, k, replace=False))
    before, embedding._SAMPLE_CHUNK = embedding._SAMPLE_CHUNK, chunk
    try:
        got, total = embedding.sample_rows(mask, k, np.random.default_rng(seed))
    finally:
        embedding._SAMPLE_CHUNK = before
    assert total == len(rows)
    assert got.tolist() == want.tolist()
    view = np.broadcast_to(np.asarray(True), (n,))  # a batched insert's all-valid column
    assert embedding.sample_rows(view, k, np.random.default_rng(seed))[1] == n


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 3_000), levels=st.integers(1, 50), seed=st.integers(0, 99), some_invalid=st.booleans(),
       chunk=st.sampled_from([1, 7, 256, 1 << 20]))
def test_norm_statistics_chunk_by_chunk_from_memory_or_disk(tmp_path_factory, n, levels, seed, some_invalid, chunk):
    """The norm distribution's statistics, chunk by chunk: the quantiles, min and max exactly numpy's
    (repeated values included), mean and std numpy's to rounding, and the same numbers bit for bit
    whether the norms are in memory or in a file (a large batched insert's)."""
    rng = np.random.default_rng(seed)
    norms = rng.integers(0, levels, n) / levels + rng.random(n) * 1e-3 - (seed % 3 == 0) * 0.5
    valid = rng.random(n) < 0.8 if some_invalid else np.broadcast_to(np.asarray(True), (n,))
    path = tmp_path_factory.mktemp("norms") / "n.f64"
    norms.tofile(path)
    before, embedding._SAMPLE_CHUNK = embedding._SAMPLE_CHUNK, chunk
    try:
        got = embedding.norm_stats(norms, valid)
        on_disk = embedding.norm_stats(embedding.DiskColumn(str(path), n), valid)
    finally:
        embedding._SAMPLE_CHUNK = before
    assert got == on_disk
    kept = norms[valid]
    if not len(kept):
        assert got is None
        return
    q = np.quantile(kept, [0.01, 0.5, 0.99])
    assert got is not None
    assert [got[k] for k in ("min", "p01", "p50", "p99", "max")] == [float(x) for x in
                                                                      (kept.min(), *q, kept.max())]
    assert got["mean"] == pytest.approx(float(kept.mean()), rel=1e-12, abs=1e-15)
    assert got["std"] == pytest.approx(float(kept.std()), rel=1e-9, abs=1e-12)
