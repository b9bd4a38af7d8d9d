"""The sequence embedder: served rankings equal the model's, incremental runs re-encode with the committed
weights, retrains align, artifacts are verified and survive vacuum, training is reproducible and bounded."""

from __future__ import annotations

import os
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from featurestore import FeatureStore
from featurestore.cli import main
from featurestore.embed import aggregate, align
from featurestore.embed.sequence import SequenceEmbedder, SequenceEncoder, Sequences, ThinDataWarning
from featurestore.engine import read_events
from featurestore.engine.events import EventSource
from featurestore.errors import CorruptData, PipelineError
from featurestore.pipeline import Pipeline, read_model
from featurestore.synthetic import purchase_histories

pytest.importorskip("torch")
ROOT = Path(__file__).resolve().parent.parent
DIM = 9
TINY = SequenceEmbedder(dim=DIM, window=12, max_epochs=2, patience=2, batch_size=32, min_steps=1,
                        validation_entities=200, seed=0, threads=1, min_targets_per_item=0, baseline_check=False)


@pytest.fixture(scope="module")
def events() -> pa.Table:
    return purchase_histories(n_users=80, n_items=40, n_events=4000, seed=3).events


def _specs(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for path in (ROOT / "schemas" / "sequence").glob("*.yaml"):
        (folder / path.name).write_text(path.read_text().replace("dim: 64", f"dim: {DIM}"))
    return folder


@pytest.fixture
def store(tmp_path: Path) -> FeatureStore:
    s = FeatureStore(tmp_path / "store")
    s.apply(_specs(tmp_path / "specs"))
    yield s
    s.close()


def _pipeline(events: pa.Table, **kw) -> Pipeline:
    return Pipeline("seq", EventSource(events), embedder=kw.pop("embedder", TINY),
                    items=("sequence_item_embeddings", 1), entities=("sequence_user_embeddings", 1), **kw)


def _cutoffs(events: pa.Table) -> tuple[datetime, datetime, datetime]:
    t = np.sort(events["event_time"].to_numpy())
    at = [t[int(len(t) * q)].astype("datetime64[us]").astype(datetime).replace(tzinfo=UTC) for q in (0.6, 0.8)]
    return at[0], at[1], t[-1].astype("datetime64[us]").astype(datetime).replace(tzinfo=UTC) + timedelta(seconds=1)


def test_served_top_k_is_the_models_own_top_k(store, events):
    cutoff = _cutoffs(events)[2]
    result = _pipeline(events).run(store, cutoff, progress=False)
    assert result.status == "written" and result.retrained
    model = read_model(store.feature_group("sequence_item_embeddings", 1), result.commits[0], TINY)
    assert model.encoder is not None
    ev = read_events(EventSource(events), before=cutoff)
    users = np.arange(0, ev.n_entities, 7)
    own = model.encoder.scores(ev, users)                      # h . E_i, columns = model.item_ids
    items_view = store.online("sequence_item_embeddings", 1)
    users_view = store.online("sequence_user_embeddings", 1)
    for row, u in enumerate(users):
        served = items_view.nearest(key=ev.entity_ids[u], query_view=users_view, k=10).keys
        order = np.argsort(-own[row], kind="stable")[:10]
        assert served == model.item_ids[order].tolist()


def test_same_data_seed_and_threads_give_identical_bytes(events):
    ev = read_events(EventSource(events))
    a, b = TINY.fit(ev), TINY.fit(ev)
    assert a.vectors.tobytes() == b.vectors.tobytes()
    assert a.encoder.to_bytes() == b.encoder.to_bytes()
    assert aggregate(ev, a).vectors.tobytes() == aggregate(ev, b).vectors.tobytes()
    c = replace(TINY, seed=1).fit(ev)
    assert c.vectors.tobytes() != a.vectors.tobytes()


def test_incremental_run_re_encodes_only_new_entities_with_the_committed_model(store, events):
    first, second, _ = _cutoffs(events)
    p = _pipeline(events, retrain_every=timedelta(days=365))
    r1 = p.run(store, first, progress=False)
    r2 = p.run(store, second, progress=False)
    assert r1.retrained and not r2.retrained
    ev = read_events(EventSource(events), before=second)
    since = int(first.timestamp() * 1e6)
    changed = np.unique(ev.entity[ev.time >= since])
    assert r2.entities_written == changed.size
    items_fg = store.feature_group("sequence_item_embeddings", 1)
    model = read_model(items_fg, r1.commits[0], TINY)
    codes, expected = model.encoder.encode(ev, changed)
    ent = store.feature_group("sequence_user_embeddings", 1).read(r2.commits[-1].commit)
    ent = ent.filter(pc.equal(ent["event_time"], pa.scalar(second, ent.schema.field("event_time").type)))
    got = dict(zip(ent["user_id"].to_pylist(), ent["embedding"].to_pylist()))
    assert sorted(got) == sorted(ev.entity_ids[codes].tolist())
    for key, vec in zip(ev.entity_ids[codes], expected):
        assert np.array_equal(np.asarray(got[key], np.float32), vec)
    assert r2.commits[-1].metadata["model_commit"] == r1.commits[0].commit


def test_artifact_is_verified_and_survives_vacuum(store, events):
    first, second, third = _cutoffs(events)
    p = _pipeline(events, retrain_every=timedelta(days=365))
    r1 = p.run(store, first, progress=False)
    record = r1.commits[0].metadata["model_artifact"]
    fg = store.feature_group("sequence_item_embeddings", 1)
    path = Path(fg.uri) / record["path"]
    assert path.exists() and record["sha256"] in path.name
    store.vacuum(retain=timedelta(0), dry_run=False)
    assert path.exists()
    p.run(store, second, progress=False)                       # reuses (and verifies) the artifact
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptData, match="checksum"):
        p.run(store, third, progress=False)
    path.unlink()
    with pytest.raises(CorruptData, match="missing"):
        p.run(store, third, progress=False)


def test_scheduled_retrain_after_n_runs_aligns_items_and_entities(store, events):
    first, second, third = _cutoffs(events)
    p = _pipeline(events, retrain_every=timedelta(days=365), retrain_runs=1)
    results = [p.run(store, c, progress=False) for c in (first, second, third)]
    assert [r.retrained for r in results] == [True, False, True]
    a = results[2].alignment
    assert a is not None and a["shared_items"] > 0 and a["mean_cosine_after"] >= a["mean_cosine_before"]
    assert a["neighbour_overlap_at_10"] is not None
    # the rotation keeps the model's ranking: served (rotated) vectors rank like the new model's scores
    model = read_model(store.feature_group("sequence_item_embeddings", 1), results[2].commits[0], TINY)
    ev = read_events(EventSource(events), before=third)
    codes, users = model.encoder.encode(ev, np.arange(5))
    own = model.encoder.scores(ev, codes)
    assert np.array_equal(np.argsort(-(users @ model.vectors.T), axis=1)[:, :5], np.argsort(-own, axis=1)[:, :5])


def test_alignment_rotates_entity_vectors_with_items(events):
    ev = read_events(EventSource(events))
    a, b = TINY.fit(ev), replace(TINY, seed=5).fit(ev)
    aligned, figures = align(b, a)
    assert figures is not None
    before, after = aggregate(ev, b).vectors, aggregate(ev, aligned).vectors
    np.testing.assert_allclose(before @ b.vectors.T, after @ aligned.vectors.T, atol=1e-5)


def test_drift_threshold_triggers_a_retrain(store, events):
    first, second, _ = _cutoffs(events)
    old = events.filter(pc.less(events["event_time"], pa.scalar(first, events.schema.field("event_time").type)))
    known = set(old["item_id"].to_pylist())
    new = pa.table({"user_id": ["u-new"] * 3, "item_id": ["brand-new-1", "brand-new-2", "brand-new-1"],
                    "event_type": ["view"] * 3,
                    "event_time": pa.array([first + timedelta(seconds=s) for s in (1, 2, 3)],
                                           events.schema.field("event_time").type)})
    assert not known & {"brand-new-1", "brand-new-2"}
    both = pa.concat_tables([old, new.cast(old.schema)])
    p = _pipeline(both, retrain_every=timedelta(days=365), retrain_drift=0.5)
    assert p.run(store, first, progress=False).retrained
    assert p.run(store, second, progress=False).retrained       # every new event is on an unknown item
    p2 = _pipeline(both, retrain_every=timedelta(days=365), retrain_drift=None)
    assert not p2.run(store, second + timedelta(days=1), progress=False).retrained


def test_sampled_softmax_and_budget(events):
    ev = read_events(EventSource(events))
    m = replace(TINY, full_softmax_items=10, negatives=16, max_epochs=50, patience=50, max_minutes=1e-6).fit(ev)
    assert m.info["loss"].startswith("sampled_softmax(16")
    assert m.info["stopped"] == "budget" and m.info["epochs"] == 1 and m.info["best_epoch"] == 1
    assert m.info["memory_bound_mb"] > 0


def test_thin_data_warns_or_refuses(events):
    ev = read_events(EventSource(events.slice(0, 30)))
    with pytest.raises(PipelineError, match="too little data"):
        replace(TINY, min_events=10_000).fit(ev)
    with pytest.warns(ThinDataWarning, match="co-occurrence"):
        replace(TINY, min_events=1, min_targets_per_item=10_000).fit(ev)


def test_weaker_than_the_default_embedder_warns():
    # every entity walks one chain of items (i, i+1, ...): "what came next" counts predict the held-out
    # event, a model trained for one epoch at a tiny learning rate cannot
    rows = [(f"u{u}", f"i{(u + k) % 40}", k) for u in range(30) for k in range(12)]
    table = pa.table({"user_id": [r[0] for r in rows], "item_id": [r[1] for r in rows],
                      "event_type": ["view"] * len(rows),
                      "event_time": pa.array([datetime(2026, 1, 1, tzinfo=UTC) + timedelta(minutes=r[2]) for r in rows],
                                             pa.timestamp("us", tz="UTC"))})
    ev = read_events(EventSource(table))
    with pytest.warns(ThinDataWarning, match="co-occurrence embedder's") as caught:
        m = replace(TINY, baseline_check=True, fallback=False, max_epochs=1, lr=1e-9).fit(ev)
    assert m.info["validation_hr@10_count_baseline"] == 1.0 > m.info["validation_hr@10"]
    assert m.info["validation_hr@10_default"] > m.info["validation_hr@10"] and m.encoder is not None
    assert len(caught) == 1
    with pytest.warns(ThinDataWarning, match="count model") as caught:   # no default embedder at 3 coordinates
        m = replace(TINY, dim=3, baseline_check=True, max_epochs=1, lr=1e-9).fit(ev)
    assert str(m.info["validation_hr@10_default"]).startswith("unavailable") and m.encoder is not None


def test_windows_and_history_reference():
    seqs = Sequences(np.array([1, 2, 3, 4, 5, 6, 7], np.int32), np.array([0, 5, 5, 7]))
    w = seqs.windows(3)
    pairs = {(int(x), int(y)) for xs, ys in zip(w.inputs, w.targets) for x, y in zip(xs, ys) if x}
    assert pairs == {(1, 2), (2, 3), (3, 4), (4, 5), (6, 7)}
    assert seqs.last_windows(np.array([0, 1, 2]), 3).tolist() == [[3, 4, 5], [0, 0, 0], [0, 6, 7]]
    train, held = seqs.holdout()
    assert held.tolist() == [[0, 5]] and train.tokens.tolist() == [1, 2, 3, 4, 6, 7]


def test_encoder_bytes_round_trip_and_corruption(events):
    m = TINY.fit(read_events(EventSource(events)))
    data = m.encoder.to_bytes()
    again = SequenceEncoder.from_bytes(data)
    assert again.to_bytes() == data
    with pytest.raises(CorruptData):
        SequenceEncoder.from_bytes(data[:100])


def test_cli_model_sequence(tmp_path, events, capsys):
    path = tmp_path / "events.parquet"
    import pyarrow.parquet as pq

    pq.write_table(events, path)
    root = str(tmp_path / "cli")
    assert main(["apply", str(_specs(tmp_path / "specs")), "--root", root]) == 0
    cutoff = _cutoffs(events)[2].isoformat()
    os.environ.pop("FEATURESTORE_EVENTS", None)
    assert main(["run", "--events", str(path), "--model", "sequence", "--cutoff", cutoff, "--root", root,
                 "--quiet"]) == 2   # the default 64-d model does not fit these 9-d groups: a clear error
    assert "64-d" in capsys.readouterr().err
    assert main(["run", "--events", str(path), "--model", "cooccurrence", "--max-minutes", "1", "--cutoff",
                 cutoff, "--root", root, "--quiet"]) == 2
