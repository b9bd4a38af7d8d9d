"""A validation report as one self-contained HTML page (no scripts, no external assets)."""

from __future__ import annotations

import json
from html import escape

from featurestore.validation.report import ValidationReport, format_threshold, format_value

_CSS = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 2em; color: #222; }
h1 { font-size: 1.4em; margin-bottom: .2em; }
.meta { color: #555; margin-bottom: 1em; }
.verdict { display: inline-block; padding: .2em .6em; border-radius: 4px; color: #fff; font-weight: 600; }
.passed { background: #2e7d32; } .failed { background: #c62828; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: .35em .6em; border-bottom: 1px solid #ddd; vertical-align: top; }
th { background: #f4f4f4; }
tr.fail td { background: #fdecea; }
tr.skip td { color: #777; }
td.obs { font-family: ui-monospace, monospace; font-size: 12px; }
details { margin-top: 1.5em; }
pre { background: #f7f7f7; padding: 1em; overflow: auto; font-size: 12px; }
"""


def render(report: ValidationReport) -> str:
    """The report as an HTML page a person can open in a browser."""
    r = report
    rows = []
    for c in sorted(r.checks, key=lambda c: (c.success, c.skipped)):
        cls = "fail" if not c.success else "skip" if c.skipped else ""
        verdict = "FAIL" if not c.success else "skipped" if c.skipped else "pass"
        rows.append(
            f"<tr class='{cls}'><td>{verdict}</td><td>{escape(c.name)}</td><td>{escape(c.engine)}<br>"
            f"<small>{escape(c.expectation)}</small></td><td class='obs'>{escape(format_value(c.observed))}</td>"
            f"<td class='obs'>{escape(format_threshold(c))}</td><td>{escape(c.details)}</td></tr>")
    commit = f"commit {r.commit}" if r.commit is not None else "not committed"
    base = f"; compared with commit {r.base_commit}" if r.base_commit is not None else ""
    timings = ", ".join(f"{k} {v:.3f}s" for k, v in r.timings.items())
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>{escape(r.feature_group)} v{r.version}: validation {r.status}</title><style>{_CSS}</style></head>
<body>
<h1>{escape(r.feature_group)} v{r.version} <span class="verdict {r.status}">{r.status}</span></h1>
<div class="meta">report {escape(r.report_id)} &middot; {escape(r.created_at.isoformat(timespec="seconds"))}
&middot; {r.mode} ({commit}{base}) &middot; policy {escape(r.policy)} &middot; {r.row_count} rows
&middot; {len(r.failed)} of {len(r.checks)} checks failed</div>
<table><thead><tr><th>result</th><th>check</th><th>engine</th><th>observed</th><th>expected</th><th>details</th>
</tr></thead><tbody>
{chr(10).join(rows)}
</tbody></table>
<details><summary>timings and raw JSON</summary><p>{escape(timings)}</p>
<pre>{escape(json.dumps(r.to_dict(), indent=2, sort_keys=True))}</pre></details>
</body></html>
"""
