"""Item model, aggregation and alignment: against plain reference implementations, and on planted data."""

from __future__ import annotations

import math
from collections import defaultdict
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from featurestore.embed import (
    Aggregation,
    CooccurrenceEmbedder,
    ItemModel,
    aggregate,
    align,
    cooccurrence,
    ppmi_matrix,
    procrustes,
)
from featurestore.errors import PipelineError
from featurestore.events import EventSource
from featurestore.synthetic import purchase_histories

T0 = datetime(2026, 1, 1, tzinfo=UTC)
W = {"view": 1.0, "add_to_cart": 2.0, "purchase": 4.0}

# a small event log: (user, item, type, minute)
event_lists = st.lists(st.tuples(st.integers(0, 4), st.integers(0, 7), st.sampled_from(list(W)),
                                 st.integers(0, 50)), min_size=1, max_size=40)


def _events(rows):
    df = pd.DataFrame(rows, columns=["user_id", "item_id", "event_type", "minute"])
    df["user_id"] = "u" + df["user_id"].astype(str)
    df["item_id"] = "i" + df["item_id"].astype(str)
    df["event_time"] = [T0 + timedelta(minutes=int(m)) for m in df["minute"]]
    return EventSource(df.drop(columns="minute")).load(weights=W)


def _reference_cooccurrence(ev, window):
    """Plain loops: collapse repeats, then count each pair within the window."""
    out = defaultdict(float)
    seqs = defaultdict(list)
    for e, i, w in zip(ev.entity.tolist(), ev.item.tolist(), ev.weight.tolist()):
        s = seqs[e]
        if s and s[-1][0] == i:
            s[-1] = (i, max(s[-1][1], w))
        else:
            s.append((i, w))
    for s in seqs.values():
        for p in range(len(s)):
            for d in range(1, window + 1):
                if p + d < len(s) and s[p][0] != s[p + d][0]:
                    v = math.sqrt(s[p][1] * s[p + d][1]) * (window - d + 1) / window
                    out[(s[p][0], s[p + d][0])] += v
                    out[(s[p + d][0], s[p][0])] += v
    dense = np.zeros((ev.n_items, ev.n_items))
    for (a, b), v in out.items():
        dense[a, b] = v
    return dense


@settings(max_examples=25, deadline=None)
@given(event_lists, st.integers(1, 4))
def test_cooccurrence_matches_reference(rows, window):
    ev = _events(rows)
    got = cooccurrence(ev, window=window).toarray()
    assert np.allclose(got, _reference_cooccurrence(ev, window), rtol=1e-5, atol=1e-6)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.lists(st.integers(0, 5), min_size=6, max_size=6), min_size=6, max_size=6),
       st.sampled_from([0.5, 0.75, 1.0]), st.sampled_from([1.0, 2.0]))
def test_ppmi_matches_formula(counts, alpha, shift):
    import scipy.sparse as sp

    c = np.array(counts, dtype=np.float64)
    got = ppmi_matrix(sp.csr_matrix(c), alpha=alpha, shift=shift).toarray()
    row, col = c.sum(axis=1), c.sum(axis=0) ** alpha
    want = np.zeros_like(c)
    for i in range(6):
        for j in range(6):
            if c[i, j] > 0:
                want[i, j] = max(0.0, math.log(c[i, j] * col.sum() / (row[i] * col[j])) - math.log(shift))
    assert np.allclose(got, want, atol=1e-5)


def _reference_aggregate(ev, model, agg):
    rows = {k: r for r, k in enumerate(model.item_ids.tolist())}
    out = {}
    for e in range(ev.n_entities):
        idx = np.flatnonzero(ev.entity == e)
        acc = np.zeros(model.dim)
        for pos, k in enumerate(idx):
            item = ev.item_ids[ev.item[k]]
            if item not in rows:
                continue
            from_end = len(idx) - 1 - pos
            if isinstance(agg.half_life, timedelta):
                age = (ev.time[idx[-1]] - ev.time[k]) / (agg.half_life.total_seconds() * 1e6)
            else:
                age = from_end / agg.half_life
            acc += ev.weight[k] * 0.5 ** age * model.vectors[rows[item]]
        if np.linalg.norm(acc) > 0:
            out[ev.entity_ids[e]] = acc / np.linalg.norm(acc)
    return out


@settings(max_examples=20, deadline=None)
@given(event_lists, st.sampled_from([1, 3, timedelta(minutes=7)]), st.integers(0, 1000))
def test_aggregate_matches_reference(rows, half_life, seed):
    ev = _events(rows)
    rng = np.random.default_rng(seed)
    keep = rng.random(ev.n_items) < 0.8   # some items have no vector
    vecs = rng.standard_normal((int(keep.sum()), 4)).astype(np.float32)
    model = ItemModel(ev.item_ids[keep], vecs / np.linalg.norm(vecs, axis=1, keepdims=True))
    agg = Aggregation(half_life=half_life)
    got = aggregate(ev, model, agg)
    want = _reference_aggregate(ev, model, agg)
    assert sorted(got.entity_ids.tolist()) == sorted(want)
    for eid, v in zip(got.entity_ids, got.vectors):
        assert np.allclose(v, want[eid], atol=1e-5)
    assert got.skipped == ev.n_entities - len(want)


@pytest.fixture(scope="module")
def planted():
    data = purchase_histories(n_users=1500, n_items=400, n_events=80_000, n_categories=10, days=20, seed=1)
    return data, EventSource(data.events).load(weights=W)


def test_same_inputs_and_seed_give_identical_bytes(planted):
    _, ev = planted
    a = CooccurrenceEmbedder(seed=7).fit(ev)
    b = CooccurrenceEmbedder(seed=7).fit(ev)
    assert a.vectors.tobytes() == b.vectors.tobytes() and a.item_ids.tolist() == b.item_ids.tolist()
    assert a.vectors.dtype == np.float32 and np.allclose(np.linalg.norm(a.vectors, axis=1), 1, atol=1e-5)


def test_planted_categories_are_recovered(planted):
    data, ev = planted
    model = CooccurrenceEmbedder().fit(ev)
    users = aggregate(ev, model)
    cats = data.item_category[[int(s[1:]) for s in model.item_ids]]
    # item neighbours share the item's category far above chance
    sims = model.vectors @ model.vectors.T
    np.fill_diagonal(sims, -np.inf)
    nn = np.argsort(-sims, axis=1)[:, :10]
    same = (cats[nn] == cats[:, None]).mean()
    assert same > 0.6 > 3 * (1 / 10)
    # users' nearest items fall in their planted top-3 categories far above chance
    user_no = np.array([int(s[1:]) for s in users.entity_ids])
    taste = data.taste_at(data.end)[user_no]
    top3 = np.argsort(-taste, axis=1)[:, :3]
    near = np.argsort(-(users.vectors @ model.vectors.T), axis=1)[:, :10]
    hit = (cats[near][:, :, None] == top3[:, None, :]).any(axis=2).mean()
    share = np.bincount(cats, minlength=10) / cats.size
    chance = share[top3].sum(axis=1).mean()
    assert hit > 1.6 * chance


def test_too_few_items_is_a_clear_error(planted):
    _, ev = planted
    with pytest.raises(PipelineError, match="more than dim=512"):
        CooccurrenceEmbedder(dim=512).fit(ev)
    with pytest.raises(PipelineError, match="window"):
        CooccurrenceEmbedder(window=0)


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 10_000), st.integers(2, 16))
def test_aligning_a_rotated_copy_returns_the_identity(seed, dim):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((dim * 4, dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    q, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
    ids = np.array([f"i{k}" for k in range(x.shape[0])], dtype=object)
    old = ItemModel(ids, x)
    new = ItemModel(ids[::-1].copy(), (x @ q).astype(np.float32)[::-1].copy())  # other order too
    aligned, info = align(new, old)
    assert info is not None and info.shared == x.shape[0]
    assert np.allclose(info.rotation @ q, np.eye(dim), atol=1e-4)   # R undoes Q
    assert np.allclose(aligned.vectors, x[::-1], atol=1e-4)
    assert info.cosine_after == pytest.approx(1.0, abs=1e-4)
    assert np.allclose(procrustes(x, x), np.eye(dim), atol=1e-5)


def test_alignment_keeps_similarities_and_needs_shared_items(planted):
    _, ev = planted
    a = CooccurrenceEmbedder(seed=0).fit(ev)
    b = CooccurrenceEmbedder(seed=1, n_iter=2).fit(ev)
    aligned, info = align(b, a)
    assert info.cosine_after > info.cosine_before
    assert np.allclose(aligned.vectors @ aligned.vectors.T, b.vectors @ b.vectors.T, atol=1e-4)
    assert 0 <= info.overlap_at_10 <= 1
    other = ItemModel(np.array(["x", "y"], dtype=object), a.vectors[:2])
    same, none = align(b, other)
    assert none is None and same is b


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 10_000))
def test_norm_slack_makes_cosine_rank_like_the_inner_product(seed):
    from featurestore.embed.cooccurrence import inner_product_to_cosine

    rng = np.random.default_rng(seed)
    x = rng.standard_normal((50, 6)) * rng.uniform(0.1, 3.0, (50, 1))
    q = rng.standard_normal(6)
    z = inner_product_to_cosine(x)
    assert np.allclose(np.linalg.norm(z, axis=1), 1, atol=1e-5)
    query = np.append(q, 0.0)
    cos = z @ query / np.linalg.norm(query)
    assert np.array_equal(np.argsort(-cos, kind="stable")[:10], np.argsort(-(x @ q), kind="stable")[:10])


def test_next_item_scoring_adds_the_popularity_prior(planted):
    _, ev = planted
    model = CooccurrenceEmbedder(popularity=1.0).fit(ev)
    assert model.query_dims == 62 and len(model.query_tail) == 2 and model.query_tail[1] == 0.0
    assert np.allclose(np.linalg.norm(model.vectors, axis=1), 1, atol=1e-5)
    # an entity's cosine ranks items by <weighted mean of its items' x, x_j> + log P_alpha(j)
    from featurestore.embed import event_weights

    agg = Aggregation(half_life=3)
    users = aggregate(ev, model, agg)
    w = event_weights(ev, agg)
    rows = {k: r for r, k in enumerate(model.item_ids.tolist())}
    x, prior = model.vectors[:, :62].astype(np.float64), model.vectors[:, 62].astype(np.float64)
    for e in range(5):
        idx = np.flatnonzero(ev.entity == e)
        r = np.array([rows[ev.item_ids[ev.item[k]]] for k in idx])
        mean = (w[idx, None] * x[r]).sum(axis=0) / w[idx].sum()
        want = x @ mean + model.query_tail[0] * prior
        got = model.vectors @ users.vectors[users.entity_ids.tolist().index(ev.entity_ids[e])]
        assert users.vectors[:, 63].max() == 0.0
        assert np.array_equal(np.argsort(-want)[:20], np.argsort(-got)[:20])
    pop = CooccurrenceEmbedder(scoring="cosine").fit(ev)
    assert pop.query_dims is None and pop.vectors.shape[1] == 64


def test_alignment_rotates_only_the_leading_coordinates(planted):
    _, ev = planted
    a = CooccurrenceEmbedder(seed=0).fit(ev)
    b = CooccurrenceEmbedder(seed=3, n_iter=1).fit(ev)
    aligned, info = align(b, a)
    assert np.allclose(aligned.vectors[:, 62:], b.vectors[:, 62:], atol=1e-6)
    assert np.allclose(info.rotation[62:, :], np.eye(64)[62:, :]) and aligned.query_tail == b.query_tail
    assert info.cosine_after > info.cosine_before


def test_sessions_split_at_pauses():
    from featurestore.embed.cooccurrence import cooccurrence

    rows = [(0, 1, "view", 0), (0, 2, "view", 1), (0, 3, "view", 200)]   # a 199-minute pause
    ev = _events(rows)
    split = cooccurrence(ev, window=2, session_gap=timedelta(minutes=30), cross_session=0.5).toarray()
    whole = cooccurrence(ev, window=2).toarray()
    assert split[0, 1] == whole[0, 1] and split[1, 2] == 0.5 * whole[1, 2] and split[0, 2] == 0.5 * whole[0, 2]
