"""Shared pieces of the CLI: the --root option, opening the store, and printing tables."""

from __future__ import annotations

import argparse
import json
import math
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

from featurestore.catalog import DEFAULT_ROOT, ROOT_ENV, STORE_MARKER
from featurestore.engine.base import Engine
from featurestore.engine.duckdb_pairs import MAX_PAIRS
from featurestore.engine.spark import SparkEngine, SparkSettings
from featurestore.store import FeatureStore


class CLIError(Exception):
    """A usage error the CLI reports in one line (exit code 2)."""


ROOT_HELP = f"store root folder or URI (default: ${ROOT_ENV}, else {DEFAULT_ROOT})"


def add_root(parser: argparse.ArgumentParser, *, top: bool = False) -> None:
    """``--root``, before or after the sub-command (after wins; a sub-command's is unset unless given)."""
    parser.add_argument("--root", default=None if top else argparse.SUPPRESS, metavar="PATH", help=ROOT_HELP)


def command(sub: Any, name: str, help: str, example: str) -> argparse.ArgumentParser:
    """Add a sub-command whose help ends with an example."""
    p = sub.add_parser(name, help=help, description=help, epilog=f"example:\n  {example}",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    add_root(p)
    return p


def add_engine(parser: argparse.ArgumentParser) -> None:
    """``--engine duckdb|spark``, ``--master`` and ``--spark-conf key=value`` (repeatable)."""
    g = parser.add_argument_group("engine")
    g.add_argument("--engine", choices=["duckdb", "spark"], default=None,
                   help="what scans the data: duckdb (default, in this process) or spark (the spark extra)")
    g.add_argument("--master", default=None, metavar="URL",
                   help="Spark master: local[2], spark://host:7077, yarn, ... (default: spark-submit's, else "
                        "local[*]); implies --engine spark")
    g.add_argument("--spark-conf", action="append", default=[], metavar="KEY=VALUE",
                   help="a spark.* setting passed to the session, e.g. spark.driver.memory=4g (repeatable)")


def engine_of(args: argparse.Namespace) -> Engine | None:
    """The engine ``--engine``/``--master``/``--spark-conf`` ask for (None: the store's default)."""
    spark = args.engine == "spark" or args.master is not None or bool(args.spark_conf)
    if args.engine == "duckdb" and spark:
        raise CLIError("--master and --spark-conf are Spark settings: use them with --engine spark")
    if not spark:
        return None
    return SparkEngine(settings=SparkSettings.parse(args.master, args.spark_conf), max_pairs=_max_pairs(args))
def add_memory(p: argparse.ArgumentParser) -> None:
    """``--memory-limit`` and ``--temp-directory``: DuckDB's memory bound and where it spills."""
    p.add_argument("--memory-limit", metavar="SIZE", default=None,
                   help="DuckDB's memory limit, e.g. 4GB (pipelines' event reads default to 2GB; beyond it DuckDB "
                        "spills to --temp-directory)")
    p.add_argument("--temp-directory", metavar="DIR", default=None,
                   help="where DuckDB spills beyond --memory-limit (default: a folder in the system temporary "
                        "directory, removed afterwards)")
    p.add_argument("--max-pairs", metavar="N", type=int, default=None,
                   help="distinct item pairs co-occurrence counting keeps in memory; beyond them each item keeps "
                        "only its strongest pairs, counted in DuckDB (default 50000000; 0 = no bound)")


def open_store(args: argparse.Namespace, *, create: bool = False) -> FeatureStore:
    """The store at ``--root``. Unless the command creates stores (``create``), a folder that holds no
    store is refused, naming it: a mistyped root must not look like an empty store."""
    store = FeatureStore(getattr(args, "root", None), echo=getattr(args, "verbose", False),
                         memory_limit=getattr(args, "memory_limit", None),
                         temp_directory=getattr(args, "temp_directory", None), max_pairs=_max_pairs(args))
    if not create and not store.catalog.is_store():
        raise CLIError(f"{store.root.uri} is not a feature store (no {STORE_MARKER} there): check --root or "
                       f"${ROOT_ENV}, or create one with `featurestore init --root {store.root.uri}`")
    return store


def _max_pairs(args: argparse.Namespace) -> int | None:
    value = getattr(args, "max_pairs", None)
    if value is None:
        return MAX_PAIRS
    if value < 0:
        raise CLIError(f"--max-pairs must be >= 0 (0: no bound); got {value}")
    return value or None


def parse_commit(value: str | None, flag: str = "--commit") -> int | None:
    """A commit number (None when not given)."""
    if value is None:
        return None
    if not value.strip().isdigit():
        raise CLIError(f"{flag} takes a commit number (0, 1, ...); got {value!r} "
                       f"(for a wall-clock time use {flag}-time)")
    return int(value)


def parse_time(value: str | None, flag: str) -> datetime | None:
    """An ISO-8601 time (naive = UTC; None when not given)."""
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError as exc:
        raise CLIError(f"{flag} takes an ISO-8601 time such as 2026-11-01 or 2026-11-01T06:00:00+00:00; "
                       f"got {value!r}") from exc
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def commit_options(p: argparse.ArgumentParser, what: str = "the newest commit") -> None:
    """``--commit N`` / ``--commit-time T``: which commit of a feature group to use."""
    at = p.add_mutually_exclusive_group()
    at.add_argument("--commit", default=None, metavar="N", help=f"a commit number (default: {what})")
    at.add_argument("--commit-time", default=None, metavar="TIME",
                    help="an ISO-8601 wall-clock time: the newest commit at or before it")


def fmt(value: Any, width: int = 48) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, float):
        return f"{value:.6g}" if math.isfinite(value) else str(value)
    if isinstance(value, list | tuple):
        head = ", ".join(fmt(v, 12) for v in value[:4])
        text = f"[{head}{', …' if len(value) > 4 else ''}]" + (f" ({len(value)})" if len(value) > 4 else "")
        return text
    if isinstance(value, datetime):
        return value.isoformat()
    text = str(value)
    return text if len(text) <= width else text[: width - 1] + "…"


def print_table(headers: list[str], rows: list[list[Any]], out: TextIO | None = None) -> None:
    """A plain aligned text table."""
    out = out or sys.stdout
    cells = [[fmt(v) for v in row] for row in rows]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip(), file=out)
    print("  ".join("-" * w for w in widths), file=out)
    for r in cells:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip(), file=out)


def print_json(doc: Any, out: TextIO | None = None) -> None:
    out = out or sys.stdout
    print(json.dumps(doc, indent=2, default=str), file=out)
