"""DuckDB's event reader: an :class:`~featurestore.engine.events.EventSource` to an
:class:`~featurestore.engine.events.EventTable`, selected, checked and coded inside DuckDB (per-item and
per-entity counts included).

Up to ``chunk_events`` events come back as in-memory :class:`~featurestore.engine.events.Events` (the
fastest path). More stay in DuckDB as :class:`DuckDBEvents`: a temporary table of coded events sorted by
(entity, time, item, weight), which DuckDB spills to its temporary directory beyond its memory limit;
the counting kernels read it back in chunks of whole entities, so Python never holds more than about
``chunk_events`` events at once.
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import os
import re
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from featurestore.conform import to_utc
from featurestore.engine.events import DEFAULT_WEIGHTS, CountedEvents, Events, EventSource, EventTable
from featurestore.engine.object_events import is_remote, parquet_dataset
from featurestore.errors import EventsError
from featurestore.storage.duck import literal, quote


def _relation_sql(source: EventSource, con: duckdb.DuckDBPyConnection, names: _Names) -> str:
    if source.query is not None:
        return f"({source.query})"
    data = source.data
    if isinstance(data, str | os.PathLike):
        path = os.fspath(data)
        if is_remote(path):  # streamed through pyarrow's S3 client (no httpfs extension needed)
            con.register(names.input, parquet_dataset(path, source.storage_options))
            return names.input
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
    con.register(names.input, data)
    return names.input

def _schema(source: EventSource, con: duckdb.DuckDBPyConnection, rel: str) -> dict[str, str]:
    try:
        desc = con.sql(f"DESCRIBE SELECT * FROM {rel}").fetchall()
    except duckdb.Error as exc:
        raise EventsError(f"cannot read events from {source.describe()}: {exc}") from exc
    return {row[0]: row[1] for row in desc}

#: events read whole into memory by default; larger inputs stay in DuckDB and are streamed in chunks
CHUNK_EVENTS = 8_000_000
#: DuckDB's memory limit for a pipeline's event reads when none is set (sorts spill beyond it)
EVENTS_MEMORY_LIMIT = "2GB"
#: DuckDB's memory limit once the events are sorted (only lowered, never raised): the chunked scans that
#: follow read the table back in order, and the memory DuckDB frees is the pipeline's for the fit
SCAN_MEMORY_LIMIT = "256MB"
_serial = itertools.count()


@dataclass(frozen=True)
class ReadSettings:
    """How DuckDB reads events: ``memory_limit`` of the reading database (DuckDB units such as
    ``"4GB"``; default :data:`EVENTS_MEMORY_LIMIT`), ``temp_directory`` where it spills (default: a
    folder in the system temporary directory, removed when the events are closed), ``chunk_events``
    (inputs with more events stay in DuckDB and are streamed in chunks of about this many)."""

    memory_limit: str | None = None
    temp_directory: str | None = None
    chunk_events: int = CHUNK_EVENTS


def connect(settings: ReadSettings) -> duckdb.DuckDBPyConnection:
    """A private in-memory DuckDB database for reading events, with the settings' limits."""
    temp = settings.temp_directory or os.path.join(
        tempfile.gettempdir(), f"featurestore-spill-{os.getpid()}-{next(_serial)}")
    try:
        con = duckdb.connect(config={"autoinstall_known_extensions": False, "autoload_known_extensions": False,
                                     "memory_limit": settings.memory_limit or EVENTS_MEMORY_LIMIT,
                                     "temp_directory": temp})
    except duckdb.Error as exc:
        raise EventsError(f"bad DuckDB settings (memory_limit={settings.memory_limit!r}, "
                          f"temp_directory={settings.temp_directory!r}): {exc}") from exc
    con.sql("SET TimeZone = 'UTC'")
    con.sql("SET enable_progress_bar = false")  # DuckDB would draw it on stdout
    return con


def read_events(source: EventSource, before: datetime | None = None, *,
                weights: Mapping[str, float] | None = None, settings: ReadSettings | None = None) -> EventTable:
    """Events with ``time < before`` (all when None), checked, coded and ordered by (entity, time).

    ``weights`` maps event types to weights (default :data:`DEFAULT_WEIGHTS`); a type not in it
    raises :class:`EventsError`. Without an event-type column every event weighs 1.
    """
    settings = settings or ReadSettings()
    own = source.connection is None
    con = connect(settings) if own else source.connection
    assert con is not None
    names = _Names(next(_serial))
    kept = False
    try:
        out = _load(source, con, before, weights, names, settings.chunk_events)
        if isinstance(out, DuckDBEvents):
            kept, out.owns_connection = True, own
            if own:  # sorted: the chunked scans need little memory, so DuckDB gives back the rest now
                _lower_limit(con, SCAN_MEMORY_LIMIT)
        return out
    except duckdb.Error as exc:
        raise EventsError(f"cannot read events from {source.describe()}: {exc}") from exc
    finally:
        if own and not kept:
            con.close()
        elif not own:  # leave the caller's connection as it was (a failed cleanup must not hide the real error)
            names.drop(con, keep_coded=kept)


@dataclass(frozen=True)
class _Names:
    """Names of one read's temporary tables (unique, so reads on one caller's connection do not clash)."""

    n: int

    def __getattr__(self, name: str) -> str:
        if name in ("ev", "ents", "items", "coded", "weights", "input"):
            return f"_fs_{name}_{self.n}"
        raise AttributeError(name)

    def drop(self, con: duckdb.DuckDBPyConnection, *, keep_coded: bool = False) -> None:
        for name in (self.ev, self.items) + (() if keep_coded else (self.ents, self.coded)):
            with contextlib.suppress(duckdb.Error):
                con.sql(f"DROP TABLE IF EXISTS {name}")
        for name in (self.weights, self.input):
            with contextlib.suppress(duckdb.Error):
                con.unregister(name)


class DuckDBEvents(CountedEvents):
    """Events kept in a DuckDB temporary table, sorted by (entity, time, item, weight); per-item facts
    in Python. Read back by :meth:`chunks`; :meth:`close` drops the table (and its spill files)."""

    def __init__(self, con: duckdb.DuckDBPyConnection, names: _Names, items: pa.Table, *, n_events: int,
                 n_entities: int, newest: int | None, before: datetime | None, type_counts: dict[str, int],
                 chunk_events: int):
        self.con, self.names = con, names
        self.item_ids = np.asarray(items["i"].to_pylist(), dtype=object)
        self.item_count = _np(items["count"], np.int64)
        self.item_last = _np(items["last"], np.int64)
        self.before, self.type_counts = before, type_counts
        self._n, self._n_entities, self._newest = n_events, n_entities, newest
        self.chunk_events = chunk_events
        self.owns_connection = False
        self.closed = False

    def _check_open(self) -> None:
        if self.closed:
            raise EventsError("these events were closed (read them again)")

    def chunks(self, *, ids: bool = False, rows: int | None = None) -> Iterator[Events]:
        """The events as in-memory chunks of about ``rows`` (default ``chunk_events``) events, each
        holding whole entities (a longer entity makes a longer chunk); entity codes start at 0 in each
        chunk, and ``entity_ids`` are filled only with ``ids``."""
        self._check_open()
        rows = max(1, rows or self.chunk_events)
        cur, look = self.con.cursor(), self.con.cursor()  # a query on the reader's cursor would end it
        try:
            reader = cur.sql(f"SELECT e, i, w, t FROM {self.names.coded}").to_arrow_reader(min(rows, 1 << 20))
            pending: list[pa.RecordBatch] = []
            size = 0
            for batch in reader:
                pending.append(batch)
                size += batch.num_rows
                if size >= rows:
                    table = pa.Table.from_batches(pending)
                    cut = _last_entity_start(table["e"])
                    if cut > 0:
                        yield self._chunk(look, table.slice(0, cut), ids)
                        rest = table.slice(cut)
                        pending, size = rest.to_batches(), rest.num_rows
            if size:
                yield self._chunk(look, pa.Table.from_batches(pending), ids)
        except duckdb.Error as exc:
            raise EventsError(f"reading events back from DuckDB: {exc}") from exc
        finally:
            cur.close()
            look.close()

    def _chunk(self, cur: duckdb.DuckDBPyConnection, table: pa.Table, ids: bool) -> Events:
        ent = _np(table["e"], np.int32)
        lo, hi = int(ent[0]), int(ent[-1])
        ent = ent - np.int32(lo)
        time = _np(table["t"], np.int64)
        count = np.bincount(ent, minlength=hi - lo + 1).astype(np.int64)
        starts = np.concatenate([[0], np.cumsum(count)])
        entity_ids = np.empty(hi - lo + 1, dtype=object)
        if ids:
            got = cur.sql(f"SELECT e FROM {self.names.ents} WHERE code BETWEEN {lo} AND {hi} ORDER BY code"
                          ).to_arrow_table()
            entity_ids = np.asarray(got["e"].to_pylist(), dtype=object)
        return Events(entity=ent, item=_np(table["i"], np.int32), weight=_np(table["w"], np.float32), time=time,
                      entity_ids=entity_ids, item_ids=self.item_ids, item_count=self.item_count,
                      item_last=self.item_last, entity_count=count, entity_last=time[starts[1:] - 1],
                      before=self.before, type_counts=self.type_counts)

    def load(self) -> Events:
        self._check_open()
        with self.con.cursor() as cur:
            ev = cur.sql(f"SELECT e, i, w, t FROM {self.names.coded}").to_arrow_table()
            ents = cur.sql(f"SELECT e, count, last FROM {self.names.ents} ORDER BY code").to_arrow_table()
        return _events(ev, ents, self.item_ids, self.item_count, self.item_last, self.before, self.type_counts)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.owns_connection:
            with contextlib.suppress(duckdb.Error):
                self.con.close()
        else:
            self.names.drop(self.con)

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()


def _lower_limit(con: duckdb.DuckDBPyConnection, limit: str) -> None:
    """Lower the connection's memory limit to ``limit`` unless it is already lower."""
    current = str(con.execute("SELECT current_setting('memory_limit')").fetchall()[0][0])
    if size_bytes(current) > size_bytes(limit):
        con.execute(f"SET memory_limit = {literal(limit)}")


def size_bytes(text: str) -> float:
    """Bytes of a DuckDB size such as ``'1.8 GiB'`` or ``'256MB'`` (infinity when it does not parse)."""
    units = {"b": 1, "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40,
             "kb": 1e3, "mb": 1e6, "gb": 1e9, "tb": 1e12, "bytes": 1}
    m = re.match(r"^\s*([\d.]+)\s*([a-zA-Z]*)\s*$", text)
    if not m:
        return float("inf")
    return float(m[1]) * units.get(m[2].lower() or "b", 1)


def _last_entity_start(codes: pa.ChunkedArray) -> int:
    """Where the last entity of a run of sorted entity codes starts (0 when there is one entity)."""
    e = _np(codes, np.int32)
    return int(np.searchsorted(e, e[-1], side="left"))


def _load(source: EventSource, con: duckdb.DuckDBPyConnection, before: datetime | None,
          weights: Mapping[str, float] | None, names: _Names, chunk_events: int) -> EventTable:
    """Select the events, weigh them, code the ids; read the coded events back (up to ``chunk_events``)
    or keep them sorted in DuckDB."""
    rel = _relation_sql(source, con, names)
    _select_events(source, con, rel, before, names)
    type_counts, weight_sql, join_w = _weigh_types(source, con, weights, names)
    items = _code_ids(con, names)
    n = int(pc.sum(items["count"]).as_py() or 0)
    coded = (f"SELECT n.code::INTEGER AS e, m.code::INTEGER AS i, ({weight_sql} * ev.v)::FLOAT AS w, "
             f"epoch_us(ev.t) AS t FROM {names.ev} ev JOIN {names.ents} n USING (e) JOIN {names.items} m "
             f"USING (i) {join_w} ORDER BY n.code, t, m.code, w")
    cutoff = to_utc(before) if before is not None else None
    item_ids = np.asarray(items["i"].to_pylist(), dtype=object)
    if n <= chunk_events:
        ents = con.sql(f"SELECT e, count, last FROM {names.ents} ORDER BY code").to_arrow_table()
        ev = con.sql(coded).to_arrow_table()
        _check_values(source, ev)
        return _events(ev, ents, item_ids, _np(items["count"], np.int64), _np(items["last"], np.int64), cutoff,
                       type_counts)
    con.sql(f"CREATE OR REPLACE TABLE {names.coded} AS {coded}")
    con.sql(f"DROP TABLE IF EXISTS {names.ev}")
    bad = _one(con, f"SELECT count(*) FROM {names.coded} WHERE w IS NULL OR NOT isfinite(w) OR w < 0")[0]
    if bad:
        raise EventsError(f"event values in column {source.columns.value!r} must be finite and >= 0")
    n_entities, newest = _one(con, f"SELECT count(*), max(last) FROM {names.ents}")
    return DuckDBEvents(con, names, items, n_events=n, n_entities=int(n_entities),
                        newest=None if newest is None else int(newest), before=cutoff,
                        type_counts=type_counts, chunk_events=chunk_events)


def _check_values(source: EventSource, ev: pa.Table) -> None:
    w = _np(ev["w"], np.float32)
    if ev.num_rows and not (np.isfinite(w).all() and (w >= 0).all()):
        raise EventsError(f"event values in column {source.columns.value!r} must be finite and >= 0")


def _events(ev: pa.Table, ents: pa.Table, item_ids: np.ndarray, item_count: np.ndarray, item_last: np.ndarray,
            before: datetime | None, type_counts: dict[str, int]) -> Events:
    return Events(
        entity=_np(ev["e"], np.int32), item=_np(ev["i"], np.int32), weight=_np(ev["w"], np.float32),
        time=_np(ev["t"], np.int64), entity_ids=np.asarray(ents["e"].to_pylist(), dtype=object),
        item_ids=item_ids, item_count=item_count, item_last=item_last,
        entity_count=_np(ents["count"], np.int64), entity_last=_np(ents["last"], np.int64),
        before=before, type_counts=type_counts,
    )


def _select_events(source: EventSource, con: duckdb.DuckDBPyConnection, rel: str, before: datetime | None,
                   names: _Names) -> None:
    """The temp table ``names.ev`` (e, i, k, t, v): entity and item ids, event type, UTC time and value of
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
        con.sql(f"CREATE OR REPLACE TABLE {names.ev} AS SELECT * FROM ({base}) WHERE {where}")
    except duckdb.Error as exc:
        raise EventsError(f"cannot read events from {source.describe()}: {exc}") from exc
    if _one(con, f"SELECT count(*) FROM {names.ev} WHERE t IS NULL")[0]:
        raise EventsError(f"events column {c.time!r} has null times")


def _weigh_types(source: EventSource, con: duckdb.DuckDBPyConnection, weights: Mapping[str, float] | None,
                 names: _Names) -> tuple[dict[str, int], str, str]:
    """(events per type, SQL of an event's weight, the join that weight needs). Without a type column
    every event weighs 1; with one, every type must have a finite, non-negative weight (registered as
    ``_weights``)."""
    c = source.columns
    if not c.type:
        return {}, "1.0", ""
    rows = con.sql(f"SELECT k, count(*) FROM {names.ev} GROUP BY k ORDER BY k NULLS FIRST").fetchall()
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
    con.register(names.weights, pa.table({"k": list(table), "w": [float(w) for w in table.values()]}))
    return type_counts, "wt.w", f"JOIN {names.weights} wt ON wt.k = ev.k"


def _code_ids(con: duckdb.DuckDBPyConnection, names: _Names) -> pa.Table:
    """Entity and item codes (temp tables ``names.ents`` and ``names.items``, sorted by code) with each
    id's event count and last time; returns the items' (i, count, last) in code order."""
    # codes from sorted ids, so the same events give the same codes whatever their order
    for table, col in ((names.ents, "e"), (names.items, "i")):
        con.sql(f"CREATE OR REPLACE TABLE {table} AS SELECT {col}, (row_number() OVER (ORDER BY {col})) - 1 "
                f"AS code, count, last FROM (SELECT {col}, count(*) AS count, epoch_us(max(t)) AS last "
                f"FROM {names.ev} GROUP BY {col}) ORDER BY code")
    return con.sql(f"SELECT i, count, last FROM {names.items} ORDER BY code").to_arrow_table()


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

