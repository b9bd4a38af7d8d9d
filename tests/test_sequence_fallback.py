"""Thin data: a sequence model that ranks the held-out events worse than the default (co-occurrence) embedder
gives way to it, through the whole pipeline; one that does not is kept."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from featurestore import FeatureStore
from featurestore.embed import aggregate
from featurestore.embed.sequence import SequenceEmbedder, Sequences, ThinDataWarning, without_held_out
from featurestore.engine import read_events
from featurestore.engine.events import EventSource
from featurestore.pipeline import Pipeline, read_model

pytest.importorskip("torch")
ROOT = Path(__file__).resolve().parent.parent
DIM = 9
T0 = datetime(2026, 1, 1, tzinfo=UTC)
#: one epoch at a tiny learning rate: a model that learned nothing, so the default embedder validates better
UNTRAINED = SequenceEmbedder(dim=DIM, window=12, max_epochs=1, lr=1e-9, batch_size=32, min_steps=1, seed=0, threads=1,
                             min_targets_per_item=0)
#: enough training for the chains below: it predicts every held-out event, as the default embedder does
TRAINED = replace(UNTRAINED, max_epochs=60, patience=60, lr=1e-2, warmup_steps=5, dropout=0.0)


def _chains(users: int = 60, items: int = 40, steps: int = 12) -> pa.Table:
    """Entity ``u`` walks one chain of items ``u, u+1, ...`` (mod ``items``), one event a minute: what comes
    next is what came next for everyone else."""
    rows = [(f"u{u:03d}", f"i{(u + k) % items:02d}", k) for u in range(users) for k in range(steps)]
    return pa.table({"user_id": [r[0] for r in rows], "item_id": [r[1] for r in rows],
                     "event_type": ["view"] * len(rows),
                     "event_time": pa.array([T0 + timedelta(minutes=r[2]) for r in rows],
                                            pa.timestamp("us", tz="UTC"))})


@pytest.fixture
def store(tmp_path: Path) -> FeatureStore:
    specs = tmp_path / "specs"
    specs.mkdir()
    for path in (ROOT / "schemas" / "sequence").glob("*.yaml"):
        (specs / path.name).write_text(path.read_text().replace("dim: 64", f"dim: {DIM}"))
    s = FeatureStore(tmp_path / "store")
    s.apply(specs)
    yield s
    s.close()


def _pipeline(events: pa.Table, embedder: SequenceEmbedder, **kw) -> Pipeline:
    return Pipeline("seq", EventSource(events), embedder=embedder, items=("sequence_item_embeddings", 1),
                    entities=("sequence_user_embeddings", 1), **kw)


def test_held_out_events_are_what_the_sequences_hold_out():
    rows = [("a", "x", 0), ("a", "y", 1), ("a", "z", 2), ("a", "z", 3), ("b", "x", 0), ("b", "y", 1),
            ("c", "x", 0), ("c", "y", 1), ("c", "x", 2), ("c", "y", 3), ("c", "y", 4)]
    table = pa.table({"user_id": [r[0] for r in rows], "item_id": [r[1] for r in rows], "event_type": ["view"] * 11,
                      "event_time": pa.array([T0 + timedelta(minutes=r[2]) for r in rows],
                                             pa.timestamp("us", tz="UTC"))})
    ev = read_events(EventSource(table)).load()
    train, val = Sequences.of(ev).holdout()
    seen = without_held_out(ev, val[:, 0])
    again = Sequences.of(seen)
    assert again.tokens.tolist() == train.tokens.tolist() and again.starts.tolist() == train.starts.tolist()
    assert len(seen) == 11 - 2 - 2                       # a's two z events, c's two trailing y events
    assert seen.entity_count.tolist() == [2, 2, 3] and seen.item_count.sum() == len(seen)


def test_weaker_sequence_model_falls_back_to_the_default_embedder():
    ev = read_events(EventSource(_chains()))
    with pytest.warns(ThinDataWarning, match="serving the co-occurrence embedder's model") as caught:
        model = UNTRAINED.fit(ev)
    assert len(caught) == 1
    fallback = model.info["fallback"]
    assert fallback["embedder"] == "cooccurrence" and model.encoder is None
    assert fallback["validation_hr@10_default"] > fallback["validation_hr@10_sequence"]
    assert fallback["sequence"]["validation_hr@10_default"] == fallback["validation_hr@10_default"]
    expected = UNTRAINED.default_embedder().fit(ev)            # the default embedder on the same events
    assert model.vectors.tobytes() == expected.vectors.tobytes() and model.layout() == expected.layout()
    with pytest.warns(ThinDataWarning, match="fallback=False") as caught:
        kept = replace(UNTRAINED, fallback=False).fit(ev)
    assert kept.encoder is not None and "fallback" not in kept.info and len(caught) == 1


def test_a_sequence_model_as_good_as_the_default_is_kept():
    ev = read_events(EventSource(_chains()))
    model = TRAINED.fit(ev)
    assert model.encoder is not None and "fallback" not in model.info
    assert model.info["validation_hr@10"] >= model.info["validation_hr@10_default"] == 1.0


def test_fallback_through_the_pipeline(store):
    events = _chains()
    cutoffs = [T0 + timedelta(minutes=m) for m in (9, 10, 11, 12)]
    p = _pipeline(events, UNTRAINED, retrain_every=timedelta(days=1), retrain_runs=1)
    with pytest.warns(ThinDataWarning):
        r1 = p.run(store, cutoffs[0], progress=False)
    meta = r1.commits[0].metadata
    assert meta["model_info"]["fallback"]["embedder"] == "cooccurrence" and "model_artifact" not in meta
    items_fg, users_fg = store.feature_group("sequence_item_embeddings", 1), store.feature_group(
        "sequence_user_embeddings", 1)
    model = read_model(items_fg, r1.commits[0], UNTRAINED)
    ev = read_events(EventSource(events), before=cutoffs[0])
    expected = aggregate(ev, model, p.aggregation)              # the default embedder's entity vectors
    users = users_fg.read(r1.commits[1].commit)
    got = dict(zip(users["user_id"].to_pylist(), users["embedding"].to_pylist()))
    for key, vec in zip(expected.entity_ids, expected.vectors):
        np.testing.assert_allclose(np.asarray(got[key], np.float32), vec, atol=1e-6)
    r2 = p.run(store, cutoffs[1], progress=False)              # the committed fallback model is reused
    assert not r2.retrained and r2.commits[-1].metadata["model_commit"] == r1.commits[0].commit
    with pytest.warns(ThinDataWarning):
        r3 = p.run(store, cutoffs[2], progress=False)          # retrain_runs: refit, falls back again, aligned
    assert r3.retrained and r3.alignment is not None and r3.alignment["shared_items"] > 0
    r4 = _pipeline(events, TRAINED, retrain_every=timedelta(0)).run(store, cutoffs[3], progress=False)
    assert r4.retrained and r4.alignment is None                # the sequence model now: not comparable
    assert "not_aligned" in r4.commits[0].metadata["model_info"]
    assert read_model(items_fg, r4.commits[0], TRAINED).encoder is not None
    # time travel: the first commit still reads as the fallback model
    again = read_model(items_fg, r1.commits[0], UNTRAINED)
    assert again.encoder is None and again.vectors.tobytes() == model.vectors.tobytes()
    old = users_fg.read(r1.commits[1].commit)
    assert old.filter(pc.equal(old["user_id"], "u000"))["embedding"].to_pylist() == [got["u000"]]
    top = store.online("sequence_item_embeddings", 1).nearest(
        key="u000", query_view=store.online("sequence_user_embeddings", 1), k=3)
    assert len(top.keys) == 3
