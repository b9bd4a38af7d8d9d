"""Validation reports: what was checked, what was observed, pass or fail; stored as JSON in the store.

A report lives at ``<root>/validation/<name>/v<version>/<report_id>.json``; the commit it vetted
carries ``featurestore.validation_report`` and ``featurestore.validation_status`` in its metadata.
``store.sql("SELECT * FROM validation_reports")`` lists every report (one row each) and
``validation_checks`` every check (one row per check of each report).
"""

from __future__ import annotations

import json
import math
import uuid
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Literal

from featurestore.errors import ReportNotFound, StorageError
from featurestore.storage.duck import literal
from featurestore.storage.fs import Root

Engine = Literal["great_expectations", "numpy"]
Mode = Literal["insert", "commit"]
Status = Literal["passed", "failed"]
REPORTS_DIR = "validation"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class CheckResult:
    """One expectation or embedding check: what it asked (``threshold``), what it saw, pass or fail."""

    name: str  # readable, unique within a report: "embedding: norm between" ...
    engine: Engine
    expectation: str  # GE expectation type, or the numpy check's name
    column: str | None
    success: bool
    observed: Any = None  # JSON-able
    threshold: dict[str, Any] = field(default_factory=dict)
    details: str = ""
    skipped: bool = False  # nothing to compare (e.g. no previous commit): counted as passed

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "engine": self.engine, "expectation": self.expectation,
                "column": self.column, "success": self.success, "observed": _plain(self.observed),
                "threshold": _plain(self.threshold), "details": self.details, "skipped": self.skipped}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CheckResult:
        return cls(name=d["name"], engine=d["engine"], expectation=d["expectation"], column=d.get("column"),
                   success=bool(d["success"]), observed=d.get("observed"), threshold=dict(d.get("threshold") or {}),
                   details=d.get("details", ""), skipped=bool(d.get("skipped", False)))


@dataclass(frozen=True)
class ValidationReport:
    """The outcome of validating one batch (before an insert) or one stored commit."""

    report_id: str
    feature_group: str
    version: int
    mode: Mode
    policy: str
    created_at: datetime
    row_count: int
    spec_fingerprint: str
    checks: tuple[CheckResult, ...]
    commit: int | None = None  # the commit vetted (set once committed); None when rejected
    committed: bool = False
    base_commit: int | None = None  # the previous commit that drift and coverage compared against
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def success(self) -> bool:
        return all(c.success for c in self.checks)

    @property
    def status(self) -> Status:
        return "passed" if self.success else "failed"

    @property
    def failed(self) -> list[CheckResult]:
        return [c for c in self.checks if not c.success]

    @property
    def path(self) -> str:
        """Where the report lives, relative to the store root."""
        return report_path(self.feature_group, self.version, self.report_id)

    def with_commit(self, commit: int) -> ValidationReport:
        return replace(self, commit=commit, committed=True)

    def summary(self, *, limit: int = 10) -> str:
        """A few readable lines: the verdict and each failed check with its observed value."""
        head = (f"{self.feature_group} v{self.version}: validation {self.status} "
                f"({len(self.failed)} of {len(self.checks)} checks failed, {self.row_count} rows; "
                f"report {self.report_id})")
        lines = [head]
        for c in self.failed[:limit]:
            lines.append(f"  FAIL {c.name}: observed {format_value(c.observed)}; expected {format_threshold(c)}"
                         + (f" ({c.details})" if c.details else ""))
        if len(self.failed) > limit:
            lines.append(f"  ... and {len(self.failed) - limit} more")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION,
            "report_id": self.report_id,
            "feature_group": self.feature_group,
            "version": self.version,
            "mode": self.mode,
            "policy": self.policy,
            "created_at": self.created_at.isoformat(),
            "row_count": self.row_count,
            "spec_fingerprint": self.spec_fingerprint,
            "commit": self.commit,
            "committed": self.committed,
            "base_commit": self.base_commit,
            "status": self.status,
            "success": self.success,
            "n_checks": len(self.checks),
            "n_failed": len(self.failed),
            "timings": {k: round(v, 6) for k, v in self.timings.items()},
            "checks": [c.to_dict() for c in self.checks],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ValidationReport:
        return cls(
            report_id=d["report_id"], feature_group=d["feature_group"], version=int(d["version"]),
            mode=d["mode"], policy=d["policy"], created_at=datetime.fromisoformat(d["created_at"]),
            row_count=int(d["row_count"]), spec_fingerprint=d["spec_fingerprint"],
            checks=tuple(CheckResult.from_dict(c) for c in d["checks"]), commit=d.get("commit"),
            committed=bool(d.get("committed")), base_commit=d.get("base_commit"),
            timings=dict(d.get("timings") or {}),
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> ValidationReport:
        return cls.from_dict(json.loads(text))


def new_report_id() -> str:
    """Sortable by creation time, unique across processes."""
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ") + "-" + uuid.uuid4().hex[:8]


def report_path(name: str, version: int, report_id: str) -> str:
    return f"{REPORTS_DIR}/{name}/v{version}/{report_id}.json"


def save(root: Root, report: ValidationReport) -> str:
    """Write the report (atomically) under the store root; returns its path relative to the root."""
    root.write_json(report.path, report.to_dict())
    return report.path


def report_files(root: Root) -> list[str]:
    """Every stored report, as paths relative to the root, oldest first."""
    out = []
    if not root.local:  # one recursive listing instead of one per folder
        rels = [root.rel_of(info.path) for info in root.walk(REPORTS_DIR)]
        out = [r for r in rels if r.endswith(".json") and r.count("/") == 3]
        return sorted(out, key=lambda p: p.rsplit("/", 1)[1])
    for name in root.listdir(REPORTS_DIR):
        for vdir in root.listdir(f"{REPORTS_DIR}/{name}"):
            for f in root.listdir(f"{REPORTS_DIR}/{name}/{vdir}"):
                if f.endswith(".json"):
                    out.append(f"{REPORTS_DIR}/{name}/{vdir}/{f}")
    return sorted(out, key=lambda p: p.rsplit("/", 1)[1])


def load(root: Root, report_id: str, name: str | None = None, version: int | None = None
         ) -> ValidationReport:
    """Read one report back by id (``name``/``version`` narrow the search)."""
    if name is not None and version is not None:
        candidates = [report_path(name, version, report_id)]
    else:
        candidates = [p for p in report_files(root) if p.endswith(f"/{report_id}.json")]
    for rel in candidates:
        try:
            return ValidationReport.from_json(root.read_bytes(rel))
        except FileNotFoundError:
            continue
        except (ValueError, KeyError) as exc:
            raise StorageError(f"validation report {root.uri_of(rel)} is unreadable: {exc}") from exc
    raise ReportNotFound(f"no validation report {report_id!r} in {root.uri}")


# ---- SQL views ----------------------------------------------------------------------------------
_REPORT_COLUMNS = {
    "report_id": "VARCHAR", "feature_group": "VARCHAR", "version": "INTEGER", "mode": "VARCHAR",
    "policy": "VARCHAR", "created_at": "TIMESTAMPTZ", "row_count": "BIGINT", "spec_fingerprint": "VARCHAR",
    "commit": "BIGINT", "committed": "BOOLEAN", "base_commit": "BIGINT", "status": "VARCHAR",
    "success": "BOOLEAN", "n_checks": "INTEGER", "n_failed": "INTEGER",
}
_CHECK_STRUCT = ("STRUCT(name VARCHAR, engine VARCHAR, expectation VARCHAR, \"column\" VARCHAR, "
                 "success BOOLEAN, observed JSON, threshold JSON, details VARCHAR, skipped BOOLEAN)")


def _files_sql(root: Root) -> str | None:
    files = report_files(root)
    if not files:
        return None
    # reports are written once under a unique id: an object store's are read from cached copies
    return ", ".join(literal(f) for f in root.readable([root.uri_of(f) for f in files]))


def reports_view_sql(root: Root) -> str:
    """``validation_reports``: one row per report, with its checks as a list of structs."""
    cols = {**_REPORT_COLUMNS, "checks": f"{_CHECK_STRUCT}[]"}
    files = _files_sql(root)
    if files is None:
        empty = {**cols, "path": "VARCHAR"}
        return "SELECT " + ", ".join(f"CAST(NULL AS {t}) AS \"{c}\"" for c, t in empty.items()) + " WHERE false"
    spec = ", ".join(f"'{c}': '{t}'" for c, t in cols.items())
    names = ", ".join(f'"{c}"' for c in cols)
    return (f"SELECT {names}, filename AS path FROM read_json([{files}], format = 'auto', "
            f"columns = {{{spec}}}, filename = true)")


def checks_view_sql(root: Root) -> str:
    """``validation_checks``: one row per check, with its report's identity."""
    files = _files_sql(root)
    if files is None:
        return ("SELECT CAST(NULL AS VARCHAR) AS report_id, CAST(NULL AS VARCHAR) AS feature_group, "
                "CAST(NULL AS INTEGER) AS version, CAST(NULL AS BIGINT) AS \"commit\", "
                "CAST(NULL AS VARCHAR) AS name, CAST(NULL AS VARCHAR) AS engine, "
                "CAST(NULL AS VARCHAR) AS expectation, CAST(NULL AS VARCHAR) AS \"column\", "
                "CAST(NULL AS BOOLEAN) AS success, CAST(NULL AS JSON) AS observed, "
                "CAST(NULL AS JSON) AS threshold, CAST(NULL AS VARCHAR) AS details, "
                "CAST(NULL AS BOOLEAN) AS skipped WHERE false")
    return ("SELECT report_id, feature_group, version, \"commit\", unnest(checks, recursive := true) "
            "FROM validation_reports")


# ---- formatting -----------------------------------------------------------------------------------
def _plain(value: Any) -> Any:
    """JSON-safe: numpy scalars to Python, non-finite floats to strings."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, str | bytes):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def format_value(value: Any) -> str:
    if isinstance(value, dict) and "unexpected_count" in value:  # a great_expectations map result
        text = f"{value['unexpected_count']} of {value.get('element_count')} unexpected"
        if value.get("examples"):
            text += f", e.g. {format_value(value['examples'])}"
        return text
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {format_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        head = ", ".join(format_value(v) for v in value[:5])
        return f"[{head}{', ...' if len(value) > 5 else ''}]"
    return "n/a" if value is None else str(value)


def format_threshold(check: CheckResult) -> str:
    t = {k: v for k, v in check.threshold.items() if v is not None}
    if not t:
        return "no unexpected rows" if check.engine == "great_expectations" else "-"
    return ", ".join(f"{k} {format_value(v)}" for k, v in t.items())
