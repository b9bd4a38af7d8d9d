"""The DuckDB engine: the default, embedded in the process. Tables are scanned by DuckDB straight from
their Parquet files; the sequence kernels (co-occurrence counts, weighted sums) run in numpy on the
coded events DuckDB produced: all at once when they are few, else streamed from DuckDB in chunks of
whole entities (:mod:`featurestore.engine.duckdb_events`), so memory does not grow with the events."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import duckdb
import numpy as np
import pyarrow as pa

from featurestore.engine import counting
from featurestore.engine.base import Cooccurrence, Engine, EntitySums, JoinRequest, Scan, SumsBatch
from featurestore.engine.duckdb_events import CHUNK_EVENTS, DuckDBEvents, ReadSettings, read_events, size_bytes
from featurestore.engine.duckdb_pairs import MAX_PAIRS, PairSpill, per_item
from featurestore.engine.events import Events, EventSource, EventTable
from featurestore.engine.pit_sql import JoinGroup, build_sql, join_cache_sql
from featurestore.errors import EventsError, InvalidData, QueryError, StorageError
from featurestore.storage.duck import Duck, literal, quote

if TYPE_CHECKING:
    import scipy.sparse as sp  # 0.1 s to import: only the in-process kernels need it at run time


class DuckDBEngine(Engine):
    """Bulk scans in the store's DuckDB database (one cursor per call, so threads never share one).

    ``memory_limit`` and ``temp_directory`` bound what DuckDB holds in memory and say where it spills
    (DuckDB units such as ``"4GB"``; they apply to the event reads of pipelines, default 2 GB and a
    folder in the system temporary directory, and to the store's database when given).
    ``chunk_events``: inputs with more events than this stay in DuckDB and are counted and aggregated
    in chunks of about this many events (whole entities), so peak memory does not grow with the number
    of events; smaller ones are read whole into memory, which is fastest. Results are the same either
    way (counts to float32 rounding, entity sums exactly).
    ``max_pairs``: the distinct item pairs a co-occurrence count holds in memory; beyond it the counts
    are summed in DuckDB (spilling to ``temp_directory``) and only each item's strongest pairs come back
    (:mod:`featurestore.engine.duckdb_pairs`), so memory stays bounded at any event count (None: no
    bound, every pair is kept in memory).
    """

    name = "duckdb"

    def __init__(self, duck: Duck | None = None, *, memory_limit: str | None = None,
                 temp_directory: str | None = None, chunk_events: int = CHUNK_EVENTS,
                 max_pairs: int | None = MAX_PAIRS):
        if chunk_events < 1:
            raise EventsError(f"chunk_events must be >= 1; got {chunk_events}")
        if max_pairs is not None and max_pairs < 1:
            raise EventsError(f"max_pairs must be >= 1 (or None: no bound); got {max_pairs}")
        self.max_pairs = max_pairs
        self.temp_directory = temp_directory
        self._duck = duck
        self.settings = ReadSettings(memory_limit=memory_limit, temp_directory=temp_directory,
                                     chunk_events=chunk_events)
        if duck is not None:
            duck.configure(memory_limit=memory_limit, temp_directory=temp_directory)

    @property
    def duck(self) -> Duck:
        """The DuckDB database scans run in (the store's; made on first use when none was given)."""
        if self._duck is None:
            self._duck = Duck()
            self._duck.configure(memory_limit=self.settings.memory_limit,
                                 temp_directory=self.settings.temp_directory)
        return self._duck

    def __repr__(self) -> str:
        return "DuckDBEngine()"

    @contextlib.contextmanager
    def _cursor(self) -> Iterator[duckdb.DuckDBPyConnection]:
        cur = self.duck.con.cursor()
        try:
            yield cur
        finally:
            cur.close()

    # ---- pipelines ----------------------------------------------------------------------------------
    def read_events(self, source: EventSource, *, before: datetime | None = None,
                    weights: Mapping[str, float] | None = None) -> EventTable:
        try:
            return read_events(source, before, weights=weights, settings=self.settings)
        except duckdb.Error as exc:  # a query or file failing after its schema was read
            raise EventsError(f"cannot read events from {source.describe()}: {exc}") from exc

    def cooccurrence(self, events: EventTable, request: Cooccurrence) -> sp.csr_matrix:
        n, budget = events.n_items, self.max_pairs
        return counting.cooccurrence_chunks(
            _chunks(events), n, request, max_pairs=budget, sink=lambda: PairSpill.open(self.settings, n),
            keep=per_item(budget or 1, n))

    def entity_sums(self, events: EventTable, request: EntitySums) -> Iterator[SumsBatch]:
        for chunk in _chunks(events, ids=True):
            yield from counting.entity_sums(chunk, request)

    # ---- tables -------------------------------------------------------------------------------------
    def scan(self, request: Scan) -> pa.Table:
        spec = request.spec
        columns = list(request.columns or spec.columns)
        vectors = {f.name: f.duckdb_type for f in spec.vector_features}
        select = [f"CAST(p.{quote(c)} AS {vectors[c]}) AS {quote(c)}" if c in vectors else f"p.{quote(c)}"
                  for c in columns]
        locate = request.locate or request.rows is not None
        if locate:
            select += ["p.filename AS _file", "p.file_row_number AS _row"]
        files = ", ".join(map(literal, request.files))
        sql = (f"SELECT {', '.join(select)} FROM read_parquet([{files}]"
               f"{', filename=true, file_row_number=true' if locate else ''}) AS p")
        if request.keys is not None:
            sql += f" SEMI JOIN __fs_wanted USING ({', '.join(quote(k) for k in spec.key_names)})"
        if request.rows is not None:
            sql += " WHERE " + (" OR ".join(
                f"(p.filename = {literal(request.files[f])} AND p.file_row_number IN "
                f"({', '.join(str(int(r)) for r in np.unique(rows))}))"
                for f, rows in request.rows.items() if len(rows)) or "false")
        if not request.files:
            return pa.table({c: pa.array([], pa.null()) for c in columns})
        with self._cursor() as cur:
            try:
                if request.keys is not None:
                    cur.register("__fs_wanted", request.keys)
                out = cur.sql(sql).to_arrow_table()
            except duckdb.Error as exc:
                raise StorageError(f"reading {len(request.files)} data file(s) of {spec.key}: {exc}") from exc
        if locate:  # file names -> positions in request.files
            index = {f: i for i, f in enumerate(request.files)}
            names = out["_file"].to_pylist()
            out = out.set_column(out.schema.get_field_index("_file"), "_file",
                                 pa.array([index[n] for n in names], pa.int64()))
        return out

    def latest(self, table: pa.Table, key_names: Sequence[str], event_time: str, tiebreak: str) -> pa.Table:
        keys = ", ".join(quote(k) for k in key_names)
        sql = (f"SELECT * EXCLUDE ({quote(tiebreak)}) FROM __fs_batch QUALIFY row_number() OVER "
               f"(PARTITION BY {keys} ORDER BY {quote(event_time)} DESC, {quote(tiebreak)} DESC) = 1 "
               f"ORDER BY {keys}")
        with self._cursor() as cur:
            try:
                cur.register("__fs_batch", table)
                return cur.sql(sql).to_arrow_table()
            except duckdb.Error as exc:
                raise QueryError(f"latest rows per key: {exc}") from exc

    # ---- training sets ------------------------------------------------------------------------------
    def relation_schema(self, register: Callable[[Any, str], None]) -> dict[str, str]:
        with self._cursor() as cur:
            try:
                register(cur, "__fs_probe")
                rel = cur.sql("SELECT * FROM __fs_probe LIMIT 0")
                return {c: str(t) for c, t in zip(rel.columns, rel.types)}
            except duckdb.Error as exc:
                raise QueryError(str(exc)) from exc

    def join_cache_rows(self, group: JoinGroup) -> pa.Table:
        with self._cursor() as cur:
            try:
                return cur.sql(join_cache_sql(group)).to_arrow_table()
            except duckdb.Error as exc:
                raise StorageError(f"sorting the rows of {group.key} commit {group.commit}: {exc}") from exc

    def describe_join(self, request: JoinRequest) -> str:
        return build_sql(list(request.groups), request.event_time, request.known_at)

    def point_in_time_join(self, request: JoinRequest) -> pa.RecordBatchReader:
        cur = self.duck.con.cursor()
        restore = _lower_memory_limit(cur, request.memory_limit)
        try:
            request.register_spine(cur, "__fs_spine")
            sql = self.describe_join(request).replace("{spine}", "__fs_spine")
            for i, (placeholder, table) in enumerate(request.caches.items()):
                cur.register(f"__fs_cache{i}", table)
                sql = sql.replace(placeholder, f"__fs_cache{i}")
            self.duck._log(sql)
            reader = cur.sql(sql).to_arrow_reader(request.batch_size)
        except duckdb.Error as exc:
            _close(cur, restore)
            raise QueryError(f"training-set query failed ({_groups(request)}): {exc}") from exc
        except BaseException:
            _close(cur, restore)
            raise
        return _Reader.wrap(reader, lambda: _close(cur, restore), _groups(request))

    def close(self) -> None:
        if self._duck is not None:
            self._duck.close()


def _chunks(events: EventTable, *, ids: bool = False) -> Iterable[Events]:
    """In-memory chunks of whole entities: DuckDB-kept events streamed, others loaded whole."""
    if isinstance(events, DuckDBEvents):
        return events.chunks(ids=ids)
    return [events.load()]


class _Reader:
    """A record batch reader that closes its cursor once read (or garbage collected) and reports
    DuckDB's errors while streaming as :class:`QueryError`."""

    @staticmethod
    def wrap(reader: pa.RecordBatchReader, done: Callable[[], None], what: str = "") -> pa.RecordBatchReader:
        def batches() -> Iterator[pa.RecordBatch]:
            try:
                yield from reader
            except (duckdb.Error, pa.ArrowException) as exc:
                raise QueryError(f"training-set query failed ({what}): {exc}") from exc
            finally:
                done()
        return pa.RecordBatchReader.from_batches(reader.schema, batches())


def _groups(request: JoinRequest) -> str:
    """The feature groups and commits a join reads, for error messages (their files are named by the
    storage errors themselves)."""
    return ", ".join(f"{g.key} commit {g.commit}" for g in request.groups) or "the spine"


def _close(cur: duckdb.DuckDBPyConnection, restore: str | None) -> None:
    with contextlib.suppress(duckdb.Error):
        if restore:
            cur.execute(restore)
        cur.close()


def _lower_memory_limit(cur: duckdb.DuckDBPyConnection, limit: str | None) -> str | None:
    """Lower DuckDB's (database-wide) memory limit to ``limit`` if that is smaller; return the statement
    that restores it afterwards (``RESET`` when it was DuckDB's default), or None when nothing changed."""
    if not limit:
        return None

    def current() -> str:
        return str(cur.execute("SELECT current_setting('memory_limit')").fetchall()[0][0])

    restore = None
    try:
        before = current()
        cur.execute("RESET memory_limit")
        restore = "RESET memory_limit" if current() == before else f"SET memory_limit = {literal(before)}"
        cur.execute(f"SET memory_limit = {literal(limit)}")
        lowered = current()
    except duckdb.Error as exc:
        if restore:
            cur.execute(restore)
        raise InvalidData(f"bad memory_limit {limit!r}: {exc}") from exc
    if size_bytes(lowered) >= size_bytes(before):
        cur.execute(restore)
        return None
    return restore
