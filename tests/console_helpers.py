"""A small store for the console tests: a feature group with three commits (the third one warned by
validation), an integer-keyed group whose newest insert was refused, and a saved training set."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from featurestore import FeatureGroupSpec, FeatureStore
from featurestore.errors import ValidationFailed
from tests.conftest import T0

DIM = 16
SEGMENTS = ["books", "games", "music", "sports", "food"]
TOKEN = "console-t0ken"


def items_spec() -> FeatureGroupSpec:
    return FeatureGroupSpec.from_dict({
        "name": "items", "version": 1, "description": "test items",
        "entity_keys": [{"name": "id", "type": "string"}],
        "features": [
            {"name": "embedding", "type": "vector", "dim": DIM, "metric": "cosine", "normalized": False},
            {"name": "n_events", "type": "int64"},
            {"name": "score", "type": "float64"},
            {"name": "segment", "type": "string"},
        ],
        "expectations": {"columns": {"n_events": {"min": 0}}, "vectors": {"embedding": {"drift": False}}},
        "policy": "warn",
    })


def users_spec() -> FeatureGroupSpec:
    return FeatureGroupSpec.from_dict({
        "name": "users", "version": 1,
        "entity_keys": [{"name": "user_id", "type": "int64"}],
        "features": [{"name": "embedding", "type": "vector", "dim": DIM, "metric": "dot"},
                     {"name": "n_events", "type": "int64"}],
        "expectations": {"columns": {"n_events": {"min": 0}}, "vectors": {"embedding": {"drift": False}}},
        "policy": "strict",
    })


def vectors(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(99).standard_normal((8, DIM))
    return (centres[rng.integers(0, 8, n)] + 0.4 * rng.standard_normal((n, DIM))).astype(np.float32)


def items_batch(keys: list[str], seed: int, hours: int, *, n_events: int | None = None) -> pa.Table:
    rng = np.random.default_rng(seed)
    n = len(keys)
    v = vectors(n, seed)
    return pa.table({
        "id": keys,
        "event_time": pa.array([T0 + timedelta(hours=hours)] * n, pa.timestamp("us", tz="UTC")),
        "embedding": pa.FixedSizeListArray.from_arrays(pa.array(v.ravel()), DIM),
        "n_events": pa.array(rng.integers(0, 50, n) if n_events is None else [n_events] * n, pa.int64()),
        "score": pa.array(rng.random(n)),
        "segment": pa.array([None if i % 9 == 0 else SEGMENTS[i % len(SEGMENTS)] for i in range(n)], pa.string()),
    })


def users_batch(ids: list[int], seed: int, n_events: int = 3) -> pa.Table:
    v = vectors(len(ids), seed)
    return pa.table({
        "user_id": pa.array(ids, pa.int64()),
        "event_time": pa.array([T0] * len(ids), pa.timestamp("us", tz="UTC")),
        "embedding": pa.FixedSizeListArray.from_arrays(pa.array(v.ravel()), DIM),
        "n_events": pa.array([n_events] * len(ids), pa.int64()),
    })


#: the batches of items' three commits (commit 3 has negative n_events: warned, committed)
BATCHES = [
    lambda: items_batch([f"k{i}" for i in range(400)], 1, 0),
    lambda: pa.concat_tables([items_batch([f"k{i}" for i in range(100)], 2, 1),
                              items_batch([f"k{i}" for i in range(400, 450)], 3, 1)]),
    lambda: items_batch([f"k{i}" for i in range(20)], 4, 2, n_events=-1),
]


def make_store(root: Path) -> FeatureStore:
    store = FeatureStore(root)
    store.apply([items_spec(), users_spec()])
    items = store.feature_group("items")
    for make in BATCHES:
        items.insert(make())
    users = store.feature_group("users")
    users.insert(users_batch(list(range(0, 300, 3)), 5))
    with pytest.raises(ValidationFailed):
        users.insert(users_batch([1, 2], 6, n_events=-5))
    spine = pa.table({"id": ["k1", "k2", "k401"],
                      "label_time": pa.array([T0 + timedelta(days=1)] * 3, pa.timestamp("us", tz="UTC"))})
    store.save_training_set("clicks", spine, ["items:1:n_events"], event_time="label_time",
                            description="test set")
    return store


def pages(report_id: str) -> list[str]:
    """Every page of the console over the store of :func:`make_store` (paths under /ui)."""
    g = "/ui/groups/items/v1"
    return ["/ui/", "/ui/training-sets", "/ui/groups/items", f"{g}", "/ui/groups/users/v1",
            f"{g}/reports/{report_id}", f"{g}/compare?a=1&b=2", f"{g}/projector?commit=3",
            f"{g}/projector?commit=2&with=1", "/ui/groups/users/v1/projector?key=3"]


def report_of(store: FeatureStore, commit: int) -> Any:
    return store.feature_group("items").commit(commit).extra["validation_report"]
