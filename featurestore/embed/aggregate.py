"""Entity vectors from histories: a time-decayed, event-type-weighted mean of item vectors.

An event's weight is its event-type weight times ``0.5 ** (age / half_life)``, where the age is
counted back from the entity's own latest event, either in events (``half_life`` an int: with 5, the
6th most recent event weighs half the latest) or in time (``half_life`` a timedelta). Measuring from the
entity's latest event rather than from the cutoff changes nothing after normalisation and keeps an
entity without new events byte-identical across runs (what incremental runs rely on). When the item
model says so (``ItemModel.query_dims``/``query_tail``), an entity vector is the weighted mean of the
leading coordinates followed by a fixed tail, so that its cosine with item vectors ranks items the
way the model intends; with ``ItemModel.query_divide`` each item's leading coordinates are first
divided by one of its own coordinates (a per-item weight; see :mod:`featurestore.embed.cooccurrence`);
with ``ItemModel.query_map`` the mean is then multiplied by that matrix; with ``ItemModel.query_vectors``
the mean is of those rows (each item's "history side", see :mod:`featurestore.embed.directed`) instead
of the items' own leading coordinates.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from featurestore.embed.base import ItemModel, l2_normalize
from featurestore.engine.base import Engine, EntitySums, FrameEngine, SumsBatch
from featurestore.engine.counting import decay_weights
from featurestore.engine.duckdb import DuckDBEngine
from featurestore.engine.events import Events, EventTable
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
    return decay_weights(events, agg.half_life, agg.max_events)


def aggregate(events: EventTable, model: ItemModel, agg: Aggregation | None = None, *, since: int | None = None,
              engine: Engine | None = None) -> EntityVectors:
    """Entity vectors for every entity of ``events`` (or only those with an event at or after ``since``,
    us since the epoch), all in one :class:`EntityVectors`: :func:`aggregate_batches` joined."""
    parts = list(aggregate_batches(events, model, agg, since=since, engine=engine))
    skipped = sum(b.skipped for b in parts)
    ok = [b for b in parts if b.entity_ids.size]
    if not ok:
        return EntityVectors(np.zeros(0, dtype=object), np.zeros((0, model.dim), np.float32),
                             np.zeros(0, np.int64), np.zeros(0, np.int64), skipped=skipped)
    if len(ok) == 1:
        return EntityVectors(ok[0].entity_ids, ok[0].vectors, ok[0].n_events, ok[0].last_event_time, skipped)
    return EntityVectors(np.concatenate([b.entity_ids for b in ok]), np.concatenate([b.vectors for b in ok]),
                         np.concatenate([b.n_events for b in ok]), np.concatenate([b.last_event_time for b in ok]),
                         skipped)


def aggregate_batches(events: EventTable, model: ItemModel, agg: Aggregation | None = None, *,
                      since: int | None = None, engine: Engine | None = None,
                      batch_rows: int | None = None) -> Iterator[EntityVectors]:
    """:func:`aggregate`'s entity vectors in batches of ascending entity ids (about ``batch_rows``
    entities each; None: the engine's default), so a caller can write each batch away before the next
    is made. The decayed weighted sums are computed by ``engine`` (default DuckDB's), each batch
    normalised as it arrives; a batch's ``skipped`` counts its entities without a vector (the counts
    add up over the batches). A model with its own encoder (``ItemModel.encoder``, a sequence model)
    encodes the histories itself, in one batch: see :func:`encoded`."""
    if model.encoder is not None:
        yield encoded(events, model, since)
        return
    request = _request(events, model, agg or Aggregation(), since, batch_rows)
    finish = Finish.of(model)
    for b in (engine or DuckDBEngine()).entity_sums(events, request):
        f = finish(b)
        yield EntityVectors(f.entity_ids, f.sums, f.n_events, f.last, skipped=int(f.considered - f.entity_ids.size))


def aggregate_frame(events: EventTable, model: ItemModel, agg: Aggregation | None, *, since: int | None,
                    engine: Engine | None, to_rows: Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], pa.Table]
                    ) -> tuple[Any, int] | None:
    """:func:`aggregate_batches`' entity vectors as rows of the engine's own frame (a Spark DataFrame),
    made where the events are, so they never come to this process: each batch of sums is finished and
    turned into rows by ``to_rows(ids, vectors, n_events, last_event_time_us)`` (picklable) on the
    executors. Returns the frame and how many entities were considered (those without a vector are not
    in it), or None when the engine cannot (in-process engines, in-memory events, a model with its own
    encoder): then use :func:`aggregate_batches`."""
    if model.encoder is not None or not isinstance(engine, FrameEngine):
        return None
    rows = _Rows(Finish.of(model), to_rows, int(model.dim))
    return engine.entity_rows_frame(events, _request(events, model, agg or Aggregation(), since, None), rows,
                                    rows.schema())


def _request(events: EventTable, model: ItemModel, agg: Aggregation, since: int | None,
             batch_rows: int | None) -> EntitySums:
    """The engine's :class:`EntitySums` for ``model``'s item vectors (as the entity side sees them)."""
    rows = pd.Index(model.item_ids).get_indexer(events.item_ids)  # event item code -> model row (-1: none)
    item_vectors = model.vectors
    if model.query_vectors is not None:  # each item's history side in place of its leading coordinates
        item_vectors = np.zeros_like(model.vectors)
        item_vectors[:, :model.query_dims] = model.query_vectors
    if model.query_divide is not None:
        item_vectors = item_vectors.copy()
        item_vectors[:, :model.query_dims] /= item_vectors[:, model.query_divide, None]
    request = EntitySums(rows, item_vectors, half_life=agg.half_life, max_events=agg.max_events, since=since)
    return replace(request, batch_rows=batch_rows) if batch_rows is not None else request


@dataclass(frozen=True)
class Finish:
    """Sums -> unit entity vectors (the weighted mean of the leading coordinates and the model's fixed
    tail, when it has one), dropping entities whose vector is zero. Holds only what that needs of the
    model (picklable: executors run it)."""

    query_dims: int | None = None
    query_map: np.ndarray | None = None
    query_tail: np.ndarray | None = None

    @classmethod
    def of(cls, model: ItemModel) -> Finish:
        tail = None if model.query_tail is None else np.asarray(model.query_tail, dtype=np.float32)
        return cls(model.query_dims, model.query_map, tail)

    def __call__(self, batch: SumsBatch) -> SumsBatch:
        vectors = batch.sums
        if self.query_dims is not None:  # weighted mean of the leading coordinates, then the fixed tail
            vectors = (vectors / np.maximum(batch.totals[:, None], np.float32(1e-30))).astype(np.float32)
            if self.query_map is not None:  # the history side of the mean (ItemModel.query_map)
                vectors[:, :self.query_dims] = vectors[:, :self.query_dims] @ self.query_map
            vectors[:, self.query_dims:] = self.query_tail
        vectors = l2_normalize(vectors)
        ok = np.linalg.norm(vectors, axis=1) > 0  # weights cancelled out (cannot happen with w >= 0)
        return SumsBatch(batch.entity_ids[ok], vectors[ok], batch.totals[ok], batch.n_events[ok], batch.last[ok],
                         considered=batch.considered)


@dataclass(frozen=True)
class _Rows:
    """An Arrow batch of sums (``e``, ``sums``, ``total``, ``n``, ``last``) -> the rows ``to_rows`` makes of
    its finished vectors (fixed-size vectors as plain lists, which every engine's Arrow reader takes)."""

    finish: Finish
    to_rows: Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], pa.Table]
    dim: int

    def __call__(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        f = self.finish(SumsBatch.from_arrow(batch, self.dim))
        table = self.to_rows(f.entity_ids, f.sums, f.n_events, f.last)
        fields = [pa.field(x.name, pa.list_(x.type.value_type)) if pa.types.is_fixed_size_list(x.type) else x
                  for x in table.schema]
        schema = pa.schema(fields)
        return pa.record_batch([table[x.name].combine_chunks().cast(x.type) for x in fields], schema=schema)

    def schema(self) -> pa.Schema:
        empty = pa.record_batch([pa.array([], pa.string()), pa.array([], pa.list_(pa.float32())),
                                 pa.array([], pa.float32()), pa.array([], pa.int64()), pa.array([], pa.int64())],
                                names=["e", "sums", "total", "n", "last"])
        return self(empty).schema


def encoded(events: EventTable, model: ItemModel, since: int | None = None) -> EntityVectors:
    """Entity vectors from the model's own encoder (its state after each entity's recent events): every
    entity, or those with an event at or after ``since``. The encoder reads the sequences, so the events
    are loaded into memory."""
    assert model.encoder is not None
    ev = events.load()
    entities = None if since is None else np.unique(ev.entity[ev.time >= since])
    codes, vectors = model.encoder.encode(ev, entities)
    considered = ev.n_entities if entities is None else entities.size
    return EntityVectors(ev.entity_ids[codes], vectors, ev.entity_count[codes], ev.entity_last[codes],
                         skipped=int(considered - codes.size))
