"""Shared pieces of the CLI: the --root option, opening the store, and printing tables."""

from __future__ import annotations

import argparse
import json
import math
import sys
from datetime import datetime
from typing import Any, TextIO

from featurestore.catalog import DEFAULT_ROOT, ROOT_ENV
from featurestore.store import FeatureStore


class CLIError(Exception):
    """A usage error the CLI reports in one line (exit code 2)."""


def add_root(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--root", default=None, metavar="PATH",
                        help=f"store root folder or URI (default: ${ROOT_ENV}, else {DEFAULT_ROOT})")


def command(sub: Any, name: str, help: str, example: str) -> argparse.ArgumentParser:
    """Add a sub-command whose help ends with an example."""
    p = sub.add_parser(name, help=help, description=help, epilog=f"example:\n  {example}",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    add_root(p)
    return p


def open_store(args: argparse.Namespace) -> FeatureStore:
    return FeatureStore(args.root, echo=getattr(args, "verbose", False))


def parse_as_of(value: str | None) -> int | datetime | None:
    """A commit number or an ISO-8601 time."""
    if value is None:
        return None
    if value.isdigit():
        return int(value)
    try:
        return datetime.fromisoformat(value)
    except ValueError as exc:
        raise CLIError(f"--as-of takes a commit number or an ISO-8601 time; got {value!r}") from exc


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
