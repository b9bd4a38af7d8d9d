"""Seeded synthetic purchase histories with planted structure, for tests, the demo and benchmarks.

Items belong to latent categories and have Zipf popularity. Each user has a taste mixture over
categories that drifts linearly from a start mixture to an end mixture over the period. Users act in
sessions: a session starts at a random time, focuses on one category drawn from the user's taste at
that time, and holds a few events seconds to minutes apart; some events are exploration (any
popular item). Event types: views, add-to-carts and purchases, which usually repeat the item just
viewed (bursts). Everything is vectorised and seeded: the same arguments give the same events.

Example::

    data = purchase_histories(n_users=1000, n_items=500, n_events=50_000, seed=0)
    data.events            # pyarrow Table: user_id, item_id, event_type, event_time
    data.item_category     # planted category of each item (index = item number)
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa

EVENT_TYPES = ("view", "add_to_cart", "purchase")


@dataclass
class Synthetic:
    """Generated events and the structure planted in them."""

    events: pa.Table              # user_id, item_id, event_type, event_time (UTC), sorted by time
    item_ids: list[str]           # item number -> id
    user_ids: list[str]           # user number -> id
    item_category: np.ndarray     # (n_items,) planted category
    taste_start: np.ndarray       # (n_users, n_categories) mixtures at the start
    taste_end: np.ndarray         # (n_users, n_categories) mixtures at the end
    start: datetime
    end: datetime

    def taste_at(self, when: datetime) -> np.ndarray:
        """Every user's planted mixture at ``when``."""
        lam = np.clip((when - self.start) / (self.end - self.start), 0.0, 1.0)
        return (1 - lam) * self.taste_start + lam * self.taste_end

    @property
    def n_categories(self) -> int:
        return int(self.taste_start.shape[1])


def _ids(prefix: str, n: int) -> list[str]:
    width = len(str(max(n - 1, 0)))
    return [f"{prefix}{i:0{width}d}" for i in range(n)]


def _sample_rows(cum: np.ndarray, u: np.ndarray) -> np.ndarray:
    """For each row r of cumulative distributions ``cum`` (n, k), the first index with cum > u[r]."""
    return np.minimum((cum < u[:, None]).sum(axis=1), cum.shape[1] - 1)


def purchase_histories(n_users: int = 1000, n_items: int = 500, n_events: int = 50_000, *,
                       n_categories: int = 20, days: int = 30, start: datetime | None = None,
                       session_mean: float = 6.0, explore: float = 0.1, taste_concentration: float = 0.3,
                       zipf: float = 1.1, seed: int = 0) -> Synthetic:
    """Generate about ``n_events`` events (see the module docstring)."""
    rng = np.random.default_rng(seed)
    start = start or datetime(2026, 10, 1, tzinfo=UTC)
    span_us = int(days * 86400e6)
    n_cat = max(1, min(n_categories, n_items))

    # items: categories, Zipf popularity over a random global rank
    category = rng.integers(0, n_cat, n_items)
    rank = rng.permutation(n_items) + 1
    pop = rank.astype(np.float64) ** -zipf
    order = np.lexsort((np.arange(n_items), category))          # items grouped by category
    cat_of_sorted = category[order]
    cum = np.cumsum(pop[order])
    cat_end = np.searchsorted(cat_of_sorted, np.arange(n_cat), side="right")
    cat_begin = np.concatenate([[0], cat_end[:-1]])
    cum0 = np.concatenate([[0.0], cum])
    cat_lo, cat_hi = cum0[cat_begin], cum0[cat_end]
    global_cum = cum / cum[-1]

    # users: taste mixtures (start, end) and activity (heavy-tailed)
    taste_start = rng.dirichlet(np.full(n_cat, taste_concentration), n_users)
    taste_end = rng.dirichlet(np.full(n_cat, taste_concentration), n_users)
    activity = rng.lognormal(0.0, 1.0, n_users)

    n_sessions = max(1, round(n_events / session_mean))
    s_user = rng.choice(n_users, size=n_sessions, p=activity / activity.sum())
    s_time = rng.integers(0, span_us, n_sessions)
    lam = s_time / span_us
    use_end = rng.random(n_sessions) < lam                         # drift: mixture at that time
    taste = np.where(use_end[:, None], taste_end[s_user], taste_start[s_user])
    s_cat = _sample_rows(np.cumsum(taste, axis=1), rng.random(n_sessions))
    s_len = rng.geometric(1.0 / session_mean, n_sessions)

    # events: expand sessions
    ev_session = np.repeat(np.arange(n_sessions), s_len)
    n = ev_session.size
    first = np.concatenate([[0], np.cumsum(s_len)[:-1]])
    pos = np.arange(n) - first[ev_session]
    gaps = rng.exponential(90e6, n).astype(np.int64)                # ~1.5 min between events
    gaps[pos == 0] = 0
    offset = np.cumsum(gaps) - np.repeat(np.cumsum(gaps)[first], s_len)
    t = np.minimum(s_time[ev_session] + offset, span_us - 1)

    c = s_cat[ev_session]
    u = rng.random(n)
    item_in_cat = order[np.minimum(np.searchsorted(cum, cat_lo[c] + u * (cat_hi[c] - cat_lo[c]), side="right"),
                                   n_items - 1)]
    explore_item = np.minimum(np.searchsorted(global_cum, rng.random(n), side="right"), n_items - 1)
    item = np.where(rng.random(n) < explore, explore_item, item_in_cat)

    kind = rng.choice(3, size=n, p=[0.8, 0.13, 0.07])              # view, add_to_cart, purchase
    repeat = (kind > 0) & (pos > 0) & (rng.random(n) < 0.8)         # cart/purchase of the item just viewed
    src = np.maximum.accumulate(np.where(repeat, -1, np.arange(n)))
    item = item[src]
    del src

    user = s_user[ev_session]
    order_t = np.lexsort((np.arange(n), t))
    user_ids, item_ids = _ids("u", n_users), _ids("i", n_items)
    times = pa.array(t[order_t] + int(start.timestamp() * 1e6), pa.int64()).cast(pa.timestamp("us", tz="UTC"))
    events = pa.table({
        "user_id": pa.DictionaryArray.from_arrays(pa.array(user[order_t].astype(np.int32)),
                                                  pa.array(user_ids)).cast(pa.string()),
        "item_id": pa.DictionaryArray.from_arrays(pa.array(item[order_t].astype(np.int32)),
                                                  pa.array(item_ids)).cast(pa.string()),
        "event_type": pa.DictionaryArray.from_arrays(pa.array(kind[order_t].astype(np.int8)),
                                                     pa.array(list(EVENT_TYPES))).cast(pa.string()),
        "event_time": times,
    })
    return Synthetic(events, item_ids, user_ids, category, taste_start, taste_end,
                     start, start + timedelta(days=days))
