"""Bulk scans behind one interface (:class:`Engine`); DuckDB (:class:`DuckDBEngine`) is the default.

Example::

    from featurestore.engine import DuckDBEngine, read_events
    events = read_events(EventSource("events.parquet"), before=cutoff)
"""

from collections.abc import Mapping
from datetime import datetime

from featurestore.engine.base import Cooccurrence, Engine, EntitySums, JoinRequest, Scan, SumsBatch
from featurestore.engine.duckdb import DuckDBEngine
from featurestore.engine.events import DEFAULT_WEIGHTS, Columns, Events, EventSource, EventTable


def read_events(source: EventSource, *, before: datetime | None = None,
                weights: Mapping[str, float] | None = None, engine: Engine | None = None) -> EventTable:
    """Events of ``source`` with time ``< before`` (all when None), read by ``engine`` (default DuckDB)."""
    return (engine or DuckDBEngine()).read_events(source, before=before, weights=weights)


__all__ = ["DEFAULT_WEIGHTS", "Columns", "Cooccurrence", "DuckDBEngine", "Engine", "EntitySums", "EventSource",
           "EventTable", "Events", "JoinRequest", "Scan", "SumsBatch", "read_events"]
