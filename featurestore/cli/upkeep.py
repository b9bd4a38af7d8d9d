"""Upkeep commands: vacuum, compact, check (see :mod:`featurestore.operations`)."""

from __future__ import annotations

import argparse
from dataclasses import asdict
from typing import Any

from featurestore.cli._common import command, open_store, print_json
from featurestore.pipeline import parse_every


def register(sub: Any) -> None:
    p = command(sub, "vacuum", "Delete data files, online views and leftovers older than a retention period "
                "(a dry run unless --apply; pinned commits and served views are kept).",
                "featurestore vacuum --retain 7d            # what would be deleted\n"
                "  featurestore vacuum --retain 7d --apply    # delete it")
    p.add_argument("--retain", default="7d", help="keep what is younger than this: 12h, 7d, 2w (default 7d)")
    p.add_argument("--apply", action="store_true", help="delete (default: only say what would be deleted)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=cmd_vacuum)

    p = command(sub, "compact", "Merge small data files of every feature group (one new commit each, rows "
                "unchanged; a dry run unless --apply).", "featurestore compact --apply")
    p.add_argument("--target-mb", type=int, default=256, help="target file size in MB (default 256)")
    p.add_argument("--apply", action="store_true", help="compact (default: only say what would be merged)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=cmd_compact)

    p = command(sub, "check", "Verify every table, online view, cache and saved training set against its "
                "checksums; --repair rebuilds what is derived (exit 1 when problems remain).",
                "featurestore check --repair")
    p.add_argument("--repair", action="store_true", help="rebuild damaged views, delete damaged cache files")
    p.add_argument("--json", action="store_true", help="print the problems as JSON")
    p.set_defaults(func=cmd_check)


def _report(args: argparse.Namespace, report: Any) -> int:
    if args.json:
        print_json(asdict(report))
    else:
        print(report.summary())
    return 0


def cmd_vacuum(args: argparse.Namespace) -> int:
    store = open_store(args)
    return _report(args, store.vacuum(parse_every(args.retain), dry_run=not args.apply))


def cmd_compact(args: argparse.Namespace) -> int:
    store = open_store(args)
    return _report(args, store.compact(target_size=args.target_mb << 20, dry_run=not args.apply))


def cmd_check(args: argparse.Namespace) -> int:
    store = open_store(args)
    problems = store.check(repair=args.repair)
    if args.json:
        print_json([asdict(p) for p in problems])
    else:
        for p in problems:
            print(p)
        print(f"{len(problems)} problem(s)" + (f", {sum(p.repaired for p in problems)} repaired" if args.repair
                                                else "") if problems else f"ok: {store.root.uri} verifies")
    return 1 if any(not p.repaired for p in problems) else 0
