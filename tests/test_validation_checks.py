"""Every expectation and embedding check passes on a good batch and fails on a crafted bad one."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from featurestore import FeatureGroupSpec
from featurestore.validation import embedding, validate_batch
from featurestore.validation.runner import Previous

DIM = 16
N = 200
T = datetime(2026, 11, 1, tzinfo=UTC)
SPEC = FeatureGroupSpec.from_dict({
    "name": "things", "version": 1,
    "entity_keys": [{"name": "thing_id", "type": "string"}],
    "features": [
        {"name": "embedding", "type": "vector", "dim": DIM, "normalized": True},
        {"name": "n_events", "type": "int64"},
        {"name": "kind", "type": "string"},
        {"name": "seen", "type": "timestamp"},
    ],
    "expectations": {
        "row_count": {"min": 50, "max": 1000},
        "columns": {"n_events": {"min": 0, "max": 100, "not_null": True}, "kind": {"in_set": ["a", "b"]},
                    "seen": {"min": "2026-01-01T00:00:00+00:00", "not_null": True}},
        "vectors": {"embedding": {
            "duplicates": {"max_share": 0.0},
            "collapse": {"sample": 150, "min_effective_rank": 4, "max_mean_cosine": 0.5, "min_rows": 20},
            "drift": {"sample": 150, "k": 5, "min_mean_cosine": 0.8, "min_neighbor_overlap": 0.5},
            "coverage": {"expected": "previous_commit", "min_share": 0.9},
        }},
    },
})


def unit(m: np.ndarray) -> np.ndarray:
    return (m / np.linalg.norm(m, axis=1, keepdims=True)).astype(np.float32)


def good() -> dict:
    rng = np.random.default_rng(7)
    return {
        "thing_id": [f"t{i}" for i in range(N)],
        "event_time": [T] * N,
        "embedding": [list(map(float, r)) for r in unit(rng.standard_normal((N, DIM)))],
        "n_events": list(range(N // 2)) * 2,
        "kind": ["a", "b"] * (N // 2),
        "seen": [T - timedelta(hours=1)] * N,
    }


def table(d: dict, vector_type: pa.DataType | None = None) -> pa.Table:
    ts = pa.timestamp("us", tz="UTC")
    return pa.table({
        "thing_id": pa.array(d["thing_id"], pa.string()),
        "event_time": pa.array(d["event_time"], ts),
        "embedding": pa.array(d["embedding"], pa.list_(vector_type or pa.float32())),
        "n_events": pa.array(d["n_events"], pa.int64()),
        "kind": pa.array(d["kind"], pa.string()),
        "seen": pa.array(d["seen"], ts),
    })


def previous_of(d: dict) -> Previous:
    return Previous(commit=1, table=table(d).select(["thing_id", "event_time", "embedding"]))


def set_row(d: dict, col: str, row: int, value) -> dict:
    d[col][row] = value
    return d


def vectors(d: dict, m: np.ndarray) -> dict:
    d["embedding"] = [list(map(float, r)) for r in m]
    return d


def as_matrix(d: dict) -> np.ndarray:
    return np.array(d["embedding"], np.float64)


def rotated(d: dict) -> dict:
    q, _ = np.linalg.qr(np.random.default_rng(3).standard_normal((DIM, DIM)))
    return vectors(d, as_matrix(d) @ q)


def shuffled(d: dict) -> dict:
    return vectors(d, as_matrix(d)[np.random.default_rng(4).permutation(N)])


def subspace(d: dict) -> dict:
    rng = np.random.default_rng(5)
    m = np.zeros((N, DIM))
    m[:, :2] = rng.standard_normal((N, 2))
    return vectors(d, unit(m))


def one_direction(d: dict) -> dict:
    rng = np.random.default_rng(6)
    return vectors(d, unit(np.ones((N, DIM)) + 0.5 * rng.standard_normal((N, DIM))))


def stretched(d: dict) -> dict:
    m = as_matrix(d)
    m[: N // 10] *= 1.5
    return vectors(d, m)


def duplicated(d: dict) -> dict:
    d["embedding"][1] = list(d["embedding"][0])
    return d


# (check that must fail, how to break a good batch) -- one case per check of the report
CASES = {
    "rows: row count": lambda d: {k: v[:10] for k, v in d.items()},
    "thing_id: not null": lambda d: set_row(d, "thing_id", 3, None),
    "event_time: not null": lambda d: set_row(d, "event_time", 3, None),
    "keys: (thing_id) unique per event_time": lambda d: set_row(d, "thing_id", 2, "t1"),
    "n_events: not null": lambda d: set_row(d, "n_events", 4, None),
    "n_events: values between": lambda d: set_row(d, "n_events", 4, 500),
    "kind: values in set": lambda d: set_row(d, "kind", 4, "z"),
    "seen: not null": lambda d: set_row(d, "seen", 4, None),
    "seen: values between": lambda d: set_row(d, "seen", 4, datetime(2020, 1, 1, tzinfo=UTC)),
    "embedding: dimension = 16": lambda d: set_row(d, "embedding", 5, d["embedding"][5][:-1]),
    "embedding: no NaN/inf": lambda d: set_row(d, "embedding", 5, [float("nan"), *d["embedding"][5][1:]]),
    "embedding: norm between": lambda d: set_row(d, "embedding", 5, [2 * x for x in d["embedding"][5]]),
    "embedding: dimension and dtype": "float64",
    "embedding: norm distribution": stretched,
    "embedding: duplicate vectors across keys": duplicated,
    "embedding: collapse (effective rank)": subspace,
    "embedding: collapse (mean pairwise cosine)": one_direction,
    "embedding: drift (mean cosine)": rotated,
    "embedding: drift (neighbour overlap@5)": shuffled,
    "embedding: coverage of expected entities": lambda d: {k: v[: int(N * 0.7)] for k, v in d.items()},
}


def test_good_batch_passes_every_check_and_nothing_is_skipped():
    report = validate_batch(SPEC, table(good()), previous=previous_of(good()))
    assert report.success, report.summary()
    assert not [c.name for c in report.checks if c.skipped]
    assert sorted(c.name for c in report.checks) == sorted(CASES)  # every check has a crafted failure below


@pytest.mark.parametrize("check", sorted(CASES))
def test_each_check_fails_on_its_crafted_bad_batch(check):
    mutate = CASES[check]
    if mutate == "float64":
        bad = table(good(), pa.float64())
    else:
        bad = table(mutate(good()))
    report = validate_batch(SPEC, bad, previous=previous_of(good()))
    failed = {c.name: c for c in report.failed}
    assert check in failed, report.summary()
    assert not report.success and report.status == "failed"
    assert check in report.summary()


def test_drift_and_coverage_are_skipped_without_a_previous_commit():
    report = validate_batch(SPEC, table(good()))
    skipped = {c.name for c in report.checks if c.skipped}
    assert skipped == {"embedding: drift (mean cosine)", "embedding: drift (neighbour overlap@5)",
                       "embedding: coverage of expected entities"}
    assert report.success


def test_too_few_rows_to_judge_collapse_is_skipped_not_failed():
    d = {k: v[:5] for k, v in good().items()}
    spec = FeatureGroupSpec.from_dict({**SPEC.to_dict(), "expectations": {}})
    report = validate_batch(spec, table(d))
    collapse = [c for c in report.checks if "collapse" in c.name]
    assert collapse and all(c.skipped and c.success for c in collapse)


# ---- properties against plain reference implementations -----------------------------------------
rows_strategy = st.lists(
    st.one_of(st.none(), st.lists(st.sampled_from([0.0, -0.0, 1.5, -2.0, 3e38, float("nan"), float("inf")]),
                                  min_size=0, max_size=6)),
    min_size=1, max_size=30)


@settings(max_examples=60, deadline=None)
@given(rows=rows_strategy)
def test_derived_scalars_match_a_plain_reference(rows):
    arr = pa.array(rows, pa.list_(pa.float32()))
    d = embedding.derive(arr, "v", 4)
    for i, r in enumerate(rows):
        want_dim = 0 if r is None else len(r)
        bad = 1 if r is None else sum(1 for x in r if not np.isfinite(x))
        assert d.dims[i] == want_dim and d.nonfinite[i] == bad
        assert d.valid[i] == (want_dim == 4 and bad == 0)
        if r is not None and bad == 0:
            want = float(np.sqrt(sum(float(np.float32(x)) ** 2 for x in r)))
            assert d.norms[i] == pytest.approx(want, rel=1e-6)


@settings(max_examples=40, deadline=None)
@given(data=st.data(), n=st.integers(2, 40))
def test_duplicate_share_matches_a_plain_reference(data, n):
    pool = [tuple(float(x) for x in np.random.default_rng(s).standard_normal(4)) for s in range(4)]
    vecs = data.draw(st.lists(st.sampled_from(pool), min_size=n, max_size=n))
    keys = data.draw(st.lists(st.sampled_from(["a", "b", "c", "d", "e"]), min_size=n, max_size=n))
    d = embedding.derive(pa.array([list(v) for v in vecs], pa.list_(pa.float32())), "v", 4)
    codes = np.array([ord(k) for k in keys])
    got = embedding.check_duplicates(d, lambda rows: codes[rows], max_share=1.0)
    by_vec: dict = {}
    for v, k in zip(vecs, keys):
        by_vec.setdefault(np.array(v, np.float32).tobytes(), set()).add(k)
    want = sum(1 for v in vecs if len(by_vec[np.array(v, np.float32).tobytes()]) > 1)
    assert got.observed["rows"] == want
    assert got.observed["share"] == pytest.approx(want / n)


@settings(max_examples=60, deadline=None)
@given(rows=st.lists(st.tuples(st.sampled_from(["a", "b", "c", None]), st.integers(0, 3)), min_size=1, max_size=40))
def test_key_time_codes_are_equal_exactly_for_equal_key_and_time(rows):
    from featurestore.validation.expectations import parse_expectations
    from featurestore.validation.suite import KEY_TIME, frame

    t = pa.table({"thing_id": pa.array([k for k, _ in rows], pa.string()),
                  "event_time": pa.array([T + timedelta(days=d) for _, d in rows], pa.timestamp("us", tz="UTC"))})
    codes = frame(SPEC, parse_expectations(SPEC), t, {})[KEY_TIME].to_numpy()
    for i, a in enumerate(rows):
        assert np.isnan(codes[i]) == (a[0] is None)
        for j, b in enumerate(rows):
            if a[0] is not None and b[0] is not None:
                assert (codes[i] == codes[j]) == (a == b)
