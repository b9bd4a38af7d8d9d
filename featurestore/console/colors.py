"""What a projector map can be coloured by: a view's scalar columns, as a numeric ramp (numbers, times)
or a categorical palette with a legend (strings, booleans, integers with few distinct values).

Shared by the console's map (``web``) and ``featurestore plot``, so both colour a column the same way.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from featurestore.errors import InvalidQuery
from featurestore.online.view import OnlineView

ColorKind = Literal["numeric", "categorical"]
#: an integer column with at most this many distinct values among the mapped rows is a category
LOW_CARDINALITY = 12
#: categories drawn in their own colour (the most frequent); the rest share "(other)"
MAX_CATEGORIES = 12
OTHER = "(other)"
#: the categorical palette (Tableau 10 and two more), the same in the browser and in PNGs
PALETTE = ("#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7",
           "#9c755f", "#bab0ac", "#17becf", "#8c564b")
NULL_COLOR = "#999999"


@dataclass(frozen=True)
class Coloring:
    """One column's colours for the mapped rows.

    numeric: ``values`` are float64 (times as seconds since the epoch; NaN where null), ``log`` when
    they are heavy-tailed counts. categorical: ``values`` are int32 codes into ``labels`` (-1 where
    null), the most frequent category first and ``(other)`` last when there were more than
    :data:`MAX_CATEGORIES`; ``counts`` holds each label's rows.
    """

    column: str
    kind: ColorKind
    values: np.ndarray
    labels: tuple[str, ...] = ()
    counts: tuple[int, ...] = ()
    log: bool = False

    def to_json(self) -> dict[str, Any]:
        if self.kind == "numeric":
            return {"kind": "numeric", "values": np.round(self.values, 6), "log": self.log}
        return {"kind": "categorical", "codes": self.values, "labels": list(self.labels),
                "counts": list(self.counts), "palette": list(PALETTE[: len(self.labels)])}


def _numeric(t: pa.DataType) -> bool:
    return pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_timestamp(t)


def _categorical(t: pa.DataType) -> bool:
    if pa.types.is_dictionary(t):
        return _categorical(t.value_type) or pa.types.is_integer(t.value_type)
    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_boolean(t)


def color_columns(view: OnlineView) -> list[str]:
    """The view's scalar columns a map can be coloured by, in the view's order (keys excluded)."""
    return [f.name for f in view.columns.schema
            if f.name not in view.key_names and (_numeric(f.type) or _categorical(f.type))]


def coloring(view: OnlineView, column: str, rows: np.ndarray) -> Coloring:
    """The colours of ``column`` at ``rows``: a category per value for strings, booleans and integers
    with at most :data:`LOW_CARDINALITY` distinct values there; a numeric ramp otherwise."""
    columns = color_columns(view)
    if column not in columns:
        raise InvalidQuery(f"{view.name} has no scalar column {column!r} to colour by; "
                           f"columns: {', '.join(columns) or 'none'}")
    col = view.columns[column].take(pa.array(rows, pa.int64())).combine_chunks()
    if pa.types.is_dictionary(col.type):
        col = col.dictionary_decode()
    if _categorical(col.type) or (pa.types.is_integer(col.type) and _few(col)):
        return _categories(column, col)
    if pa.types.is_timestamp(col.type):
        col = pc.divide(col.cast(pa.int64()), {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}[
            col.type.unit])
    values = np.asarray(col.cast(pa.float64()).to_numpy(zero_copy_only=False), dtype=np.float64)
    return Coloring(column, "numeric", values, log=heavy_tailed(values))


def _few(col: pa.Array) -> bool:
    return len(pc.unique(col.drop_null())) <= LOW_CARDINALITY


def _categories(column: str, col: pa.Array) -> Coloring:
    """Codes for the values of ``col``: the most frequent :data:`MAX_CATEGORIES` (ties by value), the
    rest folded into ``(other)``."""
    values = col.to_pylist()
    counts = Counter(v for v in values if v is not None)
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], str(kv[0])))
    keep = ranked if len(ranked) <= MAX_CATEGORIES else ranked[: MAX_CATEGORIES - 1]
    code = {v: i for i, (v, _) in enumerate(keep)}
    other = len(keep) if len(keep) < len(ranked) else -1
    codes = np.fromiter((-1 if v is None else code.get(v, other) for v in values), np.int32, len(values))
    labels = [_label(v) for v, _ in keep]
    tallies = [n for _, n in keep]
    if other >= 0:
        labels.append(OTHER)
        tallies.append(sum(n for _, n in ranked[len(keep):]))
    return Coloring(column, "categorical", codes, tuple(labels), tuple(tallies))


def _label(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def heavy_tailed(values: np.ndarray) -> bool:
    """Non-negative values whose 98th percentile is over 10x their median (counts): coloured on a log
    scale (the console's map does the same)."""
    finite = values[np.isfinite(values)]
    if not len(finite) or finite.min() < 0:
        return False
    return bool(np.percentile(finite, 98) > 10 * max(float(np.median(finite)), 1.0))
