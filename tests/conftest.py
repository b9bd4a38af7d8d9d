"""Shared fixtures: a fresh store in a temporary folder and small seeded batches."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from featurestore import FeatureStore

ROOT = Path(__file__).resolve().parent.parent


def run_python(code: str, *, timeout: float = 180, env: dict[str, str] | None = None
               ) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter from the repository root (what a new process imports)."""
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env=env)
SCHEMAS = ROOT / "schemas"
T0 = datetime(2026, 11, 1, tzinfo=UTC)


@pytest.fixture
def store(tmp_path: Path) -> FeatureStore:
    s = FeatureStore(tmp_path / "store")
    s.apply(SCHEMAS)
    yield s
    s.close()


@pytest.fixture
def items(store: FeatureStore) -> FeatureStore:
    """item_embeddings with i0..i4 at T0 and i0..i2 again at T0 + 1 h."""
    fg = store.feature_group("item_embeddings", 1)
    fg.insert(item_batch(5, seed=1, event_time=T0))
    fg.insert(item_batch(3, seed=2, event_time=T0 + timedelta(hours=1)))
    return store


def vectors(n: int, dim: int = 64, seed: int = 0, normalize: bool = True) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    if normalize:
        v /= np.linalg.norm(v, axis=1, keepdims=True)
    return v


def item_batch(n: int = 20, *, dim: int = 64, seed: int = 0, start: int = 0,
               event_time: datetime | None = None) -> pa.Table:
    """A valid item_embeddings v1 batch."""
    v = vectors(n, dim, seed)
    cols = {
        "item_id": [f"i{i}" for i in range(start, start + n)],
        "embedding": pa.FixedSizeListArray.from_arrays(pa.array(v.ravel()), dim),
        "n_events": pa.array(np.arange(n, dtype=np.int64)),
        "last_event_time": pa.array([T0 - timedelta(hours=1)] * n, pa.timestamp("us", tz="UTC")),
    }
    if event_time is not None:
        cols["event_time"] = pa.array([event_time] * n, pa.timestamp("us", tz="UTC"))
    return pa.table(cols)


def tree_digest(path: Path) -> dict[str, str]:
    """Every file under ``path`` with a hash of its bytes: equal digests = byte-for-byte unchanged.
    Vector-cache files still being written behind an earlier insert are waited for first."""
    from featurestore.training import flush_cache_writes

    flush_cache_writes()
    return {
        str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(path.rglob("*")) if p.is_file()
    }


@pytest.fixture(scope="session")
def spark_engine():
    """One local Spark session for the whole test run (2 cores, small shuffles, no UI)."""
    from featurestore.engine.spark import SparkEngine, SparkSettings

    engine = SparkEngine(settings=SparkSettings.parse("local[2]", {
        "spark.ui.enabled": "false", "spark.sql.shuffle.partitions": "2", "spark.default.parallelism": "2",
        "spark.driver.memory": "1g", "spark.sql.adaptive.enabled": "true", "spark.ui.showConsoleProgress": "false",
    }, app_name="featurestore-tests"))
    engine.session.sparkContext.setLogLevel("ERROR")
    yield engine
    engine.close()
