"""Bulk scans behind one interface (:class:`Engine`); DuckDB (:class:`DuckDBEngine`) is the default,
Spark (:class:`featurestore.engine.spark.SparkEngine`, the ``spark`` extra) the other.

Example::

    from featurestore.engine import DuckDBEngine, read_events
    events = read_events(EventSource("events.parquet"), before=cutoff)
"""

from collections.abc import Mapping
from datetime import datetime

from featurestore.engine.base import (
    Cooccurrence,
    Engine,
    EngineName,
    EntitySums,
    FrameEngine,
    JoinRequest,
    Scan,
    SumsBatch,
)
from featurestore.engine.duckdb import DuckDBEngine
from featurestore.engine.events import DEFAULT_WEIGHTS, Columns, Events, EventSource, EventTable
from featurestore.engine.select import frame_engine, resolve, spark_engine


def read_events(source: EventSource, *, before: datetime | None = None,
                weights: Mapping[str, float] | None = None, engine: Engine | None = None) -> EventTable:
    """Events of ``source`` with time ``< before`` (all when None), read by ``engine`` (default DuckDB)."""
    return (engine or DuckDBEngine()).read_events(source, before=before, weights=weights)


__all__ = ["DEFAULT_WEIGHTS", "Columns", "Cooccurrence", "DuckDBEngine", "Engine", "EngineName", "EntitySums",
           "EventSource", "EventTable", "Events", "FrameEngine", "JoinRequest", "Scan", "SumsBatch", "frame_engine",
           "read_events", "resolve", "spark_engine"]
