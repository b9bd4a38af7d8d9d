"""Run a feature group's checks on a batch or a stored commit, and gate inserts on the result.

:func:`validate_batch` runs the great_expectations suite (on per-row scalars) and the numpy embedding
checks and returns one :class:`ValidationReport`. :class:`InsertGate` is what
:meth:`FeatureGroup.commit_batch` calls: it validates, stores the report, and under ``policy: strict``
raises :class:`~featurestore.errors.ValidationFailed` before anything is committed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from featurestore.engine.base import Engine, Scan
from featurestore.errors import ValidationFailed
from featurestore.schema import FeatureGroupSpec
from featurestore.storage.fs import Root
from featurestore.validation import embedding, gx, report
from featurestore.validation.batches import KeyRows
from featurestore.validation.expectations import Expectations, VectorRules, parse_expectations
from featurestore.validation.report import CheckResult, Mode, ValidationReport
from featurestore.validation.suite import SUITE_FILE, frame, suite_document

if TYPE_CHECKING:
    import pandas as pd


class CommittedTable(Protocol):
    """What validation needs of a feature group (:class:`~featurestore.feature_group.FeatureGroup` is
    one): its spec, storage and engine, and its commits' files and rows."""

    spec: FeatureGroupSpec
    root: Root
    rel: str
    engine: Engine

    def commit_of(self, commit: int | None = None, *, commit_time: datetime | None = None) -> int: ...

    def files(self, commit: int | None = None, *, commit_time: datetime | None = None) -> list[str]: ...

    def engine_files(self, engine: Engine, commit: int | None = None, *, verify: bool = False
                     ) -> tuple[int, list[str]]: ...

    def read(self, commit: int | None = None, *, commit_time: datetime | None = None,
             columns: list[str] | None = None, system_columns: bool = False) -> pa.Table: ...

_CANDIDATES = 3  # drift: batch rows looked up in the previous commit per wanted sample row


def suite_for(spec: FeatureGroupSpec) -> dict[str, Any]:
    """The spec's suite document (great_expectations JSON form)."""
    return suite_document(spec, parse_expectations(spec))


def write_suite(root: Root, table_rel: str, spec: FeatureGroupSpec) -> str:
    """Store the suite as JSON beside the table (``<table>/_suite.json``); returns its path."""
    rel = f"{table_rel}/{SUITE_FILE}"
    root.write_json(rel, suite_for(spec))
    return rel


@dataclass(frozen=True)
class Previous:
    """The commit a batch is compared with (drift, coverage): its added rows, read lazily.

    Either ``table`` holds those rows in memory, or ``files`` names the Parquet files the commit added
    and ``engine`` reads them: only the rows of the keys asked for (a sample), and for drift first only
    their keys and event times, then the vectors of the rows sampled, so a 1M-row previous commit
    costs a scan of its key column and a partial read of its vector column, not a full load.
    """

    commit: int
    table: pa.Table | None = None
    files: tuple[str, ...] = ()
    engine: Engine | None = None
    all_keys: pd.Index | None = None  # every key in the table at that commit (coverage: table)

    def rows(self, spec: FeatureGroupSpec, columns: list[str], keys: pa.Table | None = None,
             *, locate: bool = False) -> pa.Table:
        """The commit's rows (``columns``); read from files, only the rows of ``keys`` (a table of key
        columns) if given (an in-memory ``table`` gives all its rows: callers match keys themselves).

        ``locate=True`` adds where each row lies (``_file``, ``_row``: see :meth:`values_at`).
        """
        if self.table is not None:
            out = self.table.select(columns)
            if locate:
                out = out.append_column("_file", pa.array(np.zeros(out.num_rows, np.int64))) \
                    .append_column("_row", pa.array(np.arange(out.num_rows, dtype=np.int64)))
            return out  # all rows: the caller matches keys
        assert self.engine is not None
        return self.engine.scan(Scan(spec, self.files, tuple(columns), keys=keys, locate=locate))

    def values_at(self, spec: FeatureGroupSpec, column: str, where: pa.Table) -> pa.ChunkedArray:
        """Vector ``column`` at the positions ``where`` (``_file``, ``_row`` from :meth:`rows`), in that order.

        Read per file with the row numbers pushed into the scan: only the pages holding those rows are
        decoded in full, far cheaper than reading a 1M-row vector column to keep a thousand rows.
        """
        files = where["_file"].to_numpy()
        rows = where["_row"].to_numpy()
        if self.table is not None:
            return self.table[column].take(pa.array(rows, pa.int64()))
        assert self.engine is not None
        parts, order = [], []
        for f in np.unique(files):
            mine = np.flatnonzero(files == f)
            got = self.engine.scan(Scan(spec, (self.files[int(f)],), (column,), rows={0: rows[mine]}))
            at = {int(r): i for i, r in enumerate(got["_row"].to_numpy())}
            parts.append(got[column].take(pa.array([at[int(r)] for r in rows[mine]], pa.int64())))
            order.append(mine)
        if not parts:
            return pa.chunked_array([], pa.list_(pa.float32()))
        merged = pa.chunked_array([c for p in parts for c in (p.chunks if isinstance(p, pa.ChunkedArray) else [p])])
        back = np.empty(len(rows), np.int64)
        back[np.concatenate(order)] = np.arange(len(rows))
        return merged.take(pa.array(back, pa.int64()))


def _key_index(spec: FeatureGroupSpec, table: pa.Table, rows: np.ndarray | None = None) -> pd.Index:
    import pandas as pd

    sub = table.select(spec.key_names)
    if rows is not None:
        sub = sub.take(pa.array(rows, pa.int64()))
    if len(spec.key_names) == 1:
        return pd.Index(sub.column(0).to_pandas())
    return pd.MultiIndex.from_arrays([sub[k].to_pandas() for k in spec.key_names])


def previous_commit(fg: CommittedTable, before: int | None = None, *, need_all_keys: bool = False
                    ) -> Previous | None:
    """The newest commit before ``before`` (default: the newest commit) that added rows, or None."""
    newest = fg.commit_of()
    commit = newest if before is None else min(before - 1, newest)
    if commit < 1:
        return None
    added = _added(fg, commit)
    if not added:
        return None
    all_keys = None
    if need_all_keys:
        all_keys = _key_index(fg.spec, fg.read(commit, columns=fg.spec.key_names)).unique()
    return Previous(commit, files=tuple(added), engine=fg.engine, all_keys=all_keys)


def _added(fg: CommittedTable, commit: int) -> list[str]:
    """The data files ``commit`` added, as the group's engine reads them (checked local paths, or
    objects the engine checks as it reads them)."""
    def files(c: int) -> list[str]:
        return fg.engine_files(fg.engine, c, verify=True)[1]

    return sorted(set(files(commit)) - set(files(commit - 1)))


Keys: TypeAlias = pa.Table | KeyRows  # a batch's rows, or a batched insert's keys spilled to disk


def _rows_of(table: Keys, rows: np.ndarray) -> pa.Table:
    """Rows ``rows`` of ``table`` (spilled keys are read back for them)."""
    return table.take(pa.array(rows, pa.int64())) if isinstance(table, pa.Table) else table.take(rows)


def _latest_per_key(spec: FeatureGroupSpec, table: Keys, rows: np.ndarray) -> tuple[np.ndarray, pd.Index]:
    """Of ``rows``, keep the newest row per key; return them and their keys."""
    sub = _rows_of(table, rows)
    times = pc.fill_null(sub[spec.event_time].combine_chunks().cast(pa.int64()), 0).to_numpy()
    order = np.argsort(times, kind="stable")
    keys = _key_index(spec, sub, order)
    keep = ~keys.duplicated(keep="last")
    return rows[order][keep], keys[keep]


def _present(spec: FeatureGroupSpec, expected: pd.Index, table: Keys) -> int:
    """How many of the keys ``expected`` ``table`` has (spilled keys: a group of whole keys at a time)."""
    if isinstance(table, pa.Table):
        return int(expected.isin(_key_index(spec, table)).sum())
    seen = np.zeros(len(expected), bool)
    for group in table.groups():
        seen |= expected.isin(_key_index(spec, group))
    return int(seen.sum())


def _drift_and_coverage(spec: FeatureGroupSpec, table: Keys, d: embedding.Derived, rule: VectorRules,
                        prev: Previous | None) -> list[CheckResult]:
    out: list[CheckResult] = []
    base = prev.commit if prev else None
    if rule.drift is not None:
        new = old = np.zeros((0, rule.dim), np.float32)
        shared_total = None
        if prev is not None:
            rng = np.random.default_rng(embedding.SEED)
            cand, n_valid = embedding.sample_rows(d.valid, rule.drift.sample * _CANDIDATES, rng)
            cand, cand_keys = _latest_per_key(spec, table, cand)
            wanted = _rows_of(table, cand).select(spec.key_names)
            # two steps: find the previous rows of these keys reading only keys and event_time, then
            # read the vectors of just the rows sampled (a 1M-row vector column is never decoded whole)
            old_keys = prev.rows(spec, [*spec.key_names, spec.event_time], wanted, locate=True)
            prev_rows, prev_keys = _latest_per_key(spec, old_keys, np.arange(old_keys.num_rows))
            pos = prev_keys.get_indexer(cand_keys)
            hit = pos >= 0
            shared_total = int(hit.sum()) if len(cand) == n_valid else None
            cand, pos = cand[hit], pos[hit]
            if len(cand) > rule.drift.sample:
                pick = np.sort(rng.choice(len(cand), rule.drift.sample, replace=False))
                cand, pos = cand[pick], pos[pick]
            where = old_keys.select(["_file", "_row"]).take(pa.array(prev_rows[pos], pa.int64()))
            p = embedding.derive(prev.values_at(spec, rule.feature, where), rule.feature, rule.dim)
            usable = p.valid  # stored vectors passed conform: valid unless the table was written otherwise
            new, old = d.matrix[cand[usable]], p.matrix[usable]
        out += embedding.check_drift(rule.feature, new, old, rule.drift, rule.metric, base_commit=base,
                                     shared_total=shared_total)
    if rule.coverage is not None:
        expected = None
        present = 0
        if prev is not None:
            exp_keys = (prev.all_keys if rule.coverage.expected == "table" and prev.all_keys is not None
                        else _key_index(spec, prev.rows(spec, spec.key_names)).unique())
            expected = len(exp_keys)
            present = _present(spec, exp_keys, table) if expected else 0
        out.append(embedding.check_coverage(rule.feature, rule.coverage, expected, present, base))
    return out


def _embedding_checks(spec: FeatureGroupSpec, table: Keys, d: embedding.Derived, rule: VectorRules,
                      previous: Previous | None, keys_of: Any) -> list[CheckResult]:
    out: list[CheckResult] = []
    if rule.norm_distribution is not None:
        out.append(embedding.check_norm_distribution(d, rule.norm_distribution))
    if rule.duplicates_max_share is not None:
        out.append(embedding.check_duplicates(d, keys_of, rule.duplicates_max_share))
    if rule.collapse is not None:
        out += embedding.check_collapse(d, rule.collapse)
    return out + _drift_and_coverage(spec, table, d, rule, previous)


def validate_batch(spec: FeatureGroupSpec, table: Keys, *, previous: Previous | None = None,
                   mode: Mode = "insert", expectations: Expectations | None = None,
                   derived: dict[str, embedding.Derived] | None = None,
                   suite: Callable[[], list[CheckResult]] | None = None) -> ValidationReport:
    """Run every check of ``spec`` on ``table`` (conformed or raw) and return the report (not stored).

    ``derived``: the per-row scalars of the vector columns computed beforehand, and ``suite``: the
    great_expectations results, run batch by batch (a batched insert's,
    :mod:`featurestore.validation.batches`); ``table`` then need not hold the vector columns, and may be
    the :class:`~featurestore.validation.batches.KeyRows` a large one spilled its keys to."""
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    exp = expectations or parse_expectations(spec)
    derived = _derived(exp, table, derived)
    numpy_checks = [embedding.check_dtype(derived[rule.feature], rule.dim) for rule in exp.vectors
                    if rule.feature in derived]
    timings["derive"] = time.perf_counter() - t0

    t = time.perf_counter()
    document = suite_document(spec, exp)
    gx.load()  # the heavy import (about 2 s), only when a batch is validated
    timings["import"] = time.perf_counter() - t

    def run_suite() -> list[CheckResult]:
        started = time.perf_counter()
        out = suite() if suite is not None else gx.run(document, frame(spec, exp, table, derived))
        timings["great_expectations"] = time.perf_counter() - started
        return out

    # the suite runs beside the numpy checks: both spend most of their time in code that releases the GIL
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="featurestore-validation")
    suite_future = pool.submit(run_suite)
    try:
        t = time.perf_counter()
        def keys_of(rows: np.ndarray) -> Any:
            """The entity keys of ``rows`` (only duplicate candidates: few), as printable values."""
            sub = _rows_of(table, rows)
            cols = [sub[k].to_pylist() for k in spec.key_names if k in sub.column_names]
            out = np.empty(len(rows), dtype=object)
            out[:] = cols[0] if len(cols) == 1 else list(zip(*cols))
            return out

        for rule in exp.vectors:
            found = derived.get(rule.feature)
            if found is None:
                continue
            with np.errstate(all="ignore"):  # extreme but finite values must not warn; results say enough
                numpy_checks += _embedding_checks(spec, table, found, rule, previous, keys_of)
        timings["embedding"] = time.perf_counter() - t
        ge_checks = suite_future.result()
    finally:
        pool.shutdown(wait=True)
    timings["total"] = time.perf_counter() - t0 - timings["import"]
    result = ValidationReport(
        report_id=report.new_report_id(), feature_group=spec.name, version=spec.version, mode=mode,
        policy=spec.policy, created_at=datetime.now(UTC), row_count=table.num_rows,
        spec_fingerprint=spec.fingerprint(), checks=tuple(ge_checks + numpy_checks),
        base_commit=previous.commit if previous else None, timings=timings,
    )
    return ValidationReport.from_json(result.to_json())  # canonical: equal to what is read back


def _derived(exp: Expectations, table: Keys, given: dict[str, embedding.Derived] | None
             ) -> dict[str, embedding.Derived]:
    """The per-row scalars of each vector column checked: ``given``, else derived from ``table``."""
    derived = {}
    for rule in exp.vectors:
        if given is not None and rule.feature in given:
            derived[rule.feature] = given[rule.feature]
        elif isinstance(table, pa.Table) and rule.feature in table.column_names:
            derived[rule.feature] = embedding.derive(table[rule.feature], rule.feature, rule.dim)
    return derived


def _needs_all_keys(exp: Expectations) -> bool:
    return any(v.coverage is not None and v.coverage.expected == "table" for v in exp.vectors)


def _ensure_suite(fg: CommittedTable) -> None:
    if not fg.root.exists(f"{fg.rel}/{SUITE_FILE}"):
        write_suite(fg.root, fg.rel, fg.spec)


def check_batch(fg: CommittedTable, batch: Keys, derived: dict[str, embedding.Derived] | None = None,
                suite: Callable[[], list[CheckResult]] | None = None) -> ValidationReport:
    """Validate a conformed batch against ``fg``'s spec and newest commit, storing nothing
    (``derived``, ``suite``: see :func:`validate_batch`)."""
    exp = parse_expectations(fg.spec)
    prev = previous_commit(fg, need_all_keys=_needs_all_keys(exp))
    return validate_batch(fg.spec, batch, previous=prev, mode="insert", expectations=exp, derived=derived,
                          suite=suite)


class InsertGate:
    """Validation of one insert: run before the commit, finished after it (see module doc)."""

    def __init__(self, fg: CommittedTable, batch: Keys, derived: dict[str, embedding.Derived] | None = None,
                 suite: Callable[[], list[CheckResult]] | None = None):
        self.fg = fg
        _ensure_suite(fg)
        self.report = check_batch(fg, batch, derived, suite)
        report.save(fg.root, self.report)
        if not self.report.success and fg.spec.policy == "strict":
            raise ValidationFailed(
                f"{self.report.summary()}\nNothing was committed (policy: strict). Report: "
                f"{fg.root.uri_of(self.report.path)}", report=self.report)

    @property
    def metadata(self) -> dict[str, str]:
        """Commit metadata linking the commit to its report."""
        return {"validation_report": self.report.report_id, "validation_status": self.report.status,
                "validation_policy": self.fg.spec.policy}

    def committed(self, commit: int) -> None:
        self.report = self.report.with_commit(commit)
        report.save(self.fg.root, self.report)


def validate_commit(fg: CommittedTable, commit: int, *, save: bool = True) -> ValidationReport:
    """Validate stored ``commit`` of ``fg`` against its spec and the commit before it; store the report
    unless ``save=False``."""
    exp = parse_expectations(fg.spec)
    prev = previous_commit(fg, before=commit, need_all_keys=_needs_all_keys(exp))
    added = _added(fg, commit) if commit > 0 else []
    spec = fg.spec
    if added:
        table = fg.engine.scan(Scan(spec, tuple(added), tuple(spec.columns)))
    else:
        table = spec.arrow_schema().empty_table()
    result = validate_batch(spec, table, previous=prev, mode="commit", expectations=exp)
    result = result.with_commit(commit)
    if save:
        report.save(fg.root, result)
    return result
