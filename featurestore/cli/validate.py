"""``featurestore validate``: re-check a stored commit against its spec's suite and embedding checks."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from featurestore.cli._common import CLIError, command, open_store, print_json
from featurestore.validation import html
from featurestore.validation.report import format_threshold, format_value


def register(sub: Any) -> None:
    p = command(sub, "validate",
                "Validate a stored commit: print each expectation with pass/fail and the observed value, "
                "store the report (JSON and HTML) and exit 1 on failure.",
                "featurestore validate item_embeddings --version 1 --commit 3 --html report.html")
    p.add_argument("name", help="feature group name")
    p.add_argument("--version", type=int, default=None, help="feature group version (default: newest)")
    p.add_argument("--commit", type=int, default=None, help="commit number (default: newest)")
    p.add_argument("--html", default=None, metavar="FILE",
                   help="also write the HTML report here (it is always stored beside the JSON report)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=cmd_validate)


def cmd_validate(args: argparse.Namespace) -> int:
    store = open_store(args)
    report = store.validate(args.name, args.version, args.commit)
    page = html.render(report)
    html_rel = report.path.removesuffix(".json") + ".html"
    store.root.write_bytes(html_rel, page.encode())
    if args.html:
        try:
            with open(args.html, "w") as f:
                f.write(page)
        except OSError as exc:
            raise CLIError(f"cannot write {args.html}: {exc}") from exc
    if args.json:
        print_json(report.to_dict(), out=sys.stdout)
    else:
        print(f"{report.feature_group} v{report.version} commit {report.commit}: {report.row_count} rows"
              + (f", compared with commit {report.base_commit}" if report.base_commit is not None else ""))
        rows = [("FAIL" if not c.success else "skip" if c.skipped else "pass", c.name, format_value(c.observed),
                 format_threshold(c) + (f"; {c.details}" if c.details else "")) for c in report.checks]
        width = max(len(r[1]) for r in rows) if rows else 0
        for result, name, observed, expected in rows:  # full values, never cut: this is what a person reads
            print(f"{result:4}  {name:<{width}}  {observed}   [expected: {expected}]")
        print(f"{report.status}: {len(report.failed)} of {len(report.checks)} checks failed")
        print(f"report: {store.root.uri_of(report.path)}", file=sys.stderr)
        print(f"html:   {args.html or store.root.uri_of(html_rel)}", file=sys.stderr)
    return 0 if report.success else 1
