"""Drift against the previous commit: a rotated or noised version is rejected, an aligned retrain passes."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pyarrow as pa
import pytest
from scipy.linalg import orthogonal_procrustes

from featurestore import ValidationFailed
from featurestore.validation import load
from tests.conftest import T0

N, DIM = 800, 64


def unit(m: np.ndarray) -> np.ndarray:
    return (m / np.linalg.norm(m, axis=1, keepdims=True)).astype(np.float32)


def clustered(seed: int = 0) -> np.ndarray:
    """Item vectors with structure (40 clusters), like a real embedding."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((40, DIM))
    return unit(centers[rng.integers(0, 40, N)] + 0.35 * rng.standard_normal((N, DIM)))


def batch(v: np.ndarray) -> pa.Table:
    n = len(v)
    return pa.table({
        "item_id": [f"i{i}" for i in range(n)],
        "embedding": pa.FixedSizeListArray.from_arrays(pa.array(v.astype(np.float32).ravel()), DIM),
        "n_events": pa.array(np.arange(n, dtype=np.int64)),
        "last_event_time": pa.array([T0] * n, pa.timestamp("us", tz="UTC")),
    })


def random_rotation(seed: int) -> np.ndarray:
    q, r = np.linalg.qr(np.random.default_rng(seed).standard_normal((DIM, DIM)))
    return q * np.sign(np.diag(r))


def retrain(old: np.ndarray, seed: int) -> np.ndarray:
    """What a retrain gives: the same structure, slightly perturbed, in an arbitrary new basis."""
    rng = np.random.default_rng(seed)
    return unit((old + 0.05 * rng.standard_normal(old.shape)) @ random_rotation(seed + 1))


def procrustes_align(new: np.ndarray, old: np.ndarray) -> np.ndarray:
    """Rotate ``new`` onto ``old`` (orthogonal Procrustes over the shared rows)."""
    r, _ = orthogonal_procrustes(new.astype(np.float64), old.astype(np.float64))
    return unit(new @ r)


def noised(old: np.ndarray, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return unit(old + 2.0 / np.sqrt(DIM) * rng.standard_normal(old.shape))


@pytest.fixture
def fg(store):
    fg = store.feature_group("item_embeddings", 1)
    fg.insert(batch(clustered()), cutoff=T0)
    return fg


def _checks(report) -> dict:
    return {c.expectation: c for c in report.checks if c.expectation.startswith("vector_drift")}


def test_aligned_retrain_passes(fg):
    old = clustered()
    new = retrain(old, seed=1)
    raw = _checks_of_attempt(fg, new)  # unaligned, the retrain's basis is arbitrary: rejected
    assert not raw["vector_drift_mean_cosine"].success
    commit = fg.insert(batch(procrustes_align(new, old)), cutoff=T0 + timedelta(days=1))
    report = load(fg.root, commit.extra["validation_report"])
    drift = _checks(report)
    assert report.success, report.summary()
    assert drift["vector_drift_mean_cosine"].observed["mean_cosine"] > 0.9
    assert drift["vector_drift_neighbor_overlap"].observed["overlap"] > 0.5
    assert drift["vector_drift_mean_cosine"].observed["base_commit"] == 1


def _checks_of_attempt(fg, vectors: np.ndarray) -> dict:
    with pytest.raises(ValidationFailed) as info:
        fg.insert(batch(vectors), cutoff=T0 + timedelta(days=1))
    assert fg.commit_of() == 1
    return _checks(info.value.report)


@pytest.mark.parametrize("seed", [11, 12, 13])
def test_random_rotation_is_flagged(fg, seed):
    drift = _checks_of_attempt(fg, unit(clustered() @ random_rotation(seed)))
    assert not drift["vector_drift_mean_cosine"].success
    assert abs(drift["vector_drift_mean_cosine"].observed["mean_cosine"]) < 0.3
    # a rotation keeps neighbourhoods: only the cosine check can see it
    assert drift["vector_drift_neighbor_overlap"].success


@pytest.mark.parametrize("seed", [21, 22, 23])
def test_noised_version_is_flagged(fg, seed):
    drift = _checks_of_attempt(fg, noised(clustered(), seed))
    assert not drift["vector_drift_mean_cosine"].success
    assert not drift["vector_drift_neighbor_overlap"].success


def test_unchanged_vectors_pass_with_perfect_scores(fg):
    commit = fg.insert(batch(clustered()), cutoff=T0 + timedelta(days=1))
    drift = _checks(load(fg.root, commit.extra["validation_report"]))
    assert drift["vector_drift_mean_cosine"].observed["mean_cosine"] == pytest.approx(1.0, abs=1e-6)
    assert drift["vector_drift_neighbor_overlap"].observed["overlap"] == pytest.approx(1.0)
