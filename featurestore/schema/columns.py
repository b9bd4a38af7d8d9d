"""Column declarations of a spec: entity keys and features, and the Arrow and DuckDB types they map to."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import pyarrow as pa

ScalarType = Literal["bool", "int32", "int64", "float32", "float64", "string", "timestamp"]
FeatureType = Literal["bool", "int32", "int64", "float32", "float64", "string", "timestamp", "vector"]
KeyType = Literal["int64", "string"]
Metric = Literal["cosine", "dot", "l2"]

SCALAR_TYPES: dict[str, pa.DataType] = {
    "bool": pa.bool_(),
    "int32": pa.int32(),
    "int64": pa.int64(),
    "float32": pa.float32(),
    "float64": pa.float64(),
    "string": pa.string(),
    "timestamp": pa.timestamp("us", tz="UTC"),
}
TIMESTAMP = SCALAR_TYPES["timestamp"]


@dataclass(frozen=True)
class EntityKey:
    """An entity key column: its name and type (``int64`` or ``string``)."""

    name: str
    type: KeyType = "string"

    @property
    def arrow_type(self) -> pa.DataType:
        return SCALAR_TYPES[self.type]


@dataclass(frozen=True)
class Feature:
    """One feature column: a scalar, or a vector with ``dim``, ``metric`` and ``normalized``."""

    name: str
    type: FeatureType
    dim: int | None = None
    metric: Metric = "cosine"
    normalized: bool = False
    description: str = ""

    @property
    def is_vector(self) -> bool:
        return self.type == "vector"

    @property
    def arrow_type(self) -> pa.DataType:
        if self.is_vector:
            assert self.dim is not None
            return pa.list_(pa.field("item", pa.float32()), self.dim)
        return SCALAR_TYPES[self.type]

    @property
    def storage_type(self) -> pa.DataType:
        """The type in the Delta table (Delta has no fixed-size list: vectors are stored as lists)."""
        if self.is_vector:
            return pa.list_(pa.field("element", pa.float32()))
        return self.arrow_type

    @property
    def duckdb_type(self) -> str:
        if self.is_vector:
            return f"FLOAT[{self.dim}]"
        return {
            "bool": "BOOLEAN",
            "int32": "INTEGER",
            "int64": "BIGINT",
            "float32": "FLOAT",
            "float64": "DOUBLE",
            "string": "VARCHAR",
            "timestamp": "TIMESTAMPTZ",
        }[self.type]
