"""In-process counting kernels (numpy and scipy) behind the DuckDB engine: windowed co-occurrence
counts over time-ordered event sequences, and per-entity weighted sums of item vectors.

They work on :class:`~featurestore.engine.events.Events` batches already selected and coded by the
engine's event reader: all the events at once, or (out of core) chunks that each hold whole entities,
whose counts add up and whose entity sums are those of the whole (an entity's sequence is never split).
The Spark engine computes the same quantities as distributed aggregations.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from datetime import timedelta
from typing import TYPE_CHECKING, Protocol

import numpy as np

from featurestore.engine.base import Cooccurrence, EntitySums, SumsBatch
from featurestore.engine.events import Events

if TYPE_CHECKING:
    import scipy.sparse as sp


def _sparse():  # type: ignore[no-untyped-def]
    """scipy.sparse, imported when a kernel first runs: 0.1 s that `import featurestore` and serving
    need not pay."""
    import scipy.sparse

    return scipy.sparse


def sequence_tokens(events: Events, *, collapse_repeats: bool = True
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(entity, item, weight, time) of each token, in sequence order; consecutive repeats of an item
    within an entity collapse into one token with the largest weight and the time of the first."""
    ent, item, w, t = events.entity, events.item, events.weight, events.time
    if not collapse_repeats or ent.size == 0:
        return ent, item, w, t
    new = np.ones(ent.size, dtype=bool)
    new[1:] = (ent[1:] != ent[:-1]) | (item[1:] != item[:-1])
    starts = np.flatnonzero(new)
    wmax = np.maximum.reduceat(w, starts) if starts.size else w[:0]
    return ent[starts], item[starts], wmax.astype(np.float32), t[starts]


def sessions(ent: np.ndarray, t: np.ndarray, gap_us: int | None) -> np.ndarray:
    """A session number per token: a new session starts with each entity and after each pause longer
    than ``gap_us`` microseconds (None: one session per entity)."""
    brk = np.ones(ent.size, dtype=bool)
    brk[1:] = ent[1:] != ent[:-1]
    if gap_us is not None:
        brk[1:] |= (t[1:] - t[:-1]) > gap_us
    return np.cumsum(brk)


def cooccurrence(events: Events, *, window: int = 5, min_count: int = 1, collapse_repeats: bool = True,
                 session_gap: timedelta | None = None, cross_session: float = 1.0,
                 directed: bool = False) -> sp.csr_matrix:
    """Symmetric (n_items, n_items) float32 matrix of windowed, weighted co-occurrence counts.

    Pairs in different sessions of an entity (split at pauses longer than ``session_gap``) count
    ``cross_session`` times as much. ``directed``: each pair counts only at (earlier item, later
    item), so the matrix is not symmetric (the symmetric one is it plus its transpose).
    """
    request = Cooccurrence(window=window, min_count=min_count, collapse_repeats=collapse_repeats,
                           session_gap=session_gap, cross_session=cross_session, directed=directed)
    return cooccurrence_chunks([events], events.n_items, request)


class PairSink(Protocol):
    """Where partial co-occurrence sums go once they exceed the in-memory budget (e.g. a DuckDB table)."""

    def add(self, counts: sp.spmatrix) -> None: ...
    def pruned(self, keep: int, *, directed: bool) -> sp.csr_matrix: ...
    def close(self) -> None: ...


#: distinct item pairs a co-occurrence count keeps before only each item's strongest pairs are kept (about
#: 45 bytes each through the fit: 50M pairs ~ 2.3 GB); the DuckDB and Spark engines apply it alike
MAX_PAIRS = 50_000_000


def per_item(max_pairs: int, n_items: int) -> int:
    """How many strongest pairs each item keeps (by row and by column) once the pairs exceed ``max_pairs``."""
    return max(1, max_pairs // max(1, 2 * n_items))


def cooccurrence_chunks(chunks: Iterable[Events], n_items: int, request: Cooccurrence, *,
                        max_pairs: int | None = None, sink: Callable[[], PairSink] | None = None,
                        keep: int = 1) -> sp.csr_matrix:
    """The co-occurrence matrix of events given as chunks that each hold whole entities: the sum of
    the chunks' counts (memory: one chunk's pairs plus the distinct pairs so far). With
    ``request.directed`` each pair counts only at (earlier item, later item).

    With ``max_pairs`` and ``sink``: once the matrix would hold more than ``max_pairs`` entries, the
    partial sums go to ``sink()`` (flushed each time they pass ``max_pairs`` again) and the result
    keeps, per item, only the ``keep`` largest entries of its row and of its column (their union);
    below the budget the result is the full matrix, as without these arguments."""
    total = None
    spill: PairSink | None = None
    factor = 1 if request.directed else 2  # the returned matrix holds each undirected pair twice
    try:
        for chunk in chunks:
            upper = _pair_counts(chunk, n_items, request)
            total = upper if total is None else (total + upper).tocsr()
            del upper
            if max_pairs is not None and sink is not None and total.nnz * factor > max_pairs:
                spill = spill or sink()
                spill.add(total)
                total = None
        if spill is not None:
            if total is not None:
                spill.add(total)
                total = None
            return spill.pruned(keep, directed=request.directed)
    finally:
        if spill is not None:
            spill.close()
    if total is None:
        total = _sparse().csr_matrix((n_items, n_items), dtype=np.float64)
    summed = total if request.directed else (total + total.T).tocsr()
    return summed.astype(np.float32)


def _pair_counts(events: Events, n: int, r: Cooccurrence) -> sp.csr_matrix:
    """Counts of the (earlier item, later item) pairs of one chunk, duplicates summed."""
    window = r.window
    ent, item, w, t = sequence_tokens(events, collapse_repeats=r.collapse_repeats)
    if r.min_count > 1:
        ok = events.item_count[item] >= r.min_count
        ent, item, w, t = ent[ok], item[ok], w[ok], t[ok]
    sw = np.sqrt(w, dtype=np.float32)
    split = r.session_gap is not None and r.cross_session != 1.0
    sid = sessions(ent, t, int(r.session_gap.total_seconds() * 1e6)) if split else None  # type: ignore[union-attr]
    dists = [d for d in range(1, window + 1) if d < ent.size]
    same = [(ent[d:] == ent[:-d]) & (item[d:] != item[:-d]) for d in dists]  # pairs at distance d
    sizes = [int(np.count_nonzero(m)) for m in same]
    # one vectorised pass per distance, written straight into the coordinate arrays (no concatenation)
    a, b = np.empty(sum(sizes), item.dtype), np.empty(sum(sizes), item.dtype)
    # each pair's weight in float32 (as Spark computes it), kept as float64: the duplicates are summed in
    # float64 and rounded to float32 once (cooccurrence_chunks), what Spark's sum of the same values
    # gives whatever the order (float32 running sums differ in the last bits, and the SVD's last
    # components turn on them)
    v = np.empty(sum(sizes), np.float64)
    off = 0
    for d, m, k in zip(dists, same, sizes):
        out = slice(off, off + k)
        np.compress(m, item[:-d], out=a[out])
        np.compress(m, item[d:], out=b[out])
        w32 = np.multiply(sw[:-d][m], sw[d:][m])
        w32 *= np.float32((window - d + 1) / window)
        if sid is not None:
            w32 *= np.where(sid[:-d][m] == sid[d:][m], np.float32(1.0), np.float32(r.cross_session))
        v[out] = w32
        off += k
    del same
    upper = _sparse().coo_matrix((v, (a, b)), shape=(n, n)).tocsr()
    upper.sum_duplicates()
    return upper


def decay_weights(events: Events, half_life: int | timedelta | None, max_events: int | None) -> np.ndarray:
    """Per-event weight: event weight times ``0.5 ** (age / half_life)``, the age counted back from the
    entity's latest event in events (int) or time (timedelta); zero beyond the ``max_events`` most
    recent events of each entity."""
    w = events.weight.astype(np.float64)
    if len(events) == 0:
        return w.astype(np.float32)
    starts = events.entity_starts()
    ends = starts[1:][events.entity]  # one past each entity's last event
    pos_from_end = (ends - 1) - np.arange(len(events))
    if isinstance(half_life, timedelta):
        age = (events.entity_last[events.entity] - events.time) / (half_life.total_seconds() * 1e6)
        w = w * np.exp2(-age)
    elif half_life is not None:
        w = w * np.exp2(-pos_from_end / float(half_life))
    if max_events is not None:
        w = np.where(pos_from_end < max_events, w, 0.0)
    return w.astype(np.float32)


def entity_sums(events: Events, request: EntitySums) -> Iterator[SumsBatch]:
    """:class:`EntitySums` over in-memory events (or one chunk of whole entities), in batches of at
    most ``request.batch_rows`` entities."""
    w = decay_weights(events, request.half_life, request.max_events)
    row = request.item_rows[events.item] if len(events) else np.zeros(0, np.int64)
    considered = events.n_entities
    if request.since is not None:
        active = np.zeros(events.n_entities, dtype=bool)
        active[events.entity[events.time >= request.since]] = True
        row = np.where(active[events.entity], row, -1)
        considered = int(np.count_nonzero(active))
    has, sums, totals = weighted_sums(events.entity, row, w, events.n_entities, request.vectors)
    step = max(1, request.batch_rows)
    for lo in range(0, max(has.size, 1), step):
        sl = slice(lo, lo + step)
        yield SumsBatch(events.entity_ids[has[sl]], sums[sl], totals[sl], events.entity_count[has[sl]],
                        events.entity_last[has[sl]], considered=considered if lo == 0 else 0)


def weighted_sums(entity: np.ndarray, row: np.ndarray, weight: np.ndarray, n_entities: int,
                  vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per entity, the weighted sum of the ``vectors`` rows its events point at.

    ``entity``, ``row`` and ``weight`` are per event (events with ``row < 0`` or ``weight <= 0`` are
    ignored). Returns (entity codes with at least one counted event, their sums (float32), the sums of
    their weights).
    """
    keep = (row >= 0) & (weight > 0)
    m = _sparse().csr_matrix((weight[keep], (entity[keep], row[keep])), shape=(n_entities, vectors.shape[0]),
                      dtype=np.float32)
    m.sum_duplicates()
    has = np.flatnonzero(np.diff(m.indptr) > 0)
    sub = m[has]
    sums = np.asarray(sub @ vectors, dtype=np.float32)
    totals = np.asarray(sub.sum(axis=1), dtype=np.float32).ravel()
    return has, sums, totals
