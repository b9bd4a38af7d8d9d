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


@dataclass
class _Catalogue:
    """Items with categories and Zipf popularity, laid out for sampling by popularity."""

    category: np.ndarray    # (n_items,) planted category
    order: np.ndarray       # item numbers grouped by category
    cum: np.ndarray         # cumulative popularity in that order
    cat_lo: np.ndarray      # (n_categories,) ``cum`` before each category's first item
    cat_hi: np.ndarray      # (n_categories,) ``cum`` at each category's last item
    global_cum: np.ndarray  # ``cum`` scaled to end at 1

    def pick(self, rng: np.random.Generator, category: np.ndarray, explore: float) -> np.ndarray:
        """One item per event: by popularity within its session's category, or (a share ``explore``
        of events) by popularity over all items."""
        n, n_items = len(category), len(self.category)
        u = rng.random(n)
        lo, hi = self.cat_lo[category], self.cat_hi[category]
        in_category = self.order[np.minimum(np.searchsorted(self.cum, lo + u * (hi - lo), side="right"), n_items - 1)]
        anywhere = np.minimum(np.searchsorted(self.global_cum, rng.random(n), side="right"), n_items - 1)
        return np.where(rng.random(n) < explore, anywhere, in_category)


def _catalogue(rng: np.random.Generator, n_items: int, n_cat: int, zipf: float) -> _Catalogue:
    """Items: categories, Zipf popularity over a random global rank."""
    category = rng.integers(0, n_cat, n_items)
    rank = rng.permutation(n_items) + 1
    pop = rank.astype(np.float64) ** -zipf
    order = np.lexsort((np.arange(n_items), category))          # items grouped by category
    cum = np.cumsum(pop[order])
    cat_end = np.searchsorted(category[order], np.arange(n_cat), side="right")
    cat_begin = np.concatenate([[0], cat_end[:-1]])
    cum0 = np.concatenate([[0.0], cum])
    return _Catalogue(category, order, cum, cum0[cat_begin], cum0[cat_end], cum / cum[-1])


@dataclass
class _Sessions:
    """Sessions: who, when, which category and how many events."""

    user: np.ndarray      # (n_sessions,) user number
    time: np.ndarray      # (n_sessions,) start, microseconds into the period
    category: np.ndarray  # (n_sessions,) the category the session focuses on
    length: np.ndarray    # (n_sessions,) number of events


def _sessions(rng: np.random.Generator, n_sessions: int, span_us: int, activity: np.ndarray,
              taste_start: np.ndarray, taste_end: np.ndarray, session_mean: float) -> _Sessions:
    """Sessions of users drawn by activity, each focused on a category drawn from the user's taste then."""
    user = rng.choice(len(activity), size=n_sessions, p=activity / activity.sum())
    time = rng.integers(0, span_us, n_sessions)
    use_end = rng.random(n_sessions) < time / span_us              # drift: mixture at that time
    taste = np.where(use_end[:, None], taste_end[user], taste_start[user])
    category = _sample_rows(np.cumsum(taste, axis=1), rng.random(n_sessions))
    length = rng.geometric(1.0 / session_mean, n_sessions)
    return _Sessions(user, time, category, length)


def _expand(rng: np.random.Generator, sessions: _Sessions, span_us: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Events of the sessions: (session of each event, position in its session, time)."""
    s_len = sessions.length
    ev_session = np.repeat(np.arange(len(s_len)), s_len)
    n = ev_session.size
    first = np.concatenate([[0], np.cumsum(s_len)[:-1]])
    pos = np.arange(n) - first[ev_session]
    gaps = rng.exponential(90e6, n).astype(np.int64)                # ~1.5 min between events
    gaps[pos == 0] = 0
    offset = np.cumsum(gaps) - np.repeat(np.cumsum(gaps)[first], s_len)
    t = np.minimum(sessions.time[ev_session] + offset, span_us - 1)
    return ev_session, pos, t


def _event_kinds(rng: np.random.Generator, item: np.ndarray, pos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Event types (index into EVENT_TYPES), and the items once carts and purchases repeat the view."""
    n = len(item)
    kind = rng.choice(3, size=n, p=[0.8, 0.13, 0.07])              # view, add_to_cart, purchase
    repeat = (kind > 0) & (pos > 0) & (rng.random(n) < 0.8)         # cart/purchase of the item just viewed
    src = np.maximum.accumulate(np.where(repeat, -1, np.arange(n)))
    return kind, item[src]


def _events_table(user: np.ndarray, item: np.ndarray, kind: np.ndarray, t: np.ndarray, start: datetime,
                  user_ids: list[str], item_ids: list[str]) -> pa.Table:
    """The events as an Arrow table sorted by time (ties in generation order)."""
    order_t = np.lexsort((np.arange(len(t)), t))
    times = pa.array(t[order_t] + int(start.timestamp() * 1e6), pa.int64()).cast(pa.timestamp("us", tz="UTC"))
    return pa.table({
        "user_id": pa.DictionaryArray.from_arrays(pa.array(user[order_t].astype(np.int32)),
                                                  pa.array(user_ids)).cast(pa.string()),
        "item_id": pa.DictionaryArray.from_arrays(pa.array(item[order_t].astype(np.int32)),
                                                  pa.array(item_ids)).cast(pa.string()),
        "event_type": pa.DictionaryArray.from_arrays(pa.array(kind[order_t].astype(np.int8)),
                                                     pa.array(list(EVENT_TYPES))).cast(pa.string()),
        "event_time": times,
    })


def purchase_histories(n_users: int = 1000, n_items: int = 500, n_events: int = 50_000, *,
                       n_categories: int = 20, days: int = 30, start: datetime | None = None,
                       session_mean: float = 6.0, explore: float = 0.1, taste_concentration: float = 0.3,
                       zipf: float = 1.1, seed: int = 0) -> Synthetic:
    """Generate about ``n_events`` events (see the module docstring)."""
    rng = np.random.default_rng(seed)
    start = start or datetime(2026, 10, 1, tzinfo=UTC)
    span_us = int(days * 86400e6)
    n_cat = max(1, min(n_categories, n_items))
    # every step draws from ``rng`` in a fixed order, so the same arguments give the same events
    items = _catalogue(rng, n_items, n_cat, zipf)

    # users: taste mixtures (start, end) and activity (heavy-tailed)
    taste_start = rng.dirichlet(np.full(n_cat, taste_concentration), n_users)
    taste_end = rng.dirichlet(np.full(n_cat, taste_concentration), n_users)
    activity = rng.lognormal(0.0, 1.0, n_users)

    sessions = _sessions(rng, max(1, round(n_events / session_mean)), span_us, activity, taste_start, taste_end,
                         session_mean)
    ev_session, pos, t = _expand(rng, sessions, span_us)
    item = items.pick(rng, sessions.category[ev_session], explore)
    kind, item = _event_kinds(rng, item, pos)
    user_ids, item_ids = _ids("u", n_users), _ids("i", n_items)
    events = _events_table(sessions.user[ev_session], item, kind, t, start, user_ids, item_ids)
    return Synthetic(events, item_ids, user_ids, items.category, taste_start, taste_end,
                     start, start + timedelta(days=days))


def write_purchase_histories(path: str, *, n_users: int, n_items: int, n_events: int, block_events: int = 2_000_000,
                             n_categories: int = 20, days: int = 30, start: datetime | None = None,
                             session_mean: float = 6.0, explore: float = 0.1, taste_concentration: float = 0.3,
                             zipf: float = 1.1, seed: int = 0, compression: str = "zstd") -> int:
    """Write about ``n_events`` events (the model of :func:`purchase_histories`) to one Parquet file
    in blocks of about ``block_events``, so memory stays bounded (about 190 bytes per event of a
    block) at any size. Users are split into blocks that share the item catalogue; each block is
    seeded from (``seed``, block), so the same arguments write the same events. Returns the number of
    events written. Rows are sorted by time within each block (row group), not across blocks."""
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    start = start or datetime(2026, 10, 1, tzinfo=UTC)
    span_us = int(days * 86400e6)
    n_cat = max(1, min(n_categories, n_items))
    items = _catalogue(rng, n_items, n_cat, zipf)
    item_ids = _ids("i", n_items)
    n_blocks = max(1, min(n_users, -(-n_events // max(1, block_events))))
    width = len(str(max(n_users - 1, 0)))
    written = 0
    with pq.ParquetWriter(path, _SCHEMA, compression=compression) as out:
        for b in range(n_blocks):
            lo, hi = b * n_users // n_blocks, (b + 1) * n_users // n_blocks
            brng = np.random.default_rng([seed, b])
            taste_start = brng.dirichlet(np.full(n_cat, taste_concentration), hi - lo)
            taste_end = brng.dirichlet(np.full(n_cat, taste_concentration), hi - lo)
            activity = brng.lognormal(0.0, 1.0, hi - lo)
            share = round(n_events * (hi - lo) / n_users)
            sessions = _sessions(brng, max(1, round(share / session_mean)), span_us, activity, taste_start,
                                 taste_end, session_mean)
            ev_session, pos, t = _expand(brng, sessions, span_us)
            item = items.pick(brng, sessions.category[ev_session], explore)
            kind, item = _event_kinds(brng, item, pos)
            user_ids = [f"u{i:0{width}d}" for i in range(lo, hi)]
            table = _events_table(sessions.user[ev_session], item, kind, t, start, user_ids, item_ids)
            out.write_table(table, row_group_size=1 << 20)
            written += table.num_rows
            del table, ev_session, pos, t, item, kind
    return written


_SCHEMA = pa.schema([("user_id", pa.string()), ("item_id", pa.string()), ("event_type", pa.string()),
                     ("event_time", pa.timestamp("us", tz="UTC"))])
