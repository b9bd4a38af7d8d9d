"""Choosing an engine: per store (``FeatureStore(root, engine=...)``), per call (``engine="spark"``), per
pipeline and per CLI flag (``--engine spark --master local[2]``). An engine object is used as given; a
name picks the store's DuckDB engine or one shared Spark engine per set of settings."""

from __future__ import annotations

import threading
from typing import Any

from featurestore.engine.base import Engine, EngineName, FrameEngine
from featurestore.engine.duckdb import DuckDBEngine
from featurestore.engine.spark import SparkEngine, SparkSettings
from featurestore.errors import EngineError

_lock = threading.Lock()
_spark: dict[SparkSettings, SparkEngine] = {}


def spark_engine(settings: SparkSettings | None = None) -> SparkEngine:
    """The process's Spark engine for ``settings`` (one per distinct settings, started on first use)."""
    settings = settings or SparkSettings()
    with _lock:
        engine = _spark.get(settings)
        if engine is None:
            engine = _spark[settings] = SparkEngine(settings=settings)
        return engine


def resolve(engine: Engine | EngineName | str | None, default: Engine) -> Engine:
    """``engine`` as an :class:`Engine`: None is ``default`` (the store's), ``"duckdb"`` the store's
    DuckDB engine (or a new one), ``"spark"`` the shared Spark engine."""
    if engine is None:
        return default
    if isinstance(engine, Engine):
        return engine
    if engine == "duckdb":
        return default if isinstance(default, DuckDBEngine) else DuckDBEngine()
    if engine == "spark":
        return default if isinstance(default, SparkEngine) else spark_engine()
    raise EngineError(f"unknown engine {engine!r}: use 'duckdb' or 'spark' (or an Engine object)")


def frame_engine(data: Any, default: Engine) -> FrameEngine | None:
    """The engine whose frame ``data`` is (a Spark DataFrame: an engine on its session), or None."""
    if isinstance(default, FrameEngine) and default.is_frame(data):
        return default
    if type(data).__module__.startswith("pyspark.sql") and hasattr(data, "sparkSession"):
        return SparkEngine(data.sparkSession)
    return None
