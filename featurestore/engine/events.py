"""Event sources: where a pipeline reads its events (entity, item, event type, event time).

An :class:`EventSource` describes a pandas DataFrame, a pyarrow Table, a Parquet file or glob, or a DuckDB
query, with configurable column names (:class:`Columns`). :meth:`EventSource.load` selects the events
strictly before a cutoff through an engine (:meth:`featurestore.engine.Engine.read_events`), checks
them, and returns an :class:`EventTable`: integer codes for entities and items (sorted ids, so codes do
not depend on input order), event-type weights, and times, ordered by (entity, time). Small inputs come
back in memory (:class:`Events`, numpy arrays); large ones stay in the engine (see :class:`EventTable`).

Example::

    from featurestore.engine import read_events
    source = EventSource("events/*.parquet", columns=Columns(entity="customer", item="sku"))
    events = read_events(source, before=datetime(2026, 11, 1, tzinfo=UTC), weights={"view": 1, "purchase": 4})
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import duckdb
import numpy as np

from featurestore.errors import EventsError

#: default weights for common event-type names; pipelines pass their own for other vocabularies
DEFAULT_WEIGHTS: Mapping[str, float] = {
    "view": 1.0, "impression": 0.5, "click": 1.0, "search": 1.0, "play": 1.0,
    "like": 2.0, "rating": 2.0, "wishlist": 2.0, "add_to_cart": 2.0, "cart": 2.0,
    "purchase": 4.0, "order": 4.0, "transaction": 4.0,
}


@dataclass(frozen=True)
class Columns:
    """Which source columns hold the entity id, item id, event type, event time and (optional) value.

    ``type=None`` means the source has no event-type column: every event weighs the same.
    """

    entity: str = "user_id"
    item: str = "item_id"
    type: str | None = "event_type"
    time: str = "event_time"
    value: str | None = None

    @classmethod
    def parse(cls, text: str) -> Columns:
        """Parse ``entity=customer,item=sku,type=action,time=ts`` (unnamed roles keep their default;
        ``type=`` with no name means no event-type column)."""
        kwargs: dict[str, str | None] = {}
        known = {"entity", "item", "type", "time", "value"}
        for part in filter(None, (p.strip() for p in text.split(","))):
            role, sep, name = part.partition("=")
            role = role.strip()
            if not sep or role not in known:
                raise EventsError(f"--columns takes role=column pairs with roles {sorted(known)}; got {part!r}")
            kwargs[role] = name.strip() or None
        for role in ("entity", "item", "time"):
            if role in kwargs and not kwargs[role]:
                raise EventsError(f"--columns: the {role} column cannot be empty")
        return cls(**kwargs)  # type: ignore[arg-type]

    def to_dict(self) -> dict[str, str | None]:
        return {"entity": self.entity, "item": self.item, "type": self.type, "time": self.time,
                "value": self.value}


class EventTable:
    """Events an engine has read and keeps: the events themselves stay in the engine (a DuckDB table,
    a Spark DataFrame), while Python holds only what grows with the number of items.

    Engines take an event table back in :meth:`~featurestore.engine.Engine.cooccurrence` and
    :meth:`~featurestore.engine.Engine.entity_sums`. :class:`Events` is the in-memory kind (numpy
    arrays); :meth:`load` turns any kind into it, for code that needs the sequences in Python (its
    memory grows with the events). :meth:`close` releases what the engine holds for it.
    """

    item_ids: np.ndarray        # object array of str, sorted: item code -> id
    item_count: np.ndarray      # int64 events per item
    item_last: np.ndarray       # int64 last event time per item (us)
    before: datetime | None
    type_counts: dict[str, int]

    def __len__(self) -> int:
        raise NotImplementedError

    @property
    def n_items(self) -> int:
        return int(self.item_ids.size)

    @property
    def n_entities(self) -> int:
        raise NotImplementedError

    @property
    def newest(self) -> int | None:
        """The time of the newest event (us since the epoch, UTC), None when there is none."""
        raise NotImplementedError

    def load(self) -> Events:
        """Every event as in-memory arrays (memory grows with the number of events)."""
        raise NotImplementedError

    def close(self) -> None:
        """Release what the engine holds for these events (temporary tables, spill files)."""

    def __enter__(self) -> EventTable:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class CountedEvents(EventTable):
    """An engine-held event table that counted its events, entities and newest time when it read them."""

    _n: int
    _n_entities: int
    _newest: int | None

    def __len__(self) -> int:
        return self._n

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._n:,} events, {self._n_entities:,} entities, {self.n_items:,} items)"

    @property
    def n_entities(self) -> int:
        return self._n_entities

    @property
    def newest(self) -> int | None:
        return self._newest


@dataclass
class Events(EventTable):
    """Events before a cutoff in memory, ordered by (entity, time, item): codes index
    ``entity_ids``/``item_ids``."""

    entity: np.ndarray          # int32 codes, sorted
    item: np.ndarray            # int32 codes
    weight: np.ndarray          # float32 event-type weight (times value when a value column is set)
    time: np.ndarray            # int64 microseconds since the epoch (UTC)
    entity_ids: np.ndarray      # object array of str, sorted
    item_ids: np.ndarray        # object array of str, sorted
    item_count: np.ndarray      # int64 events per item
    item_last: np.ndarray       # int64 last event time per item (us)
    entity_count: np.ndarray    # int64 events per entity
    entity_last: np.ndarray     # int64 last event time per entity (us)
    before: datetime | None = None
    type_counts: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.entity.size)

    @property
    def n_entities(self) -> int:
        return int(self.entity_ids.size)

    @property
    def newest(self) -> int | None:
        return int(self.time.max()) if self.time.size else None

    def load(self) -> Events:
        return self

    def entity_starts(self) -> np.ndarray:
        """Offsets of each entity's first event (length n_entities + 1)."""
        return np.concatenate([[0], np.cumsum(self.entity_count)]).astype(np.int64)


class EventSource:
    """A table of events: a DataFrame, an Arrow table, a Parquet path or glob, or a DuckDB query.

    ``query`` is SQL over any of DuckDB's readers (``SELECT * FROM read_csv('e.csv')``); pass the
    DuckDB connection it needs (``connection=``) if it refers to tables you registered.
    A path may be on an object store (``s3://bucket/events/*.parquet``, a file, or a prefix holding
    Parquet files): it is read through pyarrow's S3 client, streamed, with ``storage_options``
    (credentials, region, endpoint) over the usual AWS variables (docs/object-storage.md).
    """

    def __init__(self, data: Any = None, *, columns: Columns | None = None, query: str | None = None,
                 connection: duckdb.DuckDBPyConnection | None = None,
                 storage_options: Mapping[str, str] | None = None):
        if (data is None) == (query is None):
            raise EventsError("give either data (DataFrame, Arrow table, Parquet path/glob) or query=")
        self.data = data
        self.query = query
        self.columns = columns or Columns()
        self.connection = connection
        self.storage_options = dict(storage_options) if storage_options else None

    def __repr__(self) -> str:
        what = self.query if self.query is not None else (
            os.fspath(self.data) if isinstance(self.data, str | os.PathLike) else type(self.data).__name__)
        return f"EventSource({what!r}, columns={self.columns})"

    def describe(self) -> str:
        if self.query is not None:
            return f"query: {self.query}"
        if isinstance(self.data, str | os.PathLike):
            return os.fspath(self.data)
        return type(self.data).__name__
