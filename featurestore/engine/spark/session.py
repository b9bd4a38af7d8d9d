"""The SparkSession an engine runs on: an existing one (``SparkEngine(session=spark)``, or the active
session of a ``spark-submit`` job), or one started from :class:`SparkSettings` (``--master local[2] |
spark://host:7077 | yarn`` and ``spark.*`` settings passed through).

pyspark is imported here, late: ``import featurestore`` never pays it, and a missing extra is an
:class:`~featurestore.errors.EngineError` naming ``pip install 'featurestore[spark]'``. Spark's and
py4j's exceptions are translated to the featurestore tree by :func:`spark_errors`.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import threading
import warnings
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from featurestore import errors
from featurestore.errors import EngineError, FeatureStoreError, QueryError

#: settings a session started here gets unless the caller set them: instants in UTC, and Parquet
#: timestamps as INT64 microseconds (Spark's INT96 default makes delta-rs refuse the table)
DEFAULTS: Mapping[str, str] = {
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    "spark.ui.showConsoleProgress": "false",
}
#: set on every session an engine uses, also one it was given: they only change how Parquet is written
RUNTIME: Mapping[str, str] = {"spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS"}
_lock = threading.Lock()


@dataclass(frozen=True)
class SparkSettings:
    """How to start a session: ``master`` (None: whatever ``spark-submit`` or ``$MASTER`` configured,
    else ``local[*]``), ``conf`` (``spark.*`` settings passed through as given) and the app name."""

    master: str | None = None
    conf: tuple[tuple[str, str], ...] = field(default_factory=tuple)
    app_name: str = "featurestore"

    def __post_init__(self) -> None:
        for key, _ in self.conf:
            if not key.startswith("spark."):
                raise EngineError(f"Spark settings are spark.* keys; got {key!r}")

    @classmethod
    def parse(cls, master: str | None = None, conf: Iterable[str] | Mapping[str, Any] = (),
              app_name: str = "featurestore") -> SparkSettings:
        """From ``--master`` and ``--spark-conf key=value`` pairs (or a mapping)."""
        pairs: list[tuple[str, str]] = []
        if isinstance(conf, Mapping):
            pairs = [(str(k), str(v)) for k, v in conf.items()]
        else:
            for item in conf:
                key, sep, value = str(item).partition("=")
                if not sep or not key.strip():
                    raise EngineError(f"--spark-conf takes key=value (e.g. spark.driver.memory=4g); got {item!r}")
                pairs.append((key.strip(), value.strip()))
        return cls(master or None, tuple(pairs), app_name)


def _pyspark() -> Any:
    try:
        import pyspark
        from pyspark.sql import SparkSession
    except ImportError as exc:
        raise EngineError("the Spark engine needs pyspark: pip install 'featurestore[spark]'") from exc
    return pyspark, SparkSession


def start_session(settings: SparkSettings) -> Any:
    """A SparkSession for ``settings``: the active one when no master is asked for, else a new one (or
    the process's existing one, which Spark returns with the settings applied where it can)."""
    _, spark_session = _pyspark()
    with _lock, quiet(), spark_errors("starting Spark", EngineError):
        active = spark_session.getActiveSession()
        if active is not None and settings.master is None and not settings.conf:
            return prepare(active)
        builder = spark_session.builder.appName(settings.app_name)
        master = settings.master or os.environ.get("MASTER")
        if master:
            builder = builder.master(master)
        elif active is None and "spark.master" not in dict(settings.conf):
            builder = builder.master("local[*]")
        given = dict(settings.conf)
        local = (master or given.get("spark.master") or "local").startswith("local")
        if local and "spark.pyspark.python" not in given and not os.environ.get("PYSPARK_PYTHON"):
            # local Python workers run this interpreter (its packages: pyarrow, featurestore); pyspark
            # reads the variable when the context starts. On a cluster the executors' own Python runs.
            os.environ["PYSPARK_PYTHON"] = sys.executable
        for key, value in {**DEFAULTS, **given}.items():
            builder = builder.config(key, value)
        return prepare(builder.getOrCreate())


def prepare(session: Any) -> Any:
    """Set the runtime settings every session an engine uses needs (see :data:`RUNTIME`)."""
    with spark_errors("configuring the Spark session", EngineError):
        for key, value in RUNTIME.items():
            session.conf.set(key, value)
    return session


def is_spark_error(exc: BaseException) -> bool:
    module = type(exc).__module__ or ""
    return module.startswith(("pyspark", "py4j"))


def first_line(exc: BaseException) -> str:
    """A Spark error's message without its JVM stack trace."""
    text = str(exc).strip()
    for marker in ("\nJVM stacktrace:", "\n\tat ", "\n== SQL"):
        text = text.split(marker, 1)[0]
    lines = [line for line in text.splitlines() if line.strip()]
    return " ".join(lines[:3])[:600] or type(exc).__name__


_REMOTE = re.compile(r"\[featurestore:(\w+)\] ([^\n]*)")


def remote_error(exc: FeatureStoreError) -> FeatureStoreError:
    """``exc`` as raised on an executor: its message marked with its class, which :func:`spark_errors`
    re-raises on the driver (Spark reports a task's exception only as text)."""
    return type(exc)(f"[featurestore:{type(exc).__name__}] {exc}")


@contextlib.contextmanager
def spark_errors(what: str, kind: type[FeatureStoreError] = QueryError) -> Iterator[None]:
    """Translate Spark's (and py4j's) exceptions raised in the block to ``kind`` naming ``what``."""
    try:
        yield
    except FeatureStoreError:
        raise
    except Exception as exc:
        if not is_spark_error(exc):
            raise
        remote = _REMOTE.search(str(exc))
        if remote is not None:  # a typed error of ours, raised in a task: the same type here
            cls = getattr(errors, remote.group(1), None)
            if isinstance(cls, type) and issubclass(cls, FeatureStoreError):
                raise cls(f"{what}: {remote.group(2)}") from exc
        message = first_line(exc)
        if "JAVA_GATEWAY_EXITED" in message or "Java gateway" in message:
            raise EngineError(f"{what}: Spark could not start its JVM (is Java 17+ installed and JAVA_HOME "
                              f"set?): {message}") from exc
        raise kind(f"{what}: {message}") from exc


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """pyspark warns on every Arrow conversion that it does not fully support pandas 3; that notice
    is not our users' concern (featurestore converts through Arrow, not pandas)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="PySpark does not yet fully support", category=FutureWarning)
        warnings.filterwarnings("ignore", message=".*is_datetime64tz_dtype.*", category=DeprecationWarning)
        yield
