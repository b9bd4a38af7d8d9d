"""Bring one batch into a feature group's shape, or say exactly why it does not fit.

:func:`conform` accepts a pandas DataFrame, a pyarrow Table or RecordBatch, or a Parquet path, and
returns an Arrow table with the spec's columns in order and types: keys cast safely, event times in
UTC microseconds (naive times are taken as UTC), vectors as ``FixedSizeList<float32>[dim]``. It raises
an :class:`~featurestore.errors.InvalidData` subclass naming the column and the first offending rows.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from featurestore.errors import BadVector, DuplicateKey, NullKey, SchemaMismatch, StorageError
from featurestore.keycodes import key_codes
from featurestore.schema import TIMESTAMP, Feature, FeatureGroupSpec

_SHOW = 5  # offending rows named in a message


def to_arrow(data: Any) -> pa.Table:
    """A pyarrow Table from a DataFrame, Table, RecordBatch or Parquet path."""
    if isinstance(data, pa.Table):
        return data
    if isinstance(data, pa.RecordBatch):
        return pa.Table.from_batches([data])
    if isinstance(data, str | os.PathLike):
        import pyarrow.parquet as pq

        try:
            return pq.read_table(os.fspath(data))
        except (OSError, pa.ArrowInvalid) as exc:
            raise StorageError(f"cannot read Parquet {os.fspath(data)!r}: {exc}") from exc
    try:
        import pandas as pd
    except ImportError:  # pragma: no cover - pandas is a dependency
        pd = None
    if pd is not None and isinstance(data, pd.DataFrame):
        try:
            return pa.Table.from_pandas(data, preserve_index=False)
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise SchemaMismatch(f"cannot convert the DataFrame to Arrow: {exc}") from exc
    if hasattr(data, "__arrow_c_stream__"):
        return pa.table(data)
    raise SchemaMismatch(
        f"expected a pandas DataFrame, a pyarrow Table or a Parquet path; got {type(data).__name__}"
    )


def _rows(mask: np.ndarray) -> list[int]:
    return np.flatnonzero(mask)[:_SHOW].tolist()


def to_utc(value: datetime) -> datetime:
    """A timezone-aware UTC datetime; naive values are taken as UTC."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def timestamps(col: pa.ChunkedArray | pa.Array, name: str) -> pa.ChunkedArray | pa.Array:
    """Cast a column to UTC microsecond timestamps (naive values taken as UTC)."""
    t = col.type
    try:
        if pa.types.is_timestamp(t):
            if t.tz is None:
                col = pc.assume_timezone(col.cast(pa.timestamp("us")), "UTC")
            return col.cast(TIMESTAMP)
        if pa.types.is_date(t):
            return pc.assume_timezone(col.cast(pa.timestamp("us")), "UTC")
        if pa.types.is_string(t) or pa.types.is_large_string(t):
            parsed = pc.strptime(col, format="%Y-%m-%dT%H:%M:%S%z", unit="us", error_is_null=True)
            if parsed.null_count > col.null_count:
                parsed = pc.cast(col, pa.timestamp("us"))
                return pc.assume_timezone(parsed, "UTC")
            return parsed.cast(TIMESTAMP)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise SchemaMismatch(f"column {name!r}: cannot read as timestamps: {exc}", column=name) from exc
    raise SchemaMismatch(f"column {name!r} must hold timestamps; got {t}", column=name)


def vectors(col: pa.ChunkedArray, feature: Feature) -> pa.FixedSizeListArray:
    """Check and convert a column of vectors: non-null, exactly ``dim`` finite floats each."""
    name, dim = feature.name, feature.dim
    assert dim is not None
    # a private copy (combine_chunks copies even one chunk): the batch must not share the caller's
    # buffers, which may change once insert returns while the vector cache is still being written
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    t = arr.type
    if not (pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)):
        raise SchemaMismatch(f"column {name!r} must hold vectors (lists of floats); got {t}", column=name)
    vt = t.value_type
    if not (pa.types.is_floating(vt) or pa.types.is_null(vt)):
        raise SchemaMismatch(f"column {name!r}: vector elements must be floats; got {vt}", column=name)
    if arr.null_count:
        mask = arr.is_null().to_numpy(zero_copy_only=False)
        raise BadVector(f"column {name!r}: {arr.null_count} null vector(s), rows {_rows(mask)}",
                        column=name, rows=_rows(mask))
    if pa.types.is_fixed_size_list(t):
        lengths_ok = t.list_size == dim
        if not lengths_ok:
            raise BadVector(f"column {name!r}: vectors have dimension {t.list_size}, expected {dim}",
                            column=name)
        values = arr.values.slice(arr.offset * dim, len(arr) * dim)
    else:
        lengths = pc.list_value_length(arr).to_numpy(zero_copy_only=False)
        bad = lengths != dim
        if bad.any():
            rows = _rows(bad)
            got = sorted(set(lengths[bad].tolist()))[:_SHOW]
            raise BadVector(
                f"column {name!r}: {int(bad.sum())} vector(s) do not have dimension {dim} "
                f"(rows {rows}; lengths seen {got})", column=name, rows=rows)
        values = pc.list_flatten(arr)
    if values.null_count:
        flat_null = values.is_null().to_numpy(zero_copy_only=False).reshape(len(arr), dim).any(axis=1)
        raise BadVector(f"column {name!r}: vectors with null elements at rows {_rows(flat_null)}",
                        column=name, rows=_rows(flat_null))
    np_values = values.to_numpy(zero_copy_only=False)
    if np_values.dtype != np.float32:
        with np.errstate(over="ignore"):
            np_values = np_values.astype(np.float32)
    finite = np.isfinite(np_values)
    if not finite.all():
        bad_rows = ~finite.reshape(len(arr), dim).all(axis=1)
        raise BadVector(
            f"column {name!r}: {int(bad_rows.sum())} vector(s) hold NaN or infinity "
            f"(or overflow float32), rows {_rows(bad_rows)}", column=name, rows=_rows(bad_rows))
    return pa.FixedSizeListArray.from_arrays(pa.array(np_values, pa.float32()), dim)


def conform(spec: FeatureGroupSpec, data: Any, *, cutoff: datetime | None = None) -> pa.Table:
    """Check ``data`` against ``spec`` and return it in the spec's Arrow schema (see module doc)."""
    table = to_arrow(data)
    names = table.column_names
    dup_cols = sorted({c for c in names if names.count(c) > 1})
    if dup_cols:
        raise SchemaMismatch(f"column(s) given twice: {', '.join(dup_cols)}")
    if spec.event_time not in names and cutoff is not None:
        table = table.append_column(spec.event_time, pa.repeat(pa.scalar(to_utc(cutoff), TIMESTAMP), table.num_rows))
    missing = [c for c in spec.columns if c not in table.column_names]
    if missing:
        hint = " (or pass cutoff= to stamp every row)" if missing == [spec.event_time] else ""
        raise SchemaMismatch(f"{spec.key}: missing column(s) {', '.join(missing)}{hint}")
    extra = [c for c in table.column_names if c not in spec.columns]
    if extra:
        raise SchemaMismatch(
            f"{spec.key}: unexpected column(s) {', '.join(extra)}; the spec has {', '.join(spec.columns)}"
        )

    if table.num_rows == 0:  # no values to check or convert (a DataFrame without rows has no real types)
        return spec.arrow_schema().empty_table()
    out: list[pa.Array | pa.ChunkedArray] = []
    for key in spec.entity_keys:
        col = table[key.name]
        if col.null_count:
            mask = col.is_null().to_numpy(zero_copy_only=False)
            raise NullKey(f"key column {key.name!r}: {col.null_count} null(s), rows {_rows(mask)}",
                          column=key.name, rows=_rows(mask))
        out.append(_cast(col, key.arrow_type, key.name))
    et = table[spec.event_time]
    if et.null_count:
        mask = et.is_null().to_numpy(zero_copy_only=False)
        raise NullKey(f"event time {spec.event_time!r}: {et.null_count} null(s), rows {_rows(mask)}",
                      column=spec.event_time, rows=_rows(mask))
    out.append(timestamps(et, spec.event_time))
    for feature in spec.features:
        col = table[feature.name]
        if feature.is_vector:
            out.append(vectors(col, feature))
        elif feature.type == "timestamp":
            out.append(timestamps(col, feature.name))
        else:
            out.append(_cast(col, feature.arrow_type, feature.name))
    result = pa.Table.from_arrays(out, schema=spec.arrow_schema())
    check_unique(spec, result)
    return result


def _is_text(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t) or (
        pa.types.is_dictionary(t) and _is_text(t.value_type))


def _cast(col: pa.ChunkedArray, to: pa.DataType, name: str) -> pa.ChunkedArray:
    """``col`` as ``to`` where that loses nothing: integers widen, integers become string keys, floats
    change width. Text is never parsed into numbers ("5000050" for an int64 key is refused: ids that
    arrive as text usually mean a wrong column or a wrong spec)."""
    if col.type == to:
        return col
    if pa.types.is_string(to) and not (_is_text(col.type) or pa.types.is_integer(col.type)):
        raise SchemaMismatch(f"column {name!r} must hold {to}; got {col.type}", column=name)
    if not pa.types.is_string(to) and _is_text(col.type):
        raise SchemaMismatch(f"column {name!r} must hold {to}; got text ({col.type}): convert it first "
                             f"(text is never parsed into {to})", column=name)
    try:
        return col.cast(to, safe=True)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
        raise SchemaMismatch(f"column {name!r} must hold {to}; got {col.type} ({exc})", column=name) from exc


def check_unique(spec: FeatureGroupSpec, table: pa.Table) -> None:
    """Raise :class:`~featurestore.errors.DuplicateKey` when one key appears twice for one event time."""
    found = duplicated(spec, table)
    if found is not None:
        mask, n_keys = found
        raise duplicate_key(spec, n_keys, table, int(np.flatnonzero(mask)[0]))


def duplicated(spec: FeatureGroupSpec, table: pa.Table) -> tuple[np.ndarray, int] | None:
    """The rows of ``table`` whose (keys..., event_time) appears more than once, and how many such
    combinations there are; None when every row's is unique."""
    cols = [*spec.key_names, spec.event_time]
    if table.num_rows < 2:
        return None
    import pandas as pd

    # the codes are kept with the batch: validation checks the same uniqueness on them
    combined = key_codes(table, cols).combined
    index = pd.Index(combined)
    if index.is_unique:
        return None
    dup = index.duplicated(keep=False)
    return dup, len(np.unique(combined[dup]))


def duplicate_key(spec: FeatureGroupSpec, n_keys: int, table: pa.Table, row: int) -> DuplicateKey:
    """The error for ``n_keys`` repeated (keys..., event_time), ``table``'s row ``row`` the example."""
    cols = [*spec.key_names, spec.event_time]
    example = {c: table[c][row].as_py() for c in cols}
    return DuplicateKey(
        f"{spec.key}: {n_keys} key(s) appear more than once for one {spec.event_time}, "
        f"e.g. {example}", column=",".join(cols))
