"""The SQL of a training set: per feature group, its commit's narrow rows (keys, event time, ingestion
time, scalar features, a row position for vectors) made unique per (key, join time), then one ASOF LEFT
JOIN per group on the spine's keys and time, in spine order. Only the join's inputs go through the
joins: the spine's other columns are attached afterwards, and the vectors gathered by row position.
A group's rows come from its sorted join cache when there is one (:mod:`featurestore.training.join_cache`),
else straight from its Parquet files. This is DuckDB SQL; see :mod:`featurestore.training` for the semantics."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any, Literal

import pyarrow as pa

from featurestore.errors import StorageError
from featurestore.schema import FeatureGroupSpec
from featurestore.storage.duck import INGESTED_AT, literal, quote

KnownAt = Literal["latest", "spine"]
_ROW = "__fs_row"  # the spine's row ordinal
_TIME = "__fs_time"  # the spine's label time as TIMESTAMPTZ
_VIRTUAL = {"file_index", "file_row_number", "filename"}  # DuckDB's virtual columns (a real column hides one)


@dataclass(frozen=True)
class JoinGroup:
    """A resolved feature group of one training set: spec, commit read, spine columns it joins on."""

    key: str  # "name:version"
    spec: FeatureGroupSpec
    commit: int
    files: tuple[str, ...]
    offsets: tuple[int, ...]  # global row position of each file's first row (+ the total)
    disjoint: bool  # files' event_time ranges do not overlap: no (key, event_time) is written twice
    spine_keys: tuple[str, ...]  # spine columns matched to spec.key_names, in order
    columns: tuple[str, ...]  # feature group columns taken
    output: tuple[str, ...]  # their names in the result
    ttl: timedelta | None
    cache: str | None = None  # placeholder of the sorted join cache relation ("{cache0}"), if one is used
    key32: bool = False  # the index stores the (single, int64) key as int32: the spine's is cast to match

    @property
    def vector_columns(self) -> list[str]:
        vectors = {f.name for f in self.spec.vector_features}
        return [c for c in self.columns if c in vectors]


def _file_layout(files: list[str], event_time: str, filesystem: Any = None) -> tuple[tuple[int, ...], bool]:
    """Each file's first global row position (plus the total), and whether the files' event_time ranges
    are pairwise disjoint (then no (key, event_time) can repeat: one commit rejects duplicates).
    ``filesystem``: where object URIs (``s3://``) are read from (only their footers are fetched)."""
    import pyarrow.parquet as pq

    offsets, ranges, known, kinds = [0], [], True, set()
    for f in files:
        try:
            if filesystem is not None and "://" in f:
                with filesystem.open_input_file(f.split("://", 1)[1]) as raw:
                    meta = pq.ParquetFile(raw).metadata
            else:
                meta = pq.ParquetFile(f).metadata
        except (OSError, pa.ArrowException) as exc:
            raise StorageError(f"cannot read the footer of {f}: {exc}") from exc
        offsets.append(offsets[-1] + meta.num_rows)
        col = meta.schema.names.index(event_time) if event_time in meta.schema.names else None
        for rg in range(meta.num_row_groups):
            stats = meta.row_group(rg).column(col).statistics if col is not None else None
            if stats is None or not stats.has_min_max:
                known = False
            elif meta.row_group(rg).num_rows:  # raw values: .min of a timestamp would import pandas
                kinds.add((stats.physical_type, str(stats.logical_type)))
                ranges.append((len(offsets), stats.min_raw, stats.max_raw))
    if not known or len(kinds) > 1:  # files of different time units cannot be compared raw
        return tuple(offsets), False
    ranges.sort(key=lambda r: r[1])
    disjoint = all(a[2] < b[1] or a[0] == b[0] for a, b in itertools.pairwise(ranges))
    return tuple(offsets), disjoint


def _offsets_sql(files: Sequence[str], offsets: Sequence[int]) -> str:
    """A tiny relation (file, off): the global row position of each file's first row."""
    rows = ", ".join(f"({literal(f)}, {int(o)})" for f, o in zip(files, offsets))
    return f"(SELECT * FROM (VALUES {rows}) v(file, off))"


def _source_sql(i: int, g: JoinGroup) -> str:
    """The narrow rows of one group's commit: keys, event time, ingestion time, scalar features and
    (for vector features) the row position, never the vectors themselves."""
    spec = g.spec
    keys = [f"s.{quote(k)} AS __k{i}_{j}" for j, k in enumerate(spec.key_names)]
    vectors = set(g.vector_columns)
    vals = [f"s.{quote(c)} AS __c{i}_{j}" for j, c in enumerate(g.columns) if c not in vectors]
    if vectors:
        vals.append(f"o.off + s.file_row_number AS __p{i}")
    e = quote(spec.event_time)
    cols = ", ".join([*keys, f"s.{e} AS __e{i}", f"s.{INGESTED_AT} AS __i{i}", *vals])
    if not g.files:
        types = {**{k.name: "VARCHAR" if k.type == "string" else "BIGINT" for k in spec.entity_keys},
                 spec.event_time: "TIMESTAMPTZ", INGESTED_AT: "TIMESTAMPTZ",
                 **{f.name: f.duckdb_type for f in spec.features}}
        stub = ", ".join(f"CAST(NULL AS {t}) AS {quote(c)}" for c, t in types.items())
        return (f"SELECT {cols} FROM (SELECT {stub}, 0::BIGINT AS file_row_number) s, "
                f"(SELECT 0::BIGINT AS off) o WHERE false")
    files = ", ".join(literal(f) for f in g.files)
    if not _VIRTUAL & {spec.event_time, *spec.key_names, *(f.name for f in spec.features)}:
        # DuckDB's virtual columns name each row's file and row: no join on file names needed
        starts = ", ".join(str(int(o)) for o in g.offsets[:-1])
        position = f"list_extract([{starts}]::BIGINT[], s.file_index::BIGINT + 1) + s.file_row_number"
        cols = cols.replace("o.off + s.file_row_number", position)
        return f"SELECT {cols} FROM read_parquet([{files}]) s WHERE s.{e} IS NOT NULL"
    return (f"SELECT {cols} FROM read_parquet([{files}], file_row_number = true, filename = true) s "
            f"JOIN {_offsets_sql(g.files, g.offsets)} o ON o.file = s.filename WHERE s.{e} IS NOT NULL")


def join_cache_columns(spec: FeatureGroupSpec) -> tuple[str, ...]:
    """The columns a join cache holds, in :func:`join_cache_sql`'s naming: every scalar feature."""
    vectors = {f.name for f in spec.vector_features}
    return tuple(f.name for f in spec.features if f.name not in vectors)


def join_cache_sql(g: JoinGroup) -> str:
    """All narrow rows of ``g``'s commit (keys, event time, ingestion time, every scalar feature, the
    row position), sorted by (keys, event time): what a join cache stores. Columns are named as
    :func:`_source_sql` names them for group 0 with every scalar feature selected (``__k0_<j>``,
    ``__e0``, ``__i0``, ``__c0_<j>``, ``__p0``)."""
    full = replace(g, columns=(*join_cache_columns(g.spec), *(f.name for f in g.spec.vector_features[:1])))
    order = ", ".join([*(f"__k0_{j}" for j in range(len(g.spec.key_names))), "__e0"])
    return f"SELECT * FROM ({_source_sql(0, full)}) ORDER BY {order}"


def _cached_sql(i: int, g: JoinGroup) -> str:
    """``_source_sql(i, g)`` over the group's join cache (``g.cache``) instead of its Parquet files."""
    stored = join_cache_columns(g.spec)
    cols = [f"__k0_{j} AS __k{i}_{j}" for j in range(len(g.spec.key_names))]
    cols += [f"__e0 AS __e{i}", f"__i0 AS __i{i}"]
    vectors = set(g.vector_columns)
    for j, c in enumerate(g.columns):
        if c not in vectors:
            cols.append(f"{'__e0' if c == g.spec.event_time else f'__c0_{stored.index(c)}'} AS __c{i}_{j}")
    if vectors:
        cols.append(f"__p0 AS __p{i}")
    return f"SELECT {', '.join(cols)} FROM {g.cache}"


def _group_cte(i: int, g: JoinGroup, known_at: KnownAt) -> str:
    """The feature rows of one group as the ASOF join's right side: unique per (key, join time)."""
    kcols = ", ".join(f"__k{i}_{j}" for j in range(len(g.spec.key_names)))
    src = _cached_sql(i, g) if g.cache else _source_sql(i, g)
    if known_at == "latest":
        if g.disjoint:  # no (key, event_time) appears twice: nothing to dedupe
            return f"g{i} AS (SELECT *, __e{i} AS __t{i} FROM ({src}))"
        # one row per (key, event_time): the newest commit's (greatest _ingested_at)
        return (f"g{i} AS (SELECT *, __e{i} AS __t{i} FROM ({src}) QUALIFY row_number() OVER "
                f"(PARTITION BY {kcols}, __e{i} ORDER BY __i{i} DESC NULLS LAST) = 1)")
    # known_at="spine": a row is visible from greatest(event_time, _ingested_at); what serving returned
    # at time t is the visible row with the greatest (event_time, _ingested_at). Keep only the rows that
    # raise that running maximum (in visibility order), one per (key, visible-from): an ASOF join on
    # visible-from then yields exactly the state at t.
    order = f"{{'e': __e{i}, 'i': __i{i}}}"
    return (
        f"g{i}_raw AS (SELECT *, greatest(__e{i}, __i{i}) AS __t{i} FROM ({src}) WHERE __i{i} IS NOT NULL), "
        f"g{i}_run AS (SELECT *, max({order}) OVER (PARTITION BY {kcols} ORDER BY __t{i}, __e{i}, __i{i} "
        f"ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS __m{i} FROM g{i}_raw), "
        f"g{i} AS (SELECT * EXCLUDE (__m{i}) FROM g{i}_run WHERE __m{i} IS NULL OR {order} > __m{i} "
        f"QUALIFY row_number() OVER (PARTITION BY {kcols}, __t{i} ORDER BY __e{i} DESC, __i{i} DESC) = 1)"
    )


def build_sql(groups: list[JoinGroup], event_time: str, known_at: KnownAt) -> str:
    """The whole query: spine -> one ASOF LEFT JOIN per group -> the groups' columns in spine order.
    ``{spine}`` is a placeholder for the registered spine relation, ``{cache<i>}`` for group i's join
    index; only the spine's keys and time enter the joins (its other columns are not carried through
    them), and vector columns come out as row positions."""
    needed = dict.fromkeys([k for g in groups if not g.key32 for k in g.spine_keys])
    # a key that does not fit in int32 matches nothing in an int32 index: TRY_CAST makes it NULL
    narrowed = [f"TRY_CAST(s0.{quote(g.spine_keys[0])} AS INTEGER) AS __s{i}" for i, g in enumerate(groups) if g.key32]
    spine = ", ".join([*(f"s0.{quote(c)}" for c in needed), *narrowed, f"s0.{_ROW}"])
    ctes = [f"s AS (SELECT {spine}, CAST(s0.{quote(event_time)} AS TIMESTAMPTZ) AS {_TIME} FROM {{spine}} s0)"]
    joins, select = [], []
    for i, g in enumerate(groups):
        ctes.append(_group_cte(i, g, known_at))
        on = (f"s.__s{i} = g{i}.__k{i}_0" if g.key32 else
              " AND ".join(f"s.{quote(sk)} = g{i}.__k{i}_{j}" for j, sk in enumerate(g.spine_keys)))
        joins.append(f"ASOF LEFT JOIN g{i} ON {on} AND s.{_TIME} >= g{i}.__t{i}")
        vectors = set(g.vector_columns)
        for j, (col, out) in enumerate(zip(g.columns, g.output)):
            value = f"g{i}.__p{i}" if col in vectors else f"g{i}.__c{i}_{j}"
            if g.ttl is not None:
                micros = int(g.ttl / timedelta(microseconds=1))
                value = (f"CASE WHEN g{i}.__e{i} >= s.{_TIME} - to_microseconds({micros}) "
                         f"THEN {value} END")
            select.append(f"{value} AS {quote(out)}")
    return (f"WITH {', '.join(ctes)} SELECT {', '.join(select)} FROM s {' '.join(joins)} "
            f"ORDER BY s.{_ROW}")
