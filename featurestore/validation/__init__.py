"""Validation: great_expectations suites compiled from specs, embedding checks in numpy, and reports.

Every insert is validated before it commits (:class:`~featurestore.validation.runner.InsertGate`);
``featurestore validate NAME`` re-checks a stored commit. great_expectations is imported only by
:mod:`featurestore.validation.gx`, and only when a batch is validated.

Example::

    report = store.validate("item_embeddings", version=1)   # or fg.validate_commit(commit)
    print(report.summary())
    store.sql("SELECT report_id, status, n_failed FROM validation_reports").df()
"""

from featurestore.validation.expectations import Expectations, check_expectations, parse_expectations
from featurestore.validation.report import CheckResult, ValidationReport, load
from featurestore.validation.runner import suite_for, validate_batch, validate_commit, write_suite

__all__ = [
    "CheckResult",
    "Expectations",
    "ValidationReport",
    "check_expectations",
    "load",
    "parse_expectations",
    "suite_for",
    "validate_batch",
    "validate_commit",
    "write_suite",
]
