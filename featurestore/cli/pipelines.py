"""Pipeline commands: run (one date, or a backfill over a range of dates)."""

from __future__ import annotations

import argparse
import os
import re
import sys
from dataclasses import replace
from datetime import datetime
from typing import Any

from featurestore.cli._common import CLIError, add_memory, command, open_store, print_json
from featurestore.embed.cooccurrence import CooccurrenceEmbedder
from featurestore.embed.sequence import SequenceEmbedder
from featurestore.engine.events import Columns, EventSource
from featurestore.pipeline import Pipeline, load_pipeline, parse_every

#: embedders selectable by --model (their ``name``)
MODELS: dict[str, Any] = {"cooccurrence": CooccurrenceEmbedder, "sequence": SequenceEmbedder}
#: the groups a sequence model writes by default (schemas/sequence/)
SEQUENCE_GROUPS = (("sequence_item_embeddings", 1), ("sequence_user_embeddings", 1))


def register(sub: Any) -> None:
    p = command(sub, "run", "Run an embedding pipeline for one cutoff date, or backfill a range of dates.",
                "featurestore run pipelines/purchase_embeddings.py --cutoff 2026-11-01\n"
                "  featurestore run pipelines/purchase_embeddings.py --backfill 2026-11-01 2026-11-07 --every 1d\n"
                "  featurestore run --events 'events/*.parquet' --columns entity=customer,item=sku,type=,"
                "time=ts --cutoff 2026-11-01")
    p.add_argument("pipeline", nargs="?", default=None,
                   help="a pipeline file defining `pipeline = Pipeline(...)` (default: the built-in "
                        "co-occurrence pipeline over --events)")
    when = p.add_mutually_exclusive_group(required=True)
    when.add_argument("--cutoff", metavar="TIME", help="the run's cutoff (ISO-8601; naive = UTC): events before it "
                      "are read, and its rows carry it as their event time")
    when.add_argument("--backfill", nargs=2, metavar=("FROM", "TO"), help="run every cutoff from FROM to TO")
    p.add_argument("--every", default="1d", help="backfill period: 1d, 6h, 1w, ... (default 1d)")
    p.add_argument("--events", metavar="PATH", help="events Parquet file or glob (replaces the pipeline's source)")
    p.add_argument("--query", metavar="SQL", help="a DuckDB query returning the events (instead of --events)")
    p.add_argument("--columns", metavar="ROLE=COL,...",
                   help="source column names: entity=,item=,type=,time=,value= (an empty type= means no "
                        "event-type column: all events weigh the same)")
    p.add_argument("--weights", metavar="TYPE=W,...", help="event-type weights, e.g. view=1,purchase=4")
    p.add_argument("--name", default=None, help="pipeline name recorded in commits (default: the file's "
                                                 "pipeline name, else <events file name>_embeddings)")
    p.add_argument("--force", action="store_true",
                   help="run a date again even when it is done (reads the events as they are now; commits anew)")
    p.add_argument("--mode", choices=["incremental", "full"], default=None,
                   help="incremental: rewrite only entities with new events while the item model is reused")
    add_memory(p)
    p.add_argument("--model", choices=sorted(MODELS), default=None,
                   help="the embedder: cooccurrence (the built-in default) or sequence (a self-attention "
                        "next-item model; needs featurestore[sequence]; writes sequence_item_embeddings and "
                        "sequence_user_embeddings v1: apply schemas/sequence/ first)")
    p.add_argument("--max-minutes", type=float, default=None, metavar="M",
                   help="training budget of a sequence model: stop after M minutes keeping the best epoch")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--json", action="store_true", help="print the run results as JSON")
    p.set_defaults(func=cmd_run)


def _time(value: str, flag: str) -> datetime:
    try:
        return datetime.fromisoformat(value)
    except ValueError as exc:
        raise CLIError(f"{flag} takes an ISO-8601 time such as 2026-11-01 or 2026-11-01T06:00; got {value!r}") from exc


def _weights(text: str) -> dict[str, float]:
    out = {}
    for part in filter(None, (x.strip() for x in text.split(","))):
        k, sep, v = part.partition("=")
        try:
            out[k.strip()] = float(v)
        except ValueError:
            sep = ""
        if not sep or not k.strip():
            raise CLIError(f"--weights takes type=number pairs, e.g. view=1,purchase=4; got {part!r}")
    return out


def default_name(events: str | None) -> str:
    """A run name from the events it reads (``events/clicks-*.parquet`` -> ``clicks_embeddings``), so two
    built-in pipelines over different events do not share one name (and one idempotency record)."""
    if not events:
        return "query_embeddings"
    for part in reversed(os.path.normpath(events).split(os.sep)):
        stem = re.sub(r"[^a-z0-9]+", "_", part.split(".")[0].lower()).strip("_")
        if stem and stem[0].isalpha():
            return f"{stem}_embeddings"
    return "embeddings"


def build(args: argparse.Namespace) -> Any:
    """The pipeline the arguments describe."""

    base = load_pipeline(args.pipeline) if args.pipeline else None
    if base is None and not (args.events or args.query):
        raise CLIError("give a pipeline file, or --events PATH (or --query SQL) to run the built-in pipeline")
    if args.events and args.query:
        raise CLIError("give --events or --query, not both")
    columns = Columns.parse(args.columns) if args.columns else (base.source.columns if base else Columns())
    if args.events or args.query:
        source = EventSource(args.events, columns=columns) if args.events else EventSource(query=args.query,
                                                                                             columns=columns)
    else:
        assert base is not None
        source = EventSource(base.source.data, query=base.source.query, columns=columns) if args.columns \
            else base.source
    if base is None:
        base = Pipeline(args.name or default_name(args.events), source)
    changes: dict[str, Any] = {"source": source}
    if args.name:
        changes["name"] = args.name
    if args.weights:
        changes["weights"] = _weights(args.weights)
    if args.mode:
        changes["mode"] = args.mode
    changes.update(_model(args, base))
    return replace(base, **changes)


def _model(args: argparse.Namespace, base: Pipeline) -> dict[str, Any]:
    """The embedder chosen by --model (and its --max-minutes budget)."""
    changes: dict[str, Any] = {}
    if args.model and args.model != base.embedder.name:
        changes["embedder"] = MODELS[args.model]()
        if args.model == "sequence" and (base.items, base.entities) == (Pipeline.items, Pipeline.entities):
            changes["items"], changes["entities"] = SEQUENCE_GROUPS
    embedder = changes.get("embedder", base.embedder)
    if args.max_minutes is not None:
        if not hasattr(embedder, "with_budget"):
            raise CLIError(f"--max-minutes applies to a trained model (--model sequence); {embedder.name!r} has "
                           "no training budget")
        if args.max_minutes <= 0:
            raise CLIError(f"--max-minutes must be positive; got {args.max_minutes}")
        changes["embedder"] = embedder.with_budget(args.max_minutes)
    return changes


def cmd_run(args: argparse.Namespace) -> int:
    pipeline = build(args)
    store = open_store(args)
    show = None if not args.quiet else False

    def report(r: Any) -> None:
        if not args.json:
            print(r.summary(), flush=True)

    if args.cutoff:
        results = [pipeline.run(store, _time(args.cutoff, "--cutoff"), progress=show, quiet=args.quiet,
                                force=args.force)]
        report(results[0])
    else:
        start, end = (_time(v, "--backfill") for v in args.backfill)
        results = pipeline.backfill(store, start, end, parse_every(args.every), progress=show, quiet=args.quiet,
                                    force=args.force, on_result=report)
    written = [r for r in results if r.status == "written"]
    if args.json:
        print_json([r.to_dict() for r in results], out=sys.stdout)
    else:
        commits = sum(len(r.commits) for r in results)
        print(f"{len(results)} run(s): {len(written)} written, {len(results) - len(written)} already done; "
              f"{commits} commit(s)", file=sys.stderr)
    return 0
