"""DuckDB over the store: one in-memory database owned by the store, one cursor per thread, and one
view per feature-group table version.

A view reads exactly the Parquet files of one Delta version (``read_parquet([...file_uris])``):
globbing the folder would also read files that a later commit replaced, or that a crashed writer
left behind. Vectors are cast from ``FLOAT[]`` to ``FLOAT[dim]`` so DuckDB's array functions
(``array_cosine_similarity``, ``array_inner_product``, ``array_distance``) apply.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import threading
import weakref
from typing import Any, cast

import duckdb
import pyarrow as pa

from featurestore.errors import QueryError
from featurestore.schema import FeatureGroupSpec

log = logging.getLogger("featurestore.sql")

#: system column written with every row: the writer's UTC clock just before its commit
INGESTED_AT = "_ingested_at"


def quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def relation_sql(spec: FeatureGroupSpec, files: list[str]) -> str:
    """A SELECT over one table version's files, with vectors typed ``FLOAT[dim]``."""
    if not files:
        cols = [f"CAST(NULL AS {'VARCHAR' if k.type == 'string' else 'BIGINT'}) AS {quote(k.name)}"
                for k in spec.entity_keys]
        cols.append(f"CAST(NULL AS TIMESTAMPTZ) AS {quote(spec.event_time)}")
        cols += [f"CAST(NULL AS {f.duckdb_type}) AS {quote(f.name)}" for f in spec.features]
        cols.append(f"CAST(NULL AS TIMESTAMPTZ) AS {INGESTED_AT}")
        return f"SELECT {', '.join(cols)} WHERE false"
    replace = ", ".join(f"CAST({quote(f.name)} AS {f.duckdb_type}) AS {quote(f.name)}"
                        for f in spec.vector_features)
    star = f"* REPLACE ({replace})" if replace else "*"
    file_list = ", ".join(literal(f) for f in files)
    return f"SELECT {star} FROM read_parquet([{file_list}])"


_OPEN: weakref.WeakSet[Duck] = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    # Close databases still open at interpreter exit: tearing DuckDB down during the final garbage
    # collection, after deltalake's reader threads have run, can abort the process.
    for duck in list(_OPEN):
        duck.close()


class Duck:
    """The store's DuckDB database. Thread-safe: each thread queries through its own cursor."""

    def __init__(self, *, echo: bool = False, threads: int | None = None):
        config: dict[str, Any] = {
            "autoinstall_known_extensions": False,  # no network: never fetch extensions
            "autoload_known_extensions": False,
        }
        if threads:
            config["threads"] = threads
        self.con = duckdb.connect(":memory:", config=config)
        self.con.execute("SET TimeZone = 'UTC'")  # TIMESTAMPTZ values come back in UTC on any machine
        self.echo = echo
        self._local = threading.local()
        self._ddl = threading.Lock()
        self._views: dict[str, str] = {}  # view name -> the SQL it was created from
        _OPEN.add(self)

    def configure(self, *, memory_limit: str | None = None, temp_directory: str | None = None) -> None:
        """Bound DuckDB's memory (``"4GB"``, DuckDB's units) and say where it spills beyond it (None:
        keep DuckDB's setting: 80% of RAM, and a ``.tmp`` folder in the working directory)."""
        for name, value in (("memory_limit", memory_limit), ("temp_directory", temp_directory)):
            if value is None:
                continue
            try:
                self.con.execute(f"SET {name} = {literal(str(value))}")
            except duckdb.Error as exc:
                raise QueryError(f"bad {name} {value!r}: {exc}") from exc

    def close(self) -> None:
        with contextlib.suppress(duckdb.Error):  # already closed
            self.con.close()

    def cursor(self) -> duckdb.DuckDBPyConnection:
        cur = getattr(self._local, "cursor", None)
        if cur is None:
            cur = self._local.cursor = self.con.cursor()
        return cur

    def _log(self, sql: str) -> None:
        if self.echo:
            print(sql)
        log.debug("%s", sql)

    def set_view(self, name: str, select_sql: str) -> None:
        """Create or replace a view (database-wide), skipping the DDL when nothing changed."""
        with self._ddl:
            if self._views.get(name) == select_sql:
                return
            ddl = f"CREATE OR REPLACE VIEW {quote(name)} AS {select_sql}"
            self._log(ddl)
            try:
                self.cursor().execute(ddl)
            except duckdb.Error as exc:
                raise QueryError(f"cannot create view {name}: {exc}") from exc
            self._views[name] = select_sql

    def drop_stale(self, keep: set[str]) -> None:
        with self._ddl:
            for name in sorted(set(self._views) - keep):
                self.cursor().execute(f"DROP VIEW IF EXISTS {quote(name)}")
                del self._views[name]

    def query(self, sql: str, *, params: Any = None, temp_views: dict[str, str] | None = None
              ) -> duckdb.DuckDBPyRelation:
        """Run ``sql``; ``temp_views`` (name -> SELECT) shadow the shared views for this query only."""
        cur = self.cursor()
        try:
            if temp_views:
                cur = self.con.cursor()  # temp views live in their own connection
                for name, select_sql in temp_views.items():
                    ddl = f"CREATE OR REPLACE TEMP VIEW {quote(name)} AS {select_sql}"
                    self._log(ddl)
                    cur.execute(ddl)
            self._log(sql)
            rel = cur.sql(sql, params=params)
        except duckdb.Error as exc:
            raise _query_error(sql, exc) from exc
        # a relation runs when it is read (.fetchall(), .df(), ...): its errors are translated then too
        return rel if rel is None else cast(duckdb.DuckDBPyRelation, Relation(rel, sql))


def _query_error(sql: str, exc: BaseException) -> QueryError:
    text = " ".join(sql.split())
    return QueryError(f"query failed: {exc}\n  query: {text[:300]}{'...' if len(text) > 300 else ''}")


class Relation:
    """A DuckDB relation from :meth:`Duck.query` whose errors, raised when it runs (reading a damaged
    file, a failed cast), come back as :class:`QueryError` naming the query. Everything else is the
    relation's own interface (``isinstance(rel, duckdb.DuckDBPyRelation)`` holds); methods returning a
    relation return one of these, and Arrow readers report errors while streaming the same way."""

    __slots__ = ("_rel", "_sql")

    def __init__(self, rel: duckdb.DuckDBPyRelation, sql: str):
        object.__setattr__(self, "_rel", rel)
        object.__setattr__(self, "_sql", sql)

    @property  # type: ignore[misc]
    def __class__(self) -> type:  # isinstance(rel, duckdb.DuckDBPyRelation) still holds
        return duckdb.DuckDBPyRelation

    @property
    def relation(self) -> duckdb.DuckDBPyRelation:
        """The underlying DuckDB relation (its errors are DuckDB's)."""
        return self._rel

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            out = fn(*args, **kwargs)
        except duckdb.Error as exc:
            raise _query_error(self._sql, exc) from exc
        if isinstance(out, duckdb.DuckDBPyRelation) and not isinstance(out, Relation):
            return Relation(out, self._sql)
        if isinstance(out, pa.RecordBatchReader):
            return _translated_reader(out, self._sql)
        return out

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._rel, name)
        if not callable(attr):
            return attr
        return lambda *args, **kwargs: self._call(attr, *args, **kwargs)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._rel, name, value)

    def __repr__(self) -> str:
        return cast(str, self._call(self._rel.__repr__))

    def __str__(self) -> str:
        return cast(str, self._call(self._rel.__str__))

    def __len__(self) -> int:
        return cast(int, self._call(self._rel.__len__))

    def __getitem__(self, name: str) -> Any:
        return self._call(self._rel.__getitem__, name)

    def __contains__(self, name: str) -> bool:
        return cast(bool, self._call(self._rel.__contains__, name))

    def __arrow_c_stream__(self, requested_schema: Any = None) -> Any:
        return self._call(self._rel.__arrow_c_stream__, requested_schema)


def _translated_reader(reader: pa.RecordBatchReader, sql: str) -> pa.RecordBatchReader:
    def batches() -> Any:
        try:
            yield from reader
        except (duckdb.Error, pa.ArrowException) as exc:
            raise _query_error(sql, exc) from exc
    return pa.RecordBatchReader.from_batches(reader.schema, batches())

