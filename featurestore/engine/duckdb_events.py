"""DuckDB's event reader: an :class:`~featurestore.engine.events.EventSource` to an
:class:`~featurestore.engine.events.Events` batch, selected, checked and coded inside DuckDB (per-item and
per-entity counts included)."""

from __future__ import annotations

import contextlib
import glob
import os
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa

from featurestore.conform import to_utc
from featurestore.engine.events import DEFAULT_WEIGHTS, Events, EventSource
from featurestore.errors import EventsError
from featurestore.storage.duck import literal, quote


def _relation_sql(source: EventSource, con: duckdb.DuckDBPyConnection) -> str:
    if source.query is not None:
        return f"({source.query})"
    data = source.data
    if isinstance(data, str | os.PathLike):
        path = os.fspath(data)
        if not glob.glob(path) and "://" not in path:
            raise EventsError(f"no events file matches {path!r}")
        return f"read_parquet({literal(path)})"
    try:
        import pandas as pd
    except ImportError:  # pragma: no cover
        pd = None
    if isinstance(data, pa.RecordBatch):
        data = pa.Table.from_batches([data])
    if pd is not None and isinstance(data, pd.DataFrame):
        try:
            data = pa.Table.from_pandas(data, preserve_index=False)
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise EventsError(f"cannot convert the events DataFrame to Arrow (mixed types or time "
                              f"zones in a column?): {exc}") from exc
    if not isinstance(data, pa.Table):
        raise EventsError(f"events must be a DataFrame, an Arrow table, a Parquet path or a query; "
                          f"got {type(data).__name__}")
    con.register("_events_input", data)
    return "_events_input"

def _schema(source: EventSource, con: duckdb.DuckDBPyConnection, rel: str) -> dict[str, str]:
    try:
        desc = con.sql(f"DESCRIBE SELECT * FROM {rel}").fetchall()
    except duckdb.Error as exc:
        raise EventsError(f"cannot read events from {source.describe()}: {exc}") from exc
    return {row[0]: row[1] for row in desc}

def read_events(source: EventSource, before: datetime | None = None, *,
                weights: Mapping[str, float] | None = None) -> Events:
    """Events with ``time < before`` (all when None), checked, coded and ordered by (entity, time).

    ``weights`` maps event types to weights (default :data:`DEFAULT_WEIGHTS`); a type not in it
    raises :class:`EventsError`. Without an event-type column every event weighs 1.
    """
    own = source.connection is None
    con = duckdb.connect(config={"autoinstall_known_extensions": False,
                                 "autoload_known_extensions": False}) if own else source.connection
    assert con is not None
    if own:
        con.sql("SET TimeZone = 'UTC'")
        con.sql("SET enable_progress_bar = false")  # DuckDB would draw it on stdout
    try:
        return _load(source, con, before, weights)
    except duckdb.Error as exc:
        raise EventsError(f"cannot read events from {source.describe()}: {exc}") from exc
    finally:
        if own:
            con.close()
        else:  # leave the caller's connection as it was (a failed cleanup must not hide the real error)
            for name in ("_ev", "_ents", "_items"):
                with contextlib.suppress(duckdb.Error):
                    con.sql(f"DROP TABLE IF EXISTS {name}")
            for name in ("_weights", "_events_input"):
                with contextlib.suppress(duckdb.Error):
                    con.unregister(name)


def _load(source: EventSource, con: duckdb.DuckDBPyConnection, before: datetime | None,
          weights: Mapping[str, float] | None) -> Events:
    """Select the events into ``_ev``, weigh them, code the ids and read the coded events back."""
    rel = _relation_sql(source, con)
    _select_events(source, con, rel, before)
    type_counts, weight_sql, join_w = _weigh_types(source, con, weights)
    ents, items = _code_ids(con)
    ev = con.sql(
        f"SELECT n.code::INTEGER AS e, m.code::INTEGER AS i, ({weight_sql} * _ev.v)::FLOAT AS w, "
        f"epoch_us(_ev.t) AS t FROM _ev JOIN _ents n USING (e) JOIN _items m USING (i) {join_w} "
        f"ORDER BY n.code, t, m.code, w"
    ).to_arrow_table()
    w = _np(ev["w"], np.float32)
    if ev.num_rows and not (np.isfinite(w).all() and (w >= 0).all()):
        raise EventsError(f"event values in column {source.columns.value!r} must be finite and >= 0")
    return Events(
        entity=_np(ev["e"], np.int32), item=_np(ev["i"], np.int32), weight=w, time=_np(ev["t"], np.int64),
        entity_ids=np.asarray(ents["e"].to_pylist(), dtype=object),
        item_ids=np.asarray(items["i"].to_pylist(), dtype=object),
        item_count=_np(items["count"], np.int64), item_last=_np(items["last"], np.int64),
        entity_count=_np(ents["count"], np.int64), entity_last=_np(ents["last"], np.int64),
        before=to_utc(before) if before is not None else None, type_counts=type_counts,
    )


def _select_events(source: EventSource, con: duckdb.DuckDBPyConnection, rel: str, before: datetime | None) -> None:
    """The temp table ``_ev`` (e, i, k, t, v): entity and item ids, event type, UTC time and value of
    the events before ``before``, after checking the columns exist and ids and times are not null."""
    c = source.columns
    types = _schema(source, con, rel)
    needed = [x for x in (c.entity, c.item, c.time, c.type, c.value) if x]
    missing = [x for x in needed if x not in types]
    if missing:
        raise EventsError(f"events from {source.describe()} have no column(s) {', '.join(map(repr, missing))}; "
                          f"columns are {', '.join(types)} (set them with Columns(...) / --columns)")
    time_expr = _time_expr(con, rel, c.time, types[c.time])
    ent, itm = quote(c.entity), quote(c.item)
    for col in (c.entity, c.item):
        nulls = _one(con, f"SELECT count(*) FROM {rel} WHERE {quote(col)} IS NULL")[0]
        if nulls:
            raise EventsError(f"events column {col!r} has {nulls} null id(s)")
    where = "TRUE"
    if before is not None:
        where = f"t < {_ts_literal(before)}"
    type_expr = f"CAST({quote(c.type)} AS VARCHAR)" if c.type else "NULL::VARCHAR"
    value_expr = f"CAST({quote(c.value)} AS DOUBLE)" if c.value else "1.0"
    base = (f"SELECT CAST({ent} AS VARCHAR) AS e, CAST({itm} AS VARCHAR) AS i, {type_expr} AS k, "
            f"{time_expr} AS t, {value_expr} AS v FROM {rel}")
    try:
        con.sql(f"CREATE OR REPLACE TEMP TABLE _ev AS SELECT * FROM ({base}) WHERE {where}")
    except duckdb.Error as exc:
        raise EventsError(f"cannot read events from {source.describe()}: {exc}") from exc
    if _one(con, "SELECT count(*) FROM _ev WHERE t IS NULL")[0]:
        raise EventsError(f"events column {c.time!r} has null times")


def _weigh_types(source: EventSource, con: duckdb.DuckDBPyConnection, weights: Mapping[str, float] | None
                 ) -> tuple[dict[str, int], str, str]:
    """(events per type, SQL of an event's weight, the join that weight needs). Without a type column
    every event weighs 1; with one, every type must have a finite, non-negative weight (registered as
    ``_weights``)."""
    c = source.columns
    if not c.type:
        return {}, "1.0", ""
    rows = con.sql("SELECT k, count(*) FROM _ev GROUP BY k ORDER BY k NULLS FIRST").fetchall()
    type_counts = {str(k): int(n) for k, n in rows}
    if any(k is None for k, _ in rows):
        raise EventsError(f"events column {c.type!r} has null event types")
    table = dict(DEFAULT_WEIGHTS if weights is None else weights)
    unknown = sorted(k for k in type_counts if k not in table)
    if unknown:
        raise EventsError(
            f"unknown event type(s) {', '.join(map(repr, unknown[:10]))} in column {c.type!r}; "
            f"known: {', '.join(sorted(table))} (pass weights, e.g. --weights "
            f"{unknown[0]}=1)")
    bad = {k: w for k, w in table.items() if not (np.isfinite(w) and w >= 0)}
    if bad:
        raise EventsError(f"event-type weights must be finite and >= 0; got {bad}")
    con.register("_weights", pa.table({"k": list(table), "w": [float(w) for w in table.values()]}))
    return type_counts, "wt.w", "JOIN _weights wt ON wt.k = _ev.k"


def _code_ids(con: duckdb.DuckDBPyConnection) -> tuple[pa.Table, pa.Table]:
    """Entity and item codes (temp tables ``_ents`` and ``_items``) with each id's event count and last
    time; returns (e, count, last) and (i, count, last) in code order."""
    # codes from sorted ids, so the same events give the same codes whatever their order
    con.sql("CREATE OR REPLACE TEMP TABLE _ents AS SELECT e, (row_number() OVER (ORDER BY e)) - 1 AS code, "
                "count, last FROM (SELECT e, count(*) AS count, epoch_us(max(t)) AS last FROM _ev GROUP BY e)")
    con.sql("CREATE OR REPLACE TEMP TABLE _items AS SELECT i, (row_number() OVER (ORDER BY i)) - 1 AS code, "
                "count, last FROM (SELECT i, count(*) AS count, epoch_us(max(t)) AS last FROM _ev GROUP BY i)")
    ents = con.sql("SELECT e, count, last FROM _ents ORDER BY code").to_arrow_table()
    items = con.sql("SELECT i, count, last FROM _items ORDER BY code").to_arrow_table()
    return ents, items


def _one(con: duckdb.DuckDBPyConnection, sql: str) -> tuple[Any, ...]:
    """The first row of a query (fetched completely, so the connection is free afterwards)."""
    return con.sql(sql).fetchall()[0]


def _np(col: pa.ChunkedArray, dtype: Any) -> np.ndarray:
    return np.ascontiguousarray(col.to_numpy(), dtype=dtype)


def _ts_literal(value: datetime) -> str:
    return f"TIMESTAMPTZ {literal(to_utc(value).isoformat())}"


def _time_expr(con: duckdb.DuckDBPyConnection, rel: str, col: str, dtype: str) -> str:
    """SQL turning the time column into TIMESTAMPTZ (naive times are UTC); checks strings parse and
    agree on whether they carry a time zone."""
    q = quote(col)
    upper = dtype.upper()
    if upper.startswith("TIMESTAMP WITH TIME ZONE") or upper == "TIMESTAMPTZ":
        return q
    if upper.startswith("TIMESTAMP") or upper == "DATE":
        return f"timezone('UTC', CAST({q} AS TIMESTAMP))"
    if upper == "VARCHAR":
        # an offset or zone suffix: Z, +hh, +hh:mm, -hhmm
        tz = r"\d{2}:\d{2}(:\d{2}(\.\d+)?)?\s*(Z|[+-]\d{2}(:?\d{2})?)$"
        zoned = f"regexp_matches(trim({q}), {literal(tz)})"
        # a value that parses neither way is unparseable, not a "time without a zone"
        unparseable = f"TRY_CAST({q} AS TIMESTAMPTZ) IS NULL AND TRY_CAST({q} AS TIMESTAMP) IS NULL"
        bad = con.sql(f"SELECT {q} FROM {rel} WHERE {q} IS NOT NULL AND {unparseable} LIMIT 3").fetchall()
        if bad:
            raise EventsError(f"events column {col!r} has unparseable time(s), e.g. "
                              f"{', '.join(repr(b[0]) for b in bad)} (use ISO-8601)")
        n_tz, n_naive = _one(
            con, f"SELECT count(*) FILTER (WHERE {zoned}), count(*) FILTER (WHERE NOT {zoned}) "
                 f"FROM {rel} WHERE {q} IS NOT NULL")
        if n_tz and n_naive:
            raise EventsError(f"events column {col!r} mixes times with and without a time zone "
                              f"({n_tz} with, {n_naive} without): give every time an offset, or none (UTC)")
        parse = f"TRY_CAST({q} AS TIMESTAMPTZ)" if n_tz else f"timezone('UTC', TRY_CAST({q} AS TIMESTAMP))"
        bad = con.sql(f"SELECT {q} FROM {rel} WHERE {q} IS NOT NULL AND {parse} IS NULL LIMIT 3").fetchall()
        if bad:
            raise EventsError(f"events column {col!r} has unparseable time(s), e.g. "
                              f"{', '.join(repr(b[0]) for b in bad)} (use ISO-8601)")
        return parse
    raise EventsError(f"events column {col!r} must hold timestamps (or ISO-8601 strings); got {dtype}")

