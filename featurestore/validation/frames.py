"""Validation of a batch that lives in an engine's frames (a Spark DataFrame), where it lives: the same
suite and the same checks as :func:`featurestore.validation.runner.validate_batch`, with the numbers
computed by the engine as distributed aggregates (:meth:`featurestore.engine.base.FrameEngine.frame_stats`).

great_expectations runs on the frame of per-row scalars through its Spark execution engine; the
embedding checks take counts, norm quantiles (approximate: relative rank error 1e-4) and duplicate
groups from aggregates, and the collapse and drift checks a bounded sample (at most the spec's
``sample`` rows, picked by a seeded hash of the keys), never the whole vector column.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow as pa

from featurestore.engine.base import FrameEngine
from featurestore.errors import ValidationFailed
from featurestore.schema import FeatureGroupSpec
from featurestore.validation import embedding, gx, report
from featurestore.validation.expectations import Expectations, VectorRules, parse_expectations
from featurestore.validation.report import CheckResult, Mode, ValidationReport
from featurestore.validation.runner import CommittedTable, InsertGate, _ensure_suite, previous_commit
from featurestore.validation.suite import KEY_TIME, suite_document


def validate_frame(fg: CommittedTable, frame: Any, engine: FrameEngine, *, rows: int, mode: Mode = "insert",
                   expectations: Expectations | None = None) -> ValidationReport:
    """Run every check of ``fg``'s spec on ``frame`` (``rows`` rows) against its newest commit."""
    spec = fg.spec
    exp = expectations or parse_expectations(spec)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    stats = engine.frame_stats()
    document = suite_document(spec, exp)
    gx.load()
    timings["import"] = time.perf_counter() - t0
    t = time.perf_counter()
    vectors = [v.feature for v in exp.vectors if v.feature in frame.columns]
    checked = [c.column for c in exp.columns if c.column in frame.columns]
    scalars = stats.suite_frame(spec, frame, checked, vectors, KEY_TIME if exp.keys_unique else None)
    try:
        ge_checks = gx.run(document, scalars, spark=True)
    finally:
        stats.release(scalars)
    timings["great_expectations"] = time.perf_counter() - t
    t = time.perf_counter()
    prev = previous_commit(fg, need_all_keys=False)
    checks: list[CheckResult] = []
    for rule in exp.vectors:
        if rule.feature in frame.columns:
            checks += _vector_checks(fg, frame, engine, rule, prev)
    timings["embedding"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - t0 - timings["import"]
    result = ValidationReport(
        report_id=report.new_report_id(), feature_group=spec.name, version=spec.version, mode=mode,
        policy=spec.policy, created_at=datetime.now(UTC), row_count=rows, spec_fingerprint=spec.fingerprint(),
        checks=tuple(ge_checks + checks), base_commit=prev.commit if prev else None, timings=timings)
    return ValidationReport.from_json(result.to_json())


def _vector_checks(fg: CommittedTable, frame: Any, engine: FrameEngine, rule: VectorRules,
                   prev: Any) -> list[CheckResult]:
    spec: FeatureGroupSpec = fg.spec
    stats = engine.frame_stats()
    sample = rule.collapse.sample if rule.collapse is not None else 0
    s = stats.vector_stats(spec, frame, rule.feature, rule.dim, duplicates=rule.duplicates_max_share is not None,
                           sample=sample, seed=embedding.SEED)
    out = [embedding.dtype_result(rule.feature, "float", None, s.dims, s.wrong_dim, rule.dim)]
    if rule.norm_distribution is not None:
        out.append(embedding.norm_result(rule.feature, rule.norm_distribution, s.norms))
    if rule.duplicates_max_share is not None:
        out.append(embedding.duplicates_result(rule.feature, rule.duplicates_max_share, s.valid, s.duplicate_rows,
                                               s.duplicate_groups, s.duplicate_examples))
    if rule.collapse is not None:
        out += embedding.check_collapse(embedding.derive(_as_list(s.sample), rule.feature, rule.dim), rule.collapse)
    previous = engine.read_frame(spec, prev.files) if prev is not None else None
    if rule.drift is not None:
        new = old = np.zeros((0, rule.dim), np.float32)
        shared = None
        if previous is not None:
            new, old, shared = stats.drift_pairs(spec, frame, previous, rule.feature, rule.dim,
                                                 sample=rule.drift.sample, seed=embedding.SEED)
        out += embedding.check_drift(rule.feature, new, old, rule.drift, rule.metric,
                                     base_commit=prev.commit if prev else None, shared_total=shared)
    if rule.coverage is not None:
        expected, present = None, 0
        if prev is not None:
            base = previous if rule.coverage.expected != "table" else engine.read_frame(
                spec, fg.engine_files(fg.engine, prev.commit, verify=True)[1])
            expected, present = stats.coverage(spec, frame, base)
        out.append(embedding.check_coverage(rule.feature, rule.coverage, expected, present,
                                            prev.commit if prev else None))
    return out


def _as_list(matrix: np.ndarray | None) -> pa.FixedSizeListArray:
    m = matrix if matrix is not None else np.zeros((0, 1), np.float32)
    return pa.FixedSizeListArray.from_arrays(pa.array(m.ravel(), pa.float32()), m.shape[1])


class FrameGate(InsertGate):
    """:class:`InsertGate` for a batch in an engine's frame: validated by the engine, the report stored,
    and under ``policy: strict`` :class:`ValidationFailed` before anything is committed."""

    def __init__(self, fg: CommittedTable, frame: Any, engine: FrameEngine, rows: int):
        self.fg = fg
        _ensure_suite(fg)
        exp = parse_expectations(fg.spec)
        self.report = validate_frame(fg, frame, engine, rows=rows, expectations=exp)
        report.save(fg.root, self.report)
        if not self.report.success and fg.spec.policy == "strict":
            raise ValidationFailed(
                f"{self.report.summary()}\nNothing was committed (policy: strict). Report: "
                f"{fg.root.uri_of(self.report.path)}", report=self.report)
