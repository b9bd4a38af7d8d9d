"""Entity vectors from histories: a time-decayed, event-type-weighted mean of item vectors.

An event's weight is its event-type weight times ``0.5 ** (age / half_life)``, where the age is
counted back from the entity's own latest event, either in events (``half_life`` an int: with 5, the
6th most recent event weighs half the latest) or in time (``half_life`` a timedelta). Measuring from the
entity's latest event rather than from the cutoff changes nothing after normalisation and keeps an
entity without new events byte-identical across runs (what incremental runs rely on). When the item
model says so (``ItemModel.query_dims``/``query_tail``), an entity vector is the weighted mean of the
leading coordinates followed by a fixed tail, so that its cosine with item vectors ranks items the
way the model intends; with ``ItemModel.query_divide`` each item's leading coordinates are first
divided by one of its own coordinates (a per-item weight; see :mod:`featurestore.embed.cooccurrence`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import numpy as np
import pandas as pd

from featurestore.embed.base import ItemModel, l2_normalize
from featurestore.engine.base import Engine
from featurestore.engine.duckdb import DuckDBEngine
from featurestore.engine.events import Events
from featurestore.errors import PipelineError


@dataclass(frozen=True)
class Aggregation:
    """How entity vectors are aggregated. ``half_life``: events (int) or time (timedelta); None = no
    decay. ``max_events``: only each entity's most recent events count (None = all)."""

    half_life: int | timedelta | None = 5
    max_events: int | None = None

    def __post_init__(self) -> None:
        hl = self.half_life
        if isinstance(hl, timedelta) and hl <= timedelta(0):
            raise PipelineError("Aggregation: half_life must be positive")
        if isinstance(hl, int | float) and not isinstance(hl, bool) and hl <= 0:
            raise PipelineError("Aggregation: half_life must be positive")
        if self.max_events is not None and self.max_events < 1:
            raise PipelineError("Aggregation: max_events must be >= 1")

    def params(self) -> dict[str, Any]:
        hl = self.half_life
        return {"half_life": f"{hl.total_seconds()}s" if isinstance(hl, timedelta) else hl,
                "max_events": self.max_events}


@dataclass
class EntityVectors:
    """One vector per entity that had at least one embeddable event."""

    entity_ids: np.ndarray      # object array of str
    vectors: np.ndarray         # float32 (n, dim), unit rows
    n_events: np.ndarray        # int64: events before the cutoff (all types, embeddable or not)
    last_event_time: np.ndarray  # int64 us
    skipped: int = 0            # entities with no embeddable event


def event_weights(events: Events, agg: Aggregation) -> np.ndarray:
    """Per-event weight: event-type weight times the decay of the event's age within its entity."""
    w = events.weight.astype(np.float64)
    if len(events) == 0:
        return w.astype(np.float32)
    starts = events.entity_starts()
    ends = starts[1:][events.entity]  # one past each entity's last event
    pos_from_end = (ends - 1) - np.arange(len(events))
    hl = agg.half_life
    if isinstance(hl, timedelta):
        age = (events.entity_last[events.entity] - events.time) / (hl.total_seconds() * 1e6)
        w = w * np.exp2(-age)
    elif hl is not None:
        w = w * np.exp2(-pos_from_end / float(hl))
    if agg.max_events is not None:
        w = np.where(pos_from_end < agg.max_events, w, 0.0)
    return w.astype(np.float32)


def aggregate(events: Events, model: ItemModel, agg: Aggregation | None = None,
              entities: np.ndarray | None = None, *, engine: Engine | None = None) -> EntityVectors:
    """Entity vectors for every entity of ``events`` (or only the entity codes in ``entities``); the
    weighted sums are computed by ``engine`` (default: DuckDB's in-process kernel)."""
    agg = agg or Aggregation()
    rows = pd.Index(model.item_ids).get_indexer(events.item_ids)  # event item code -> model row (-1: none)
    w = event_weights(events, agg)
    model_row = rows[events.item]
    if entities is not None:
        wanted = np.zeros(events.n_entities, dtype=bool)
        wanted[entities] = True
        model_row = np.where(wanted[events.entity], model_row, -1)
    item_vectors = model.vectors
    if model.query_divide is not None:
        item_vectors = item_vectors.copy()
        item_vectors[:, :model.query_dims] /= item_vectors[:, model.query_divide, None]
    has, vectors, total = (engine or DuckDBEngine()).weighted_sums(
        events.entity, model_row, w, events.n_entities, item_vectors)
    if model.query_dims is not None:  # weighted mean of the leading coordinates, then the fixed tail
        vectors = (vectors / np.maximum(total[:, None], np.float32(1e-30))).astype(np.float32)
        vectors[:, model.query_dims:] = np.asarray(model.query_tail, dtype=np.float32)
    vectors = l2_normalize(vectors)
    ok = np.linalg.norm(vectors, axis=1) > 0  # weights cancelled out (cannot happen with w >= 0)
    has = has[ok]
    considered = events.n_entities if entities is None else len(np.unique(entities))
    return EntityVectors(events.entity_ids[has], vectors[ok], events.entity_count[has],
                         events.entity_last[has], skipped=int(considered - has.size))
