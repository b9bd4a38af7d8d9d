"""Co-occurrence pairs beyond the in-memory budget, kept and pruned in DuckDB.

Counting sums each chunk's (earlier item, later item) counts in a sparse matrix in Python. The number
of distinct item pairs grows with the events until every pair that ever co-occurs has been seen (at
most items²), so on a large catalogue that matrix, not the events, would set the memory. Past
``max_pairs`` distinct pairs the partial sums go to a DuckDB table instead (appended, then summed by a
``GROUP BY`` that spills to DuckDB's temporary directory), and what comes back to Python is each item's
strongest co-occurrences: a pair is kept when it is among the ``per_item`` largest of its row or of its
column (ties broken by the smaller item code), so at most ``2 x items x per_item`` pairs, with
``per_item = max(1, max_pairs // (2 x items))``: the kept pairs fit the same budget.
"""

from __future__ import annotations

import contextlib
import itertools
import os
from typing import TYPE_CHECKING

import duckdb
import numpy as np
import pyarrow as pa

from featurestore.engine.counting import MAX_PAIRS, per_item
from featurestore.engine.duckdb_events import EVENTS_MEMORY_LIMIT, ReadSettings, _lower_limit, connect
from featurestore.errors import EventsError
from featurestore.storage.duck import literal

if TYPE_CHECKING:
    import scipy.sparse as sp

#: DuckDB's memory limit for the appended pairs while counting goes on (the running sums are in Python)
APPEND_MEMORY_LIMIT = "512MB"
_serial = itertools.count()
__all__ = ["MAX_PAIRS", "PairSpill", "per_item"]


class PairSpill:
    """Partial co-occurrence sums appended to a DuckDB table, then summed and pruned there.

    ``con``: a DuckDB connection with the memory limit and temporary directory to spill within (used
    by this object alone until :meth:`close`)."""

    def __init__(self, con: duckdb.DuckDBPyConnection, n_items: int, *, owns_connection: bool = False,
                 sum_memory_limit: str | None = None):
        self.con, self.n_items, self.owns_connection = con, n_items, owns_connection
        self.sum_memory_limit = sum_memory_limit
        self.table = f"_fs_pairs_{next(_serial)}"
        self.rows = 0
        self._sql(f"CREATE TABLE {self.table} (a INTEGER, b INTEGER, v DOUBLE)")  # partial sums, unrounded

    @classmethod
    def open(cls, settings: ReadSettings, n_items: int) -> PairSpill:
        """A spill in a private DuckDB database with the event reads' memory limit, spilling to a folder
        of its own (inside ``settings.temp_directory`` when set), removed on :meth:`close`."""
        temp = None
        if settings.temp_directory:
            temp = os.path.join(settings.temp_directory, f"pairs-{os.getpid()}-{next(_serial)}")
        limit = settings.memory_limit or EVENTS_MEMORY_LIMIT
        con = connect(ReadSettings(memory_limit=limit, temp_directory=temp))
        with contextlib.suppress(duckdb.Error):
            con.sql("SET preserve_insertion_order = false")
        # while counting goes on, Python holds the running sums: the appended pairs spill early instead
        _lower_limit(con, APPEND_MEMORY_LIMIT)
        return cls(con, n_items, owns_connection=True, sum_memory_limit=limit)

    def _sql(self, sql: str) -> duckdb.DuckDBPyRelation | None:
        try:
            return self.con.sql(sql)
        except duckdb.Error as exc:
            raise EventsError(f"counting co-occurrences in DuckDB: {exc}") from exc

    def add(self, counts: sp.spmatrix) -> None:
        """Append a partial count matrix (duplicates may repeat across calls; they are summed later)."""
        csr = counts.tocsr()  # no copy when it is one already: the rows are the only new array (4 B a pair)
        rows = np.repeat(np.arange(csr.shape[0], dtype=np.int32), np.diff(csr.indptr))
        part = pa.table({"a": pa.array(rows), "b": pa.array(csr.indices.astype(np.int32, copy=False)),
                         "v": pa.array(csr.data.astype(np.float64, copy=False))})
        del rows, csr
        name = f"{self.table}_in"
        self.con.register(name, part)
        try:
            self._sql(f"INSERT INTO {self.table} SELECT a, b, v FROM {name}")
        finally:
            self.con.unregister(name)
        self.rows += part.num_rows

    def pruned(self, keep: int, *, directed: bool) -> sp.csr_matrix:
        """The summed matrix (plus its transpose unless ``directed``) with, per item, only the ``keep``
        largest entries of its row and of its column (their union)."""
        import scipy.sparse

        t, summed = self.table, f"{self.table}_sum"
        if self.sum_memory_limit:  # counting is done: the sums get the whole limit back
            self._sql(f"SET memory_limit = {literal(self.sum_memory_limit)}")
        source = t if directed else f"(SELECT a, b, v FROM {t} UNION ALL SELECT b, a, v FROM {t})"
        self._sql(f"CREATE TABLE {summed} AS SELECT a, b, sum(v::DOUBLE)::FLOAT AS v FROM {source} GROUP BY a, b")
        self._sql(f"DROP TABLE {t}")
        sql = (f"SELECT a, b, v FROM {summed} QUALIFY row_number() OVER (PARTITION BY a ORDER BY v DESC, b) "
               f"<= {keep} OR row_number() OVER (PARTITION BY b ORDER BY v DESC, a) <= {keep}")
        rel = self._sql(sql)
        assert rel is not None
        try:
            got = rel.to_arrow_table()
        except duckdb.Error as exc:
            raise EventsError(f"counting co-occurrences in DuckDB: {exc}") from exc
        n = self.n_items
        a, b = got["a"].to_numpy().astype(np.int32), got["b"].to_numpy().astype(np.int32)
        v = got["v"].to_numpy().astype(np.float32)
        del got
        return scipy.sparse.csr_matrix((v, (a, b)), shape=(n, n), dtype=np.float32)

    def close(self) -> None:
        for name in (self.table, f"{self.table}_sum"):
            with contextlib.suppress(duckdb.Error):
                self.con.sql(f"DROP TABLE IF EXISTS {name}")
        if self.owns_connection:
            with contextlib.suppress(duckdb.Error):
                self.con.close()
