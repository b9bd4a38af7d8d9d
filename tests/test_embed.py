"""Item model, aggregation and alignment: against plain reference implementations, and on planted data."""

from __future__ import annotations

import dataclasses
import math
from collections import defaultdict
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from featurestore.embed import (
    Aggregation,
    CooccurrenceEmbedder,
    ItemModel,
    aggregate,
    align,
    normalized_counts,
    ppmi_matrix,
    procrustes,
)
from featurestore.engine import read_events
from featurestore.engine.counting import cooccurrence
from featurestore.engine.events import EventSource
from featurestore.errors import PipelineError
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
    return read_events(EventSource(df.drop(columns="minute")), weights=W)


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


@settings(max_examples=30, deadline=None)
@given(st.lists(st.lists(st.integers(0, 5), min_size=5, max_size=5), min_size=5, max_size=5))
def test_normalized_counts_times_mass_ratio_is_the_conditional(counts):
    import scipy.sparse as sp

    c = np.array(counts, dtype=np.float64)
    c = c + c.T + np.eye(5)  # symmetric, every row with a positive sum
    r = c.sum(axis=1)
    got = normalized_counts(sp.csr_matrix(c)).toarray()
    for h in range(5):
        for i in range(5):
            assert math.isclose(got[h, i], c[h, i] / math.sqrt(r[h] * r[i]), rel_tol=1e-5, abs_tol=1e-7)
            # times sqrt(r_i / r_h): P(i | h) = C_hi / r_h, what next_item scoring mixes
            assert math.isclose(got[h, i] * math.sqrt(r[i] / r[h]), c[h, i] / r[h], rel_tol=1e-5, abs_tol=1e-7)


def _reference_aggregate(ev, model, agg):
    rows = {k: r for r, k in enumerate(model.item_ids.tolist())}
    out = {}
    for e in range(ev.n_entities):
        idx = np.flatnonzero(ev.entity == e)
        acc, total = np.zeros(model.dim), 0.0
        for pos, k in enumerate(idx):
            item = ev.item_ids[ev.item[k]]
            if item not in rows:
                continue
            from_end = len(idx) - 1 - pos
            if isinstance(agg.half_life, timedelta):
                age = (ev.time[idx[-1]] - ev.time[k]) / (agg.half_life.total_seconds() * 1e6)
            else:
                age = from_end / agg.half_life
            v = model.vectors[rows[item]].astype(np.float64)
            if model.query_divide is not None:
                v = v / v[model.query_divide]
            acc += ev.weight[k] * 0.5 ** age * v
            total += ev.weight[k] * 0.5 ** age
        if model.query_dims is not None and total > 0:
            acc = acc / total
            acc[model.query_dims:] = model.query_tail
        if np.linalg.norm(acc) > 0:
            out[ev.entity_ids[e]] = acc / np.linalg.norm(acc)
    return out


@pytest.mark.parametrize("divide", [False, True], ids=["plain", "per-item-divisor"])
@settings(max_examples=20, deadline=None)
@given(event_lists, st.sampled_from([1, 3, timedelta(minutes=7)]), st.integers(0, 1000))
def test_aggregate_matches_reference(divide, rows, half_life, seed):
    ev = _events(rows)
    rng = np.random.default_rng(seed)
    keep = rng.random(ev.n_items) < 0.8   # some items have no vector
    n = int(keep.sum())
    if divide:  # leading coordinates divided by a positive tail coordinate, then a fixed tail
        vecs = np.hstack([rng.standard_normal((n, 3)), rng.uniform(0.01, 1.0, (n, 1)), rng.uniform(0, 1, (n, 1))])
        model = ItemModel(ev.item_ids[keep], vecs.astype(np.float32), query_dims=3, query_tail=(0.25, 0.0),
                          query_divide=3)
    else:
        vecs = rng.standard_normal((n, 4)).astype(np.float32)
        model = ItemModel(ev.item_ids[keep], vecs / np.linalg.norm(vecs, axis=1, keepdims=True))
    agg = Aggregation(half_life=half_life)
    got = aggregate(ev, model, agg)
    want = _reference_aggregate(ev, model, agg)
    assert sorted(got.entity_ids.tolist()) == sorted(want)
    for eid, v in zip(got.entity_ids, got.vectors):
        assert np.allclose(v, want[eid], atol=1e-5)
    assert got.skipped == ev.n_entities - len(want)


def test_query_divide_must_be_a_positive_tail_coordinate():
    ids = np.array(["a", "b"], dtype=object)
    x = np.array([[1.0, 0.5, 0.0], [0.0, 0.2, 0.0]], dtype=np.float32)
    assert ItemModel(ids, x, query_dims=1, query_tail=(0.0, 0.0), query_divide=1).query() == {
        "dims": 1, "tail": [0.0, 0.0], "divide": 1}
    with pytest.raises(ValueError, match="tail coordinate"):
        ItemModel(ids, x, query_dims=1, query_tail=(0.0, 0.0), query_divide=0)
    with pytest.raises(ValueError, match="positive"):
        ItemModel(ids, x, query_dims=1, query_tail=(0.0, 0.0), query_divide=2)


@pytest.fixture(scope="module")
def planted():
    data = purchase_histories(n_users=1500, n_items=400, n_events=80_000, n_categories=10, days=20, seed=1)
    return data, read_events(EventSource(data.events), weights=W)


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


def _next_item_reference(ev, model, agg, entity):
    """Exact next-item scores of ``entity`` over the model's items: sum_h w_h P(i | h) * P_alpha(i) / P(i)."""
    from featurestore.embed import event_weights

    e = CooccurrenceEmbedder()
    c = cooccurrence(ev, window=e.window, session_gap=e.session_gap, cross_session=e.cross_session).toarray()
    keep = pd.Index(ev.item_ids).get_indexer(model.item_ids)
    c = c[np.ix_(keep, keep)]
    r = c.sum(axis=1)
    prior = r ** e.alpha / (r ** e.alpha).sum()
    w = event_weights(ev, agg)
    rows = {k: j for j, k in enumerate(model.item_ids.tolist())}
    mix = np.zeros(len(model))
    for k in np.flatnonzero(ev.entity == entity):
        mix += w[k] * c[rows[ev.item_ids[ev.item[k]]]] / r[rows[ev.item_ids[ev.item[k]]]]
    return mix * prior / (r / r.sum())


def test_next_item_scoring_is_a_mixture_over_the_history(planted):
    _, ev = planted
    model = CooccurrenceEmbedder(scoring="next_item").fit(ev)  # dim 64: 47 scoring components, the prior, 16 similarity
    assert model.query_dims == 47 and model.query_tail == (0.0,) * 17 and model.query_divide == 47
    assert model.similarity_dims == 16
    assert model.query() == {"dims": 47, "tail": [0.0] * 17, "divide": 47, "similarity": 16}
    assert np.allclose(np.linalg.norm(model.vectors, axis=1), 1, atol=1e-5)
    from featurestore.embed import event_weights

    agg = Aggregation(half_life=3)
    users = aggregate(ev, model, agg)
    assert np.abs(users.vectors[:, 47:]).max() == 0.0
    w = event_weights(ev, agg)
    rows = {k: r for r, k in enumerate(model.item_ids.tolist())}
    x, prior = model.vectors[:, :47].astype(np.float64), model.vectors[:, 47].astype(np.float64)
    overlap = []
    for e in range(40):
        idx = np.flatnonzero(ev.entity == e)
        r = np.array([rows[ev.item_ids[ev.item[k]]] for k in idx])
        # an entity's cosine ranks items by x_i . (weighted mean of its items' x_h / prior_h) ...
        mean = (w[idx, None] * x[r] / prior[r, None]).sum(axis=0) / w[idx].sum()
        want = x @ mean
        got = model.vectors @ users.vectors[users.entity_ids.tolist().index(ev.entity_ids[e])]
        assert np.array_equal(np.argsort(-want)[:20], np.argsort(-got)[:20])
        # ... a low-rank estimate of the mixture sum_h w_h P(i | h), with the prior smoothed
        exact = _next_item_reference(ev, model, agg, e)
        overlap.append(len(set(np.argsort(-got)[:10]) & set(np.argsort(-exact)[:10])) / 10)
    assert np.mean(overlap) > 0.6  # chance: 10 / 400
    pop = CooccurrenceEmbedder(scoring="cosine").fit(ev)
    assert pop.query_dims is None and pop.query_divide is None and pop.vectors.shape[1] == 64


def test_next_item_vectors_do_not_collapse_onto_the_slack(planted):
    """The mixture's norms span orders of magnitude; the similarity block keeps the stored vectors
    spread out (a single slack coordinate would make every rare item nearly the same vector)."""
    _, ev = planted
    model = CooccurrenceEmbedder(scoring="next_item").fit(ev)
    v = model.vectors.astype(np.float64)
    assert np.linalg.norm(v[:, :48], axis=1).min() < 0.2  # the tail of the prior: mostly slack ...
    g = v @ v.T
    off = g[~np.eye(len(v), dtype=bool)]
    assert np.abs(off).mean() < 0.3  # ... yet pairs are not all alike (one slack coordinate: ~1)
    s = np.linalg.svd(v, compute_uv=False)
    p = s / s.sum()
    assert np.exp(-(p * np.log(p)).sum()) > 12  # effective rank
    # the degenerate layout, for contrast
    single = CooccurrenceEmbedder(scoring="next_item", similarity_dims=1, dim=20).fit(ev)
    sv = single.vectors.astype(np.float64)
    assert np.abs(sv @ sv.T)[~np.eye(len(sv), dtype=bool)].mean() > 0.9


def test_small_isolated_groups_do_not_take_the_components(planted):
    """Pairs of items that co-occur only with each other have singular value 1 in the unregularised
    normalised counts and would push the real structure out; tau keeps it."""
    data, _ = planted
    rows = [(f"z{k}", f"y{k}{j}", "purchase", datetime(2026, 1, 1, 0, j, tzinfo=UTC))
            for k in range(120) for j in (0, 1)]
    extra = pa.table({"user_id": [r[0] for r in rows], "item_id": [r[1] for r in rows],
                      "event_type": [r[2] for r in rows],
                      "event_time": pa.array([r[3] for r in rows], pa.timestamp("us", tz="UTC"))})
    both = read_events(EventSource(pa.concat_tables([data.events, extra.cast(data.events.schema)])), weights=W)
    cats = data.item_category

    def same_category_neighbours(model):
        real = np.array([not s.startswith("y") for s in model.item_ids])
        v = model.vectors[real].astype(np.float64)
        c = cats[[int(s[1:]) for s in model.item_ids[real]]]
        sims = v @ v.T
        np.fill_diagonal(sims, -np.inf)
        return (c[np.argsort(-sims, axis=1)[:, :10]] == c[:, None]).mean()

    assert same_category_neighbours(CooccurrenceEmbedder(scoring="next_item").fit(both)) > 0.6
    assert same_category_neighbours(CooccurrenceEmbedder(scoring="next_item", regularization=0.0).fit(both)) < 0.4
    # the directed default's PPMI does not let them take the components either
    assert same_category_neighbours(CooccurrenceEmbedder().fit(both)) > 0.6


def test_next_item_layout_checks_its_dimensions():
    with pytest.raises(PipelineError, match="dim must be >= 34 with scoring='next_item' and similarity_dims=16"):
        CooccurrenceEmbedder(scoring="next_item", dim=32, similarity_dims=16)
    with pytest.raises(PipelineError, match="similarity_dims must be >= 1"):
        CooccurrenceEmbedder(scoring="next_item", similarity_dims=0)
    assert CooccurrenceEmbedder(scoring="next_item", dim=8)._similarity_dims() == 2
    ids = np.array(["a", "b"], dtype=object)
    with pytest.raises(ValueError, match="similarity_dims 3 must lie in the tail"):
        ItemModel(ids, np.eye(2, 4, dtype=np.float32), query_dims=2, query_tail=(0.0, 0.0), similarity_dims=3)


def test_alignment_rotates_the_scoring_and_similarity_blocks_on_their_own(planted):
    _, ev = planted
    a = CooccurrenceEmbedder(scoring="next_item", seed=0).fit(ev)
    b = CooccurrenceEmbedder(scoring="next_item", seed=3, n_iter=1).fit(ev)
    rng = np.random.default_rng(0)
    q1, _ = np.linalg.qr(rng.standard_normal((47, 47)))
    q2, _ = np.linalg.qr(rng.standard_normal((16, 16)))
    rotated = b.vectors.astype(np.float64).copy()
    rotated[:, :47] @= q1
    rotated[:, 48:] @= q2
    b = dataclasses.replace(b, vectors=rotated.astype(np.float32))
    aligned, info = align(b, a)
    assert np.allclose(aligned.vectors[:, 47], b.vectors[:, 47], atol=1e-6)  # the prior stays
    assert np.allclose(info.rotation[47, :], np.eye(64)[47, :]) and np.allclose(info.rotation[:47, 48:], 0)
    assert aligned.query_tail == b.query_tail and aligned.query_divide == b.query_divide == 47
    assert aligned.similarity_dims == 16
    assert info.cosine_after > 0.9 > info.cosine_before
    assert np.allclose(aligned.vectors @ aligned.vectors.T, b.vectors @ b.vectors.T, atol=1e-4)
    # a previous model with another layout (here: another scoring mode) is not aligned onto
    other = CooccurrenceEmbedder(scoring="inner_product").fit(ev)
    assert other.dim == b.dim and other.query_dims != b.query_dims
    same, none = align(b, other)
    assert none is None and same is b


def test_sessions_split_at_pauses():
    from featurestore.engine.counting import cooccurrence

    rows = [(0, 1, "view", 0), (0, 2, "view", 1), (0, 3, "view", 200)]   # a 199-minute pause
    ev = _events(rows)
    split = cooccurrence(ev, window=2, session_gap=timedelta(minutes=30), cross_session=0.5).toarray()
    whole = cooccurrence(ev, window=2).toarray()
    assert split[0, 1] == whole[0, 1] and split[1, 2] == 0.5 * whole[1, 2] and split[0, 2] == 0.5 * whole[0, 2]
