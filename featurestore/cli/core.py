"""Core commands: init, apply, ls, show, history, sql."""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
from datetime import datetime
from typing import Any

from featurestore import demo
from featurestore.catalog import DEFAULT_ROOT, ROOT_ENV
from featurestore.cli._common import CLIError, command, open_store, parse_commit, parse_time, print_json, print_table
from featurestore.errors import FeatureStoreError
from featurestore.feature_group import Commit
from featurestore.store import FeatureStore
from featurestore.validation.report import load as load_report


def register(sub: Any) -> None:
    p = command(sub, "init", "Create an empty store at the root (idempotent).", "featurestore init --root ./fs")
    p.set_defaults(func=cmd_init)

    p = command(sub, "apply", "Register feature-group specs (YAML) and create their tables; a folder's "
                "services/ sub-folder holds feature services (services/<name>.yaml).",
                "featurestore apply schemas/")
    p.add_argument("paths", nargs="+", help="spec files or folders of *.yaml specs")
    p.set_defaults(func=cmd_apply)

    p = command(sub, "ls", "List feature groups: versions, commits, rows.", "featurestore ls")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_ls)

    p = command(sub, "show", "Show a feature group's spec and newest commit.",
                "featurestore show user_embeddings --version 1")
    p.add_argument("name")
    p.add_argument("--version", type=int, default=None, help="feature group version (default: newest)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_show)

    p = command(sub, "history", "List a feature group's commits and their metadata.",
                "featurestore history item_embeddings")
    p.add_argument("name")
    p.add_argument("--version", type=int, default=None, help="feature group version (default: newest)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_history)

    p = command(sub, "sql", "Run DuckDB SQL over the store's views.",
                'featurestore sql "SELECT user_id, n_events FROM user_embeddings LIMIT 5" --format csv')
    p.add_argument("query", help="SQL; views: <name> (newest version), <name>_v<version>")
    p.add_argument("--format", choices=["table", "csv", "json", "parquet"], default="table")
    p.add_argument("--out", default=None, metavar="FILE", help="write to FILE (required for parquet)")
    p.add_argument("--commit", action="append", default=[], metavar="VIEW=N",
                   help="query commit N of a view, e.g. user_embeddings=3 (repeatable)")
    p.add_argument("--commit-time", action="append", default=[], metavar="[VIEW=]TIME",
                   help="query the commit current at an ISO-8601 wall-clock time, of one view (VIEW=TIME) "
                        "or of every feature group (TIME) (repeatable)")
    p.add_argument("--limit", type=int, default=50, help="rows printed in table format (default 50)")
    p.set_defaults(func=cmd_sql)
    register_demo(sub)


def verdict(store: FeatureStore, commit: Commit) -> str:
    """A commit's validation verdict in a few words: passed, failed under ``policy: warn`` (WARNED, with
    the checks that failed), or none (the table's creation; a commit written without validation)."""
    status = commit.extra.get("validation_status")
    if status is None:
        return "-"
    if status == "passed":
        return "passed"
    policy = commit.extra.get("validation_policy", "warn")
    failed = ""
    report_id = commit.extra.get("validation_report")
    if report_id:
        try:
            report = load_report(store.root, report_id, commit.feature_group, commit.version)
            names = [c.name for c in report.failed]
            failed = f": {len(names)} failed ({', '.join(names[:3])}{', ...' if len(names) > 3 else ''})"
        except FeatureStoreError as exc:
            failed = f" (report {report_id} unreadable: {exc})"
    return f"WARNED{failed}" if policy == "warn" else f"failed ({policy}){failed}"


def cmd_init(args: argparse.Namespace) -> int:
    store = open_store(args, create=True)
    created = store.init()
    print(f"{'created' if created else 'already a store'}: {store.root.uri}")
    return 0


def cmd_apply(args: argparse.Namespace) -> int:
    store = open_store(args, create=True)
    for r in store.apply(list(args.paths)):
        print(f"{r.action:9}  service {r.name}" if r.kind == "service" else f"{r.action:9}  {r.name} v{r.version}")
    return 0


def _summary(store: Any) -> list[dict[str, Any]]:
    rows = []
    for spec in store.specs():
        fg = store.feature_group(spec.name, spec.version)
        hist = fg.history()
        last = hist[-1]
        rows.append({
            "name": spec.name, "version": spec.version, "keys": ",".join(spec.key_names),
            "vectors": ",".join(f"{f.name}[{f.dim}]" for f in spec.vector_features),
            "commit": last.commit, "rows": fg.count(), "committed": last.timestamp.isoformat(timespec="seconds"),
            "validation": verdict(store, last),
        })
    return rows


def cmd_ls(args: argparse.Namespace) -> int:
    store = open_store(args)
    rows = _summary(store)
    if args.json:
        print_json(rows)
    elif not rows:
        print(f"no feature groups in {store.root.uri} (featurestore apply schemas/)")
    else:
        print_table(list(rows[0]), [list(r.values()) for r in rows])
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    store = open_store(args)
    fg = store.feature_group(args.name, args.version)
    last = fg.history()[-1]
    doc = {"spec": fg.spec.to_dict(), "uri": fg.uri, "newest_commit": last.to_dict(), "rows": fg.count(),
           "validation": verdict(store, last)}
    if args.json:
        print_json(doc)
        return 0
    s = fg.spec
    print(f"{s.name} v{s.version}  ({fg.uri})")
    if s.description:
        print(f"  {s.description.strip()}")
    print(f"  keys: {', '.join(f'{k.name} ({k.type})' for k in s.entity_keys)}; event time: {s.event_time}")
    print(f"  policy: {s.policy}; online index: {s.online.index}")
    print_table(["feature", "type", "dim", "metric", "normalized"],
                [[f.name, f.type, f.dim or "", f.metric if f.is_vector else "",
                  f.normalized if f.is_vector else ""] for f in s.features])
    print(f"  newest commit {last.commit} at {last.timestamp.isoformat(timespec='seconds')}: "
          f"{doc['rows']} rows; validation: {doc['validation']}")
    return 0


def cmd_history(args: argparse.Namespace) -> int:
    store = open_store(args)
    fg = store.feature_group(args.name, args.version)
    commits = fg.history()
    if args.json:
        print_json([c.to_dict() for c in commits])
        return 0
    print_table(["commit", "commit time", "operation", "rows", "cutoff", "validation", "run_id", "metadata"],
                [[c.commit, c.timestamp.isoformat(timespec="milliseconds"), c.operation, c.row_count,
                  c.cutoff.isoformat() if c.cutoff else "", verdict(store, c), c.run_id or "",
                  dict(c.metadata) or ""]
                 for c in commits])
    return 0


def cmd_sql(args: argparse.Namespace) -> int:
    store = open_store(args)
    commits: dict[str, int] = {}
    for item in args.commit:
        view, sep, value = item.partition("=")
        if not sep:
            raise CLIError(f"--commit takes VIEW=N, e.g. user_embeddings=3; got {item!r}")
        commits[view] = parse_commit(value)  # type: ignore[assignment]
    times: dict[str, datetime] = {}
    every: datetime | None = None
    for item in args.commit_time:
        view, sep, value = item.partition("=") if "=" in item else ("", "", item)
        when = parse_time(value, "--commit-time")
        assert when is not None
        if sep:
            times[view] = when
        else:
            every = when
    if every is not None and times:
        raise CLIError("--commit-time: give TIME (every feature group) or VIEW=TIME pairs, not both")
    rel = store.sql(args.query, commits=commits or None, commit_time=every or times or None)
    if rel is None:  # a statement without a result
        return 0
    if args.format == "parquet":
        if not args.out:
            raise CLIError("--format parquet needs --out FILE")
        rel.write_parquet(args.out)
        print(f"wrote {args.out}", file=sys.stderr)
        return 0
    table = rel.to_arrow_table()
    if args.format == "csv":
        import pyarrow.csv as pcsv  # only for --format csv

        buf = io.BytesIO()
        pcsv.write_csv(_csv_safe(table), buf)
        _write_text(args.out, buf.getvalue().decode())
    elif args.format == "json":
        _write_text(args.out, json.dumps(table.to_pylist(), indent=2, default=str) + "\n")
    else:
        rows = table.slice(0, args.limit).to_pylist()
        print_table(table.column_names, [list(r.values()) for r in rows])
        more = table.num_rows - len(rows)
        print(f"({table.num_rows} row{'s' if table.num_rows != 1 else ''}"
              f"{f', {more} not shown' if more > 0 else ''})")
    return 0


def _csv_safe(table: Any) -> Any:
    """CSV has no lists: vectors become JSON-style text."""
    import pyarrow as pa

    cols = []
    for col in table.columns:
        if pa.types.is_list(col.type) or pa.types.is_fixed_size_list(col.type) or pa.types.is_large_list(col.type):
            col = pa.array([None if v is None else json.dumps(v) for v in col.to_pylist()], pa.string())
        cols.append(col)
    return pa.Table.from_arrays(cols, names=table.column_names)


def _write_text(out: str | None, text: str) -> None:
    if out is None:
        sys.stdout.write(text)
        return
    try:
        with open(out, "w") as f:
            f.write(text)
    except OSError as exc:
        raise FeatureStoreError(f"cannot write {out}: {exc}") from exc
    print(f"wrote {out}", file=sys.stderr)


def register_demo(sub: Any) -> None:
    p = command(sub, "demo", "Run the end-to-end demo: generated events, the embedding pipeline over several dates.",
                "featurestore demo --root ./featurestore_data")
    p.add_argument("--small", action="store_true", help="a small data set (seconds; used by the tests)")
    p.add_argument("--days", type=int, default=4, help="daily pipeline runs (default 4)")
    p.add_argument("--keep", action="store_true", help="keep an existing store instead of starting fresh")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:

    if args.days < 1:
        raise CLIError("--days must be at least 1")
    root = getattr(args, "root", None) or os.environ.get(ROOT_ENV) or DEFAULT_ROOT
    demo.run(root, size="small" if args.small else "default", days=args.days, fresh=not args.keep,
             progress=False if args.quiet else None)
    return 0
