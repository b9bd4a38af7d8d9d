"""Pipeline runs: point in time, idempotence, backfill, incremental = full recompute, metadata, errors."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from featurestore import FeatureStore
from featurestore.embed import Aggregation, CooccurrenceEmbedder, ItemModel, aggregate, l2_normalize
from featurestore.engine import read_events
from featurestore.engine.events import Events, EventSource
from featurestore.errors import FeatureGroupNotFound, PipelineError
from featurestore.pipeline import Pipeline, parse_every, read_model, schedule
from featurestore.synthetic import purchase_histories

from .conftest import SCHEMAS, tree_digest

W = {"view": 1.0, "add_to_cart": 2.0, "purchase": 4.0}
START = datetime(2026, 10, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def data():
    return purchase_histories(n_users=400, n_items=200, n_events=20_000, n_categories=8, days=10, seed=2)


def _pipeline(events: pa.Table, **kw: Any) -> Pipeline:
    return Pipeline("test_pipe", EventSource(events), weights=W, **kw)


def _read(store: FeatureStore, name: str) -> pa.Table:
    t = store.feature_group(name, 1).read()
    return t.sort_by([(t.column_names[0], "ascending"), ("event_time", "ascending")])


def _later(events: pa.Table, cutoff: datetime, rows: list[tuple[int, int, int, int]]) -> pa.Table:
    """events plus extra events at or after cutoff."""
    extra = pa.table({
        "user_id": [f"u{u:03d}" for u, _, _, _ in rows],
        "item_id": [f"i{i:03d}" if i < 200 else f"new{i}" for _, i, _, _ in rows],
        "event_type": [["view", "add_to_cart", "purchase"][k] for _, _, k, _ in rows],
        "event_time": pa.array([cutoff + timedelta(minutes=m) for _, _, _, m in rows], pa.timestamp("us", tz="UTC")),
    })
    return pa.concat_tables([events, extra])


@pytest.mark.slow
@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.integers(0, 399), st.integers(0, 260), st.integers(0, 2), st.integers(0, 5000)),
                min_size=1, max_size=200))
def test_no_event_at_or_after_the_cutoff_changes_the_output(data, tmp_path_factory, rows):
    cutoff = START + timedelta(days=6)
    outputs = []
    for events in (data.events, _later(data.events, cutoff, rows)):
        store = FeatureStore(tmp_path_factory.mktemp("pit") / "store")
        store.apply(SCHEMAS)
        _pipeline(events).run(store, cutoff, progress=False)
        outputs.append([_read(store, n).drop_columns([]) for n in ("item_embeddings", "user_embeddings")])
        store.close()
    for a, b in zip(*outputs):
        assert a.equals(b)


def test_second_run_of_a_date_writes_nothing(store, data, tmp_path):
    p = _pipeline(data.events)
    cutoff = START + timedelta(days=5)
    first = p.run(store, cutoff, progress=False)
    assert first.status == "written" and len(first.commits) == 2
    before = tree_digest(tmp_path / "store")
    again = p.run(store, cutoff, progress=False)
    assert again.status == "skipped" and again.commits == [] and "already done" in again.message
    assert tree_digest(tmp_path / "store") == before
    assert p.done(store, cutoff) and not p.done(store, cutoff + timedelta(days=1))


def test_commit_metadata_records_the_run(store, data):
    p = _pipeline(data.events)
    d1, d2 = START + timedelta(days=5), START + timedelta(days=6)
    p.run(store, d1, progress=False)
    r2 = p.run(store, d2, progress=False)
    items = store.feature_group("item_embeddings", 1).history()[-1]
    users = store.feature_group("user_embeddings", 1).history()[-1]
    for c in (items, users):
        m = c.metadata
        assert m["pipeline"] == "test_pipe" and c.cutoff == d2 and m["cutoff"] == d2.isoformat()
        assert m["params"]["embedder"]["name"] == "cooccurrence" and m["params"]["embedder"]["seed"] == 0
        assert m["events_read"] == r2.events and m["code_version"].startswith("featurestore")
    a = items.metadata["alignment"]
    assert a == r2.alignment and a["shared_items"] > 100
    assert a["mean_cosine_after"] > a["mean_cosine_before"] and 0 <= a["neighbour_overlap_at_10"] <= 1
    assert users.metadata["model_commit"] == items.commit


def test_backfill_runs_dates_in_order_and_skips_done_ones(store, data):
    p = _pipeline(data.events)
    p.run(store, START + timedelta(days=6), progress=False)
    results = p.backfill(store, START + timedelta(days=5), START + timedelta(days=7), parse_every("1d"),
                         progress=False)
    assert [r.cutoff.day for r in results] == [6, 7, 8]
    assert [r.status for r in results] == ["written", "skipped", "written"]
    hist = store.feature_group("user_embeddings", 1).history()
    assert [c.cutoff.day for c in hist[1:]] == [7, 6, 8]
    # alignment uses the previous date's model, whatever order the dates ran in; a date older than
    # every run so far is aligned onto the next later run, so all commits share one frame
    assert results[2].alignment is not None
    assert results[0].alignment is not None and results[0].alignment["mean_cosine_after"] > 0.5


def _full(events: Events, model: ItemModel, agg: Aggregation) -> dict[str, tuple]:
    v = aggregate(events, model, agg)
    return {k: (vec, n, t) for k, vec, n, t in zip(v.entity_ids, v.vectors, v.n_events, v.last_event_time)}


def test_incremental_equals_full_recompute_while_the_model_is_unchanged(store, data):
    p = _pipeline(data.events, retrain_every=timedelta(days=30))
    d1, d2, d3 = (START + timedelta(days=d) for d in (5, 6, 7))
    r1, r2, r3 = (p.run(store, d, progress=False) for d in (d1, d2, d3))
    assert r1.retrained and not r2.retrained and not r3.retrained
    assert len(r2.commits) == 1 and r2.entities_written < r1.entities_written  # only changed users
    fg = store.feature_group("user_embeddings", 1)
    latest = fg.latest().to_pydict()
    model = read_model(store.feature_group("item_embeddings", 1),
                       store.feature_group("item_embeddings", 1).history()[-1])
    full = _full(read_events(EventSource(data.events), before=d3, weights=W), model, p.aggregation)
    assert sorted(latest["user_id"]) == sorted(full)
    for k, vec, n, t in zip(latest["user_id"], latest["embedding"], latest["n_events"], latest["last_event_time"]):
        fv, fn, ft = full[k]
        assert np.array_equal(np.asarray(vec, np.float32), fv), k
        assert n == fn and int(t.timestamp() * 1e6) == ft
    # unchanged users really were not rewritten at d2
    at_d2 = fg.read(commit=r2.commits[0].commit)
    changed = set(at_d2.filter(
        pa.compute.equal(at_d2["event_time"], pa.scalar(d2, pa.timestamp("us", tz="UTC")))
    )["user_id"].to_pylist())
    ev = read_events(EventSource(data.events), before=d2, weights=W)
    active = set(ev.entity_ids[np.unique(ev.entity[ev.time >= int(d1.timestamp() * 1e6)])].tolist())
    assert changed == active


def test_a_retrained_model_rewrites_every_entity(store, data):
    p = _pipeline(data.events, retrain_every=timedelta(days=2))
    r1 = p.run(store, START + timedelta(days=5), progress=False)
    r2 = p.run(store, START + timedelta(days=6), progress=False)
    r3 = p.run(store, START + timedelta(days=7), progress=False)
    assert (r1.retrained, r2.retrained, r3.retrained) == (True, False, True)
    assert r3.entities_written == r3.entities > r2.entities_written
    full = replace(p, mode="full").run(store, START + timedelta(days=8), progress=False)
    assert full.retrained and full.entities_written == full.entities


def test_an_interrupted_run_reuses_its_item_commit(store, data):
    p = _pipeline(data.events)
    cutoff = START + timedelta(days=5)
    p.run(store, cutoff, progress=False)
    users = store.feature_group("user_embeddings", 1)
    items = store.feature_group("item_embeddings", 1)
    q = replace(p, name="other")
    r = q.run(store, cutoff, progress=False)  # a different pipeline name: a full fresh run
    assert r.status == "written" and len(r.commits) == 2
    n_user_commits = len(users.history())
    # now fake "items done, users not" for a third name by committing the item rows with its metadata
    meta = dict(items.history()[-1].metadata, pipeline="third")
    rows = read_model(items, items.history()[-1])
    batch = pa.table({"item_id": rows.item_ids.tolist(),
                      "embedding": pa.FixedSizeListArray.from_arrays(pa.array(rows.vectors.ravel()), rows.dim),
                      "n_events": pa.array(np.ones(len(rows), np.int64)),
                      "last_event_time": pa.array([cutoff - timedelta(hours=1)] * len(rows),
                                                  pa.timestamp("us", tz="UTC"))})
    items.insert(batch, cutoff=cutoff, metadata=meta)
    n_item_commits = len(items.history())
    r3 = replace(p, name="third").run(store, cutoff, progress=False)
    assert r3.status == "written" and [c.feature_group for c in r3.commits] == ["user_embeddings"]
    assert len(items.history()) == n_item_commits and len(users.history()) == n_user_commits + 1


@dataclass(frozen=True)
class RandomEmbedder:
    """Another model plugged in without touching the pipeline: seeded random item vectors."""

    dim: int = 64
    name: str = "random"

    def fit(self, events: Events, *, progress: bool = False, engine: object = None) -> ItemModel:
        rng = np.random.default_rng(0)
        vectors = rng.standard_normal((events.n_items, self.dim)).astype(np.float32)
        return ItemModel(events.item_ids, l2_normalize(vectors))

    def params(self) -> dict[str, Any]:
        return {"dim": self.dim}


def test_another_embedder_plugs_in(store, data):
    r = _pipeline(data.events, embedder=RandomEmbedder()).run(store, START + timedelta(days=5), progress=False)
    assert r.status == "written" and r.items == 200
    assert store.feature_group("item_embeddings", 1).history()[-1].metadata["params"]["embedder"]["name"] == "random"


def test_a_model_with_another_coordinate_layout_is_refused_and_writes_nothing(store, data, tmp_path):
    _pipeline(data.events, embedder=CooccurrenceEmbedder(scoring="inner_product")).run(
        store, START + timedelta(days=5), progress=False)
    before = tree_digest(tmp_path / "store")
    with pytest.raises(PipelineError, match="coordinates mean something else .* nothing was written"):
        _pipeline(data.events).run(store, START + timedelta(days=6), progress=False)
    assert tree_digest(tmp_path / "store") == before


def test_errors_are_clear_and_write_nothing(store, data, tmp_path):
    before = tree_digest(tmp_path / "store")
    with pytest.raises(PipelineError, match="32-d ones"):
        _pipeline(data.events, embedder=CooccurrenceEmbedder(dim=32)).run(store, START + timedelta(days=5))
    with pytest.raises(PipelineError, match="no events before"):
        _pipeline(data.events).run(store, START - timedelta(days=1))
    with pytest.raises(FeatureGroupNotFound):
        _pipeline(data.events, items=("nope", 1)).run(store, START + timedelta(days=5))
    with pytest.raises(PipelineError, match="mode"):
        _pipeline(data.events, mode="sometimes")
    with pytest.raises(PipelineError, match="before it starts"):
        schedule(START, START - timedelta(days=1), timedelta(days=1))
    with pytest.raises(PipelineError, match="period"):
        parse_every("daily")
    assert tree_digest(tmp_path / "store") == before
