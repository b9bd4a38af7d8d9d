"""The default item model (``scoring="directed"``): what came next, served as one vector per item."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from featurestore.embed import Aggregation, CooccurrenceEmbedder, ItemModel, aggregate, align, event_weights
from featurestore.embed.base import decode_matrix, encode_matrix, matrix_bytes, matrix_from_bytes
from featurestore.embed.svd import svd_factors
from featurestore.engine import read_events
from featurestore.engine.base import Cooccurrence
from featurestore.engine.duckdb import DuckDBEngine
from featurestore.engine.events import EventSource
from featurestore.synthetic import purchase_histories

W = {"view": 1.0, "add_to_cart": 2.0, "purchase": 4.0}
AGG = Aggregation(half_life=2, max_events=10)


@pytest.fixture(scope="module")
def planted():
    data = purchase_histories(n_users=1500, n_items=400, n_events=80_000, n_categories=10, days=20, seed=1)
    ev = read_events(EventSource(data.events), weights=W)
    return data, ev, CooccurrenceEmbedder().fit(ev)


def _directed_ppmi(ev, model, e):
    """The directed PPMI among the model's items, computed here from the engine's counts."""
    from featurestore.embed import ppmi_matrix

    c = DuckDBEngine().cooccurrence(ev, Cooccurrence(window=e.window, session_gap=e.session_gap,
                                                     cross_session=e.cross_session, directed=True))
    keep = pd.Index(ev.item_ids).get_indexer(model.item_ids)
    return ppmi_matrix(c[keep][:, keep].tocsr(), alpha=e.alpha), keep


def _history_weights(ev, model, entity):
    rows = pd.Index(model.item_ids).get_indexer(ev.item_ids[ev.item])
    w = event_weights(ev, AGG)
    idx = np.flatnonzero((ev.entity == entity) & (rows >= 0) & (w > 0))
    h = np.zeros(len(model))
    np.add.at(h, rows[idx], w[idx])
    return h / h.sum()


def test_layout(planted):
    _, _, model = planted
    assert model.query_dims == 59 and model.query_tail == (1.0, 0.0, 0.0, 0.0, 0.0) and model.similarity_dims == 4
    assert model.query_map is None and model.query_vectors is not None
    assert model.query_vectors.shape == (len(model), 59)
    assert np.allclose(np.linalg.norm(model.vectors, axis=1), 1, atol=1e-5)
    q = model.query()
    assert q is not None and q["dims"] == 59 and q["tail"] == [1.0, 0, 0, 0, 0] and q["similarity"] == 4
    assert q["vectors"] == {"shape": [len(model), 59]}
    back = ItemModel.from_query(model.item_ids, model.vectors, {}, q,
                                matrix_from_bytes(matrix_bytes(model.query_vectors), (len(model), 59)))
    assert back.layout() == model.layout() and back.query_vectors.tobytes() == model.query_vectors.tobytes()
    with pytest.raises(ValueError, match="disagree"):
        ItemModel.from_query(model.item_ids, model.vectors, {}, q)


def test_entity_cosine_ranks_exactly_by_the_directed_score(planted):
    """entity . item = (weighted mean of the history's u_h S^0.5) . v_j S^0.5 + lambda log n_j, up to a
    positive scale and a constant, with P ~ U S V^T (``P`` the directed PPMI)."""
    _, ev, model = planted
    e = CooccurrenceEmbedder()
    p, keep = _directed_ppmi(ev, model, e)
    u, s, vt = svd_factors(p, 59, n_iter=e._n_iter(), oversamples=e.oversamples, seed=e.seed)
    hist, cand = u.astype(np.float64) * np.sqrt(s), vt.T.astype(np.float64) * np.sqrt(s)
    lp = np.log(ev.item_count[keep].astype(np.float64))
    users = aggregate(ev, model, AGG)
    at = {k: i for i, k in enumerate(users.entity_ids.tolist())}
    for entity in range(0, 300, 10):
        h = _history_weights(ev, model, entity)
        want = (h @ hist) @ cand.T + e.log_popularity * lp
        got = model.vectors.astype(np.float64) @ users.vectors[at[ev.entity_ids[entity]]]
        assert np.corrcoef(want, got)[0, 1] > 0.99999
        assert np.array_equal(np.argsort(-want, kind="stable")[:10], np.argsort(-got, kind="stable")[:10])


def test_scores_estimate_the_directed_ppmi_mixture(planted):
    """The low-rank score's top 10 agree with the exact sum_h w_h PPMI(h -> j) + lambda log n_j."""
    _, ev, model = planted
    p, keep = _directed_ppmi(ev, model, CooccurrenceEmbedder())
    dense = p.toarray().astype(np.float64)
    lp = np.log(ev.item_count[keep].astype(np.float64))
    users = aggregate(ev, model, AGG)
    at = {k: i for i, k in enumerate(users.entity_ids.tolist())}
    overlap = []
    for entity in range(40):
        exact = _history_weights(ev, model, entity) @ dense + 0.3 * lp
        got = model.vectors @ users.vectors[at[ev.entity_ids[entity]]]
        overlap.append(len(set(np.argsort(-exact)[:10]) & set(np.argsort(-got)[:10])) / 10)
    assert np.mean(overlap) > 0.6  # chance: 10 / 400


def test_direction_matters():
    """Every user watches a then b then c: after a comes b, so a user whose last item is a is
    offered b first; a symmetric model cannot tell b (after a) from c (two steps after)."""
    rng = np.random.default_rng(0)
    rows, t = [], 0
    for u in range(400):
        chain = rng.permutation(60)[:6]
        for k, item in enumerate(chain):
            rows.append((f"u{u}", f"i{item:02d}", "view", t + k))
        t += 10
    df = pd.DataFrame(rows, columns=["user_id", "item_id", "event_type", "minute"])
    df["event_time"] = pd.Timestamp("2026-01-01", tz="UTC") + pd.to_timedelta(df["minute"], unit="m")
    ev = read_events(EventSource(df.drop(columns="minute")), weights=W)
    model = CooccurrenceEmbedder(dim=24, session_gap=None).fit(ev)
    c = DuckDBEngine().cooccurrence(ev, Cooccurrence(window=1, directed=True)).toarray()
    users = aggregate(ev, model, Aggregation(half_life=1, max_events=1))  # the last item alone
    rows_of = pd.Index(model.item_ids)
    hits = 0
    for u, vec in zip(users.entity_ids[:100], users.vectors[:100]):
        last = df[df.user_id == u].item_id.iloc[-1]
        code = int(pd.Index(ev.item_ids).get_loc(last))
        if c[code].sum() == 0:
            continue
        best_next = ev.item_ids[int(np.argmax(c[code]))]
        top = model.item_ids[np.argsort(-(model.vectors @ vec))[:5]]
        hits += best_next in top.tolist() and rows_of.get_loc(best_next) >= 0
    assert hits >= 40


def test_alignment_keeps_the_entity_ranking(planted):
    _, ev, a = planted
    b = CooccurrenceEmbedder(seed=3, n_iter=1).fit(ev)
    q, _ = np.linalg.qr(np.random.default_rng(0).standard_normal((59, 59)))
    rotated = b.vectors.astype(np.float64).copy()
    rotated[:, :59] @= q
    qvec = (b.query_vectors.astype(np.float64) @ q).astype(np.float32)
    b = dataclasses.replace(b, vectors=rotated.astype(np.float32), query_vectors=qvec)
    aligned, info = align(b, a)
    assert info is not None and info.cosine_after > 0.9 > info.cosine_before
    assert np.allclose(aligned.vectors[:, 59], b.vectors[:, 59], atol=1e-6)  # the popularity coordinate stays
    before, after = aggregate(ev, b, AGG), aggregate(ev, aligned, AGG)
    for k in range(0, 200, 20):
        s1, s2 = b.vectors @ before.vectors[k], aligned.vectors @ after.vectors[k]
        assert np.allclose(s1, s2, atol=1e-4)


def test_neighbours_share_the_planted_category(planted):
    data, _, model = planted
    cats = data.item_category[[int(s[1:]) for s in model.item_ids]]
    sims = model.vectors @ model.vectors.T
    np.fill_diagonal(sims, -np.inf)
    assert (cats[np.argsort(-sims, axis=1)[:, :10]] == cats[:, None]).mean() > 0.6


def test_query_map_checks_and_round_trip():
    ids = np.array(["a", "b"], dtype=object)
    x = np.eye(2, 4, dtype=np.float32)
    with pytest.raises(ValueError, match="query_map of shape"):
        ItemModel(ids, x, query_dims=2, query_tail=(1.0, 0.0), query_map=np.eye(3, dtype=np.float32))
    with pytest.raises(ValueError, match="query_map of shape"):
        ItemModel(ids, x, query_map=np.eye(2, dtype=np.float32))
    m = np.random.default_rng(0).standard_normal((5, 5)).astype(np.float32)
    assert decode_matrix(encode_matrix(m), (5, 5)).tobytes() == m.tobytes()
    with pytest.raises(ValueError, match="shape"):
        decode_matrix(encode_matrix(m), (4, 4))
    with pytest.raises(ValueError, match="query_vectors of shape"):
        ItemModel(ids, x, query_dims=2, query_tail=(1.0, 0.0), query_vectors=np.ones((3, 2), np.float32))
    with pytest.raises(ValueError, match="query_vectors of shape"):
        ItemModel(ids, x, query_vectors=np.ones((2, 4), np.float32))
    assert matrix_from_bytes(matrix_bytes(m), (5, 5)).tobytes() == m.tobytes()
    with pytest.raises(ValueError, match="cannot hold"):
        matrix_from_bytes(matrix_bytes(m), (4, 5))


def test_served_nearest_is_the_models_own_ranking(tmp_path):
    """Through the store: each user's top 10 from ``items.nearest(key=user, query_view=users)`` is
    the top 10 of the directed score computed from the committed model (item vectors and the history
    sides stored beside them)."""
    from datetime import timedelta

    from featurestore import FeatureStore
    from featurestore.errors import CorruptData
    from featurestore.pipeline import Pipeline, read_model

    from .conftest import SCHEMAS

    data = purchase_histories(n_users=300, n_items=150, n_events=15_000, n_categories=6, days=10, seed=2)
    store = FeatureStore(tmp_path / "store")
    store.apply(SCHEMAS)
    cutoff = data.end + timedelta(seconds=1)
    Pipeline("directed", EventSource(data.events), weights=W).run(store, cutoff, progress=False)
    fg = store.feature_group("item_embeddings", 1)
    model = read_model(fg, fg.history()[-1])
    fitted = CooccurrenceEmbedder().fit(read_events(EventSource(data.events), before=cutoff, weights=W))
    assert model.query_vectors is not None and model.layout() == fitted.layout()
    order = np.argsort(fitted.item_ids, kind="stable")
    assert model.query_vectors.tobytes() == fitted.query_vectors[order].tobytes()
    ev = read_events(EventSource(data.events), before=cutoff, weights=W)
    users = aggregate(ev, model, AGG)   # the pipeline's default aggregation, from the committed model
    items, served = store.online("item_embeddings"), store.online("user_embeddings")
    got_users = served.get(users.entity_ids[:40].tolist())
    assert np.allclose(np.asarray(got_users.vectors), users.vectors[:40], atol=1e-6)
    for uid, vec in zip(users.entity_ids[:40], users.vectors[:40]):
        want = model.item_ids[np.argsort(-(model.vectors.astype(np.float64) @ vec), kind="stable")[:10]]
        assert items.nearest(key=uid, query_view=served, k=10).keys == want.tolist()
    # the history sides are a checksummed artifact: a changed byte is a typed error, never a wrong vector
    record = fg.history()[-1].metadata["query"]["vectors"]
    assert record["shape"] == [len(model), 59] and record["bytes"] == 4 * len(model) * 59
    full = f"{fg.rel}/{record['path']}"
    raw = bytearray(fg.root.read_bytes(full))
    raw[100] ^= 1
    fg.root.write_bytes(full, bytes(raw))
    with pytest.raises(CorruptData, match="does not match its checksum"):
        read_model(fg, fg.history()[-1])


def test_a_store_written_by_the_previous_default_refuses_the_new_one_clearly(tmp_path):
    from datetime import timedelta

    from featurestore import FeatureStore
    from featurestore.errors import PipelineError
    from featurestore.pipeline import Pipeline

    from .conftest import SCHEMAS

    data = purchase_histories(n_users=200, n_items=120, n_events=6_000, n_categories=4, days=6, seed=3)
    store = FeatureStore(tmp_path / "store")
    store.apply(SCHEMAS)
    cutoff = data.end + timedelta(seconds=1)
    old = Pipeline("p", EventSource(data.events), weights=W, embedder=CooccurrenceEmbedder(scoring="next_item"))
    old.run(store, cutoff - timedelta(days=1), progress=False)
    with pytest.raises(PipelineError, match="coordinates mean something else") as err:
        Pipeline("p", EventSource(data.events), weights=W).run(store, cutoff, progress=False)
    assert "'vectors': '120x59'" in str(err.value) and len(str(err.value)) < 1500
    assert len(store.feature_group("item_embeddings", 1).history()) == 2  # create + the first run only
