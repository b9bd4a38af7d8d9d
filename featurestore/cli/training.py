"""``featurestore training-set``: assemble a point-in-time-correct training set from files."""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from dataclasses import asdict
from datetime import timedelta
from typing import Any

from featurestore.cli._common import (
    CLIError,
    add_engine,
    add_memory,
    command,
    engine_of,
    open_store,
    print_json,
    print_table,
)
from featurestore.training import cache_usage, prune_cache

_DURATION = re.compile(r"^(?P<n>\d+(?:\.\d+)?)(?P<unit>us|ms|s|m|h|d|w)$")
_UNITS = {"us": "microseconds", "ms": "milliseconds", "s": "seconds", "m": "minutes", "h": "hours",
          "d": "days", "w": "weeks"}

EXAMPLE = ("featurestore training-set --spine labels.parquet --event-time label_time \\\n"
           "      --feature user_embeddings:1 --feature item_embeddings:1:embedding --ttl 7d --out train.parquet")


def register(sub: Any) -> None:
    p = command(sub, "training-set",
                "Join a spine (Parquet: keys, label time, labels) with feature groups as of each row's time; "
                "write Parquet (--out) or a versioned training dataset in the store (--save).", EXAMPLE)
    p.add_argument("--spine", required=True, nargs="+", metavar="PARQUET",
                   help="spine Parquet file(s) or glob(s): entity keys, a label time and any label columns")
    p.add_argument("--feature", required=True, action="append", metavar="NAME[:VERSION[:COL,COL]]",
                   help="a feature group to join, e.g. user_embeddings:1 or item_embeddings:1:embedding "
                        "(repeatable)")
    p.add_argument("--event-time", default="event_time", metavar="COLUMN",
                   help="the spine's label-time column (default: event_time)")
    p.add_argument("--entity-key", action="append", default=[], metavar="GROUP=COL[,COL]",
                   help="spine column(s) to join GROUP on when not named like its keys (repeatable)")
    p.add_argument("--ttl", default=None, metavar="DURATION",
                   help="ignore feature rows older than this before the label time, e.g. 7d, 12h, 90s")
    p.add_argument("--known-at", choices=["latest", "spine"], default="latest",
                   help="latest: newest commit's value per (key, event_time) (default); spine: only rows "
                        "committed by the label time (what serving could have returned then)")
    p.add_argument("--pins", default=None, metavar="JSON|FILE",
                   help='commits to read, e.g. \'{"user_embeddings:1": 12}\' or a manifest.json/pins file')
    p.add_argument("--no-prefix", action="store_true", help="do not prefix feature columns with the group name")
    out = p.add_mutually_exclusive_group(required=True)
    out.add_argument("--out", metavar="FILE", help="write the training set to this Parquet file")
    out.add_argument("--save", metavar="NAME", help="save as the next version of training dataset NAME")
    p.add_argument("--json", action="store_true", help="print the result summary as JSON")
    add_engine(p)
    add_memory(p)
    p.set_defaults(func=cmd_training_set)

    p = command(sub, "cache",
                "Show the training-set cache (raw float32 copies of each data file's vectors, written at "
                "insert, and each commit's sorted join index, written by its first training set); --prune "
                "deletes what belongs to data files that are gone, --clear all of it.",
                "featurestore cache --prune")
    what = p.add_mutually_exclusive_group()
    what.add_argument("--prune", action="store_true", help="delete cache files whose data files no longer exist")
    what.add_argument("--clear", action="store_true",
                      help="delete the whole cache (training sets rebuild what they need, once)")
    p.add_argument("--json", action="store_true", help="print as JSON")
    p.set_defaults(func=cmd_cache)


def parse_duration(text: str) -> timedelta:
    """``7d``, ``12h``, ``30m``, ``90s``, ``500ms``, ``10us`` or ``1w`` as a timedelta."""
    m = _DURATION.match(text.strip())
    if not m:
        raise CLIError(f"--ttl takes a number and a unit (us, ms, s, m, h, d, w), e.g. 7d; got {text!r}")
    return timedelta(**{_UNITS[m["unit"]]: float(m["n"])})


def _pins(text: str | None) -> dict[str, int] | None:
    if text is None:
        return None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError:
        try:
            with open(text) as f:
                doc = json.load(f)
        except (OSError, json.JSONDecodeError) as exc:
            raise CLIError(f"--pins takes JSON or a JSON file; {text!r}: {exc}") from exc
    if isinstance(doc, dict) and isinstance(doc.get("pins"), dict):  # a saved manifest
        doc = doc["pins"]
    if not isinstance(doc, dict) or not all(isinstance(v, int) for v in doc.values()):
        raise CLIError('--pins must map "name:version" to a commit number, e.g. {"user_embeddings:1": 12}')
    return doc


def cmd_training_set(args: argparse.Namespace) -> int:
    store = open_store(args)
    keys: dict[str, list[str]] = {}
    for item in args.entity_key:
        group, sep, cols = item.partition("=")
        if not sep or not group or not cols:
            raise CLIError(f"--entity-key takes GROUP=COL[,COL]; got {item!r}")
        keys[group] = cols.split(",")
    kwargs: dict[str, Any] = dict(entity_keys=keys or None, event_time=args.event_time,
                                  ttl=parse_duration(args.ttl) if args.ttl else None, known_at=args.known_at,
                                  pins=_pins(args.pins), prefix=not args.no_prefix, engine=engine_of(args))
    spine = args.spine if len(args.spine) > 1 else args.spine[0]
    t = time.perf_counter()
    if args.save:
        saved = store.save_training_set(args.save, spine, args.feature, **kwargs)
        summary = {"saved": f"{saved.name} v{saved.version}", "path": saved.path, "rows": saved.manifest["rows"],
                   "pins": saved.pins, "seconds": round(time.perf_counter() - t, 3)}
    else:
        ts = store.training_set(spine, args.feature, **kwargs)
        rows = ts.to_parquet(args.out)
        summary = {"path": args.out, "rows": rows, "pins": ts.pins, "seconds": round(time.perf_counter() - t, 3)}
    if args.json:
        print_json(summary, sys.stdout)
    else:
        print_table(["feature group", "commit"], [[k, v] for k, v in summary["pins"].items()], sys.stdout)
        print(f"\nwrote {summary['rows']:,} rows to {summary['path']} in {summary['seconds']} s"
              + (f" ({summary['saved']})" if "saved" in summary else ""), file=sys.stdout)
    return 0


def cmd_cache(args: argparse.Namespace) -> int:

    store = open_store(args)
    if args.prune or args.clear:
        files, size = prune_cache(store.catalog, everything=args.clear)
        done = {"deleted_files": files, "deleted_bytes": size}
        if args.json:
            print_json(done)
        else:
            print(f"deleted {files} cache file(s), {size / 1e6:.1f} MB")
        return 0
    usage = [asdict(u) for u in cache_usage(store.catalog)]
    if args.json:
        print_json(usage)
    elif not any(u["files"] for u in usage):
        print("the training-set cache is empty")
    else:
        print_table(["feature group", "files", "size", "orphans", "orphan size"],
                    [[u["table"], u["files"], f"{u['bytes'] / 1e6:.1f} MB", u["orphans"],
                      f"{u['orphan_bytes'] / 1e6:.1f} MB"] for u in usage])
    return 0
