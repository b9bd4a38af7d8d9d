"""Directed co-occurrence counting (``Cooccurrence(directed=True)``) against a brute-force reference."""

from __future__ import annotations

import math
from collections import defaultdict
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from featurestore.engine import read_events
from featurestore.engine.base import Cooccurrence
from featurestore.engine.duckdb import DuckDBEngine
from featurestore.engine.events import EventSource
from tests.test_embed import _events

T0 = datetime(2026, 1, 1, tzinfo=UTC)
W = {"view": 1.0, "add_to_cart": 2.0, "purchase": 4.0}

# a small event log: (user, item, type, minute); minutes up to 200 so some pauses pass 30 minutes
event_lists = st.lists(st.tuples(st.integers(0, 4), st.integers(0, 7), st.sampled_from(list(W)),
                                 st.integers(0, 200)), min_size=1, max_size=50)


def _reference(ev, window, gap, cross, directed):
    """Plain loops over each entity's sequence: collapse repeats (largest weight, first time), then
    every pair at distance d <= window counts sqrt(w_a w_b) (window - d + 1) / window, times ``cross``
    when a pause longer than ``gap`` lies between them; at (earlier, later), and also at (later,
    earlier) unless ``directed``."""
    seqs = defaultdict(list)
    for e, i, w, t in zip(ev.entity.tolist(), ev.item.tolist(), ev.weight.tolist(), ev.time.tolist()):
        s = seqs[e]
        if s and s[-1][0] == i:
            s[-1] = (i, max(s[-1][1], w), s[-1][2])
        else:
            s.append((i, w, t))
    dense = np.zeros((ev.n_items, ev.n_items))
    for s in seqs.values():
        session, sid = [], 0
        for p, (_, _, t) in enumerate(s):
            if p and gap is not None and t - s[p - 1][2] > gap.total_seconds() * 1e6:
                sid += 1
            session.append(sid)
        for p in range(len(s)):
            for q in range(p + 1, min(p + window, len(s) - 1) + 1):
                (a, wa, _), (b, wb, _) = s[p], s[q]
                if a == b:
                    continue
                v = math.sqrt(wa * wb) * (window - (q - p) + 1) / window
                if gap is not None and session[p] != session[q]:
                    v *= cross
                dense[a, b] += v
                if not directed:
                    dense[b, a] += v
    return dense


@settings(max_examples=25, deadline=None)
@given(event_lists, st.integers(1, 5), st.sampled_from([None, timedelta(minutes=30)]),
       st.sampled_from([0.5, 0.25]))
def test_directed_counts_match_reference(rows, window, gap, cross):
    ev = _events(rows)
    engine = DuckDBEngine()
    for directed in (True, False):
        got = engine.cooccurrence(ev, Cooccurrence(window=window, session_gap=gap, cross_session=cross,
                                                   directed=directed))
        assert got.shape == (ev.n_items, ev.n_items)
        assert np.allclose(got.toarray(), _reference(ev, window, gap, cross, directed), rtol=1e-5, atol=1e-6)


@settings(max_examples=10, deadline=None)
@given(event_lists, st.integers(1, 5))
def test_undirected_is_directed_plus_transpose(rows, window):
    ev = _events(rows)
    engine = DuckDBEngine()
    d = engine.cooccurrence(ev, Cooccurrence(window=window, directed=True)).toarray()
    u = engine.cooccurrence(ev, Cooccurrence(window=window)).toarray()
    assert np.allclose(u, d + d.T, rtol=1e-5, atol=1e-6)


def test_directed_counts_only_what_came_next():
    # u0: a -> b -> c; u1: c -> a (window 5): a->b, a->c, b->c from u0 and c->a from u1
    df = pd.DataFrame({"user_id": ["u0"] * 3 + ["u1"] * 2, "item_id": ["a", "b", "c", "c", "a"],
                       "event_type": ["view"] * 5,
                       "event_time": [T0 + timedelta(minutes=m) for m in (0, 1, 2, 0, 1)]})
    ev = read_events(EventSource(df), weights=W)
    c = DuckDBEngine().cooccurrence(ev, Cooccurrence(window=5, directed=True)).toarray()
    code = {k: i for i, k in enumerate(ev.item_ids)}
    pairs = {(a, b): c[code[a], code[b]] for a in "abc" for b in "abc" if c[code[a], code[b]]}
    assert pairs == {("a", "b"): 1.0, ("a", "c"): 0.8, ("b", "c"): 1.0, ("c", "a"): 1.0}
