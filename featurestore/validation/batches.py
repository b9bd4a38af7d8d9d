"""Validation of an insert that arrives in batches, with only one batch's vectors in memory at a time.

:class:`BatchChecks` takes each conformed batch as its data files are written (see
:class:`featurestore.storage.staging.StagedBatches`), runs the row-wise expectations on it
(:class:`SuiteParts`), keeps its keys and event times and the per-row scalars of its vectors (norm, the
row hashes the duplicate check uses; dimension, non-finite count and validity as one repeated value
when, as conform leaves them, every row is a right-sized finite vector), and drops the rest.
:meth:`BatchChecks.finish` returns the batch as the checks after the last batch see it: the keys and event
times of every row and a :class:`~featurestore.validation.embedding.Derived` per vector column whose
``matrix`` reads the rows a check samples back from the staged files (:class:`StagedRows`). Every check
then computes exactly what it computes on one in-memory batch (the same rows, samples and numbers).
The key codes that the uniqueness checks use come from hashes of each batch's text keys
(:class:`featurestore.keycodes.TextHashes`), not a dictionary of every key.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from featurestore.conform import check_unique
from featurestore.errors import ValidationError
from featurestore.keycodes import TextHashes, key_codes_hashed
from featurestore.schema import FeatureGroupSpec
from featurestore.validation import embedding, gx
from featurestore.validation.expectations import parse_expectations
from featurestore.validation.report import CheckResult
from featurestore.validation.suite import frame, key_frame, suite_document


@dataclass(frozen=True)
class StagedRows:
    """The vectors of column ``column`` in data files written for one append, addressed by row number
    within the append (``files``: (path, first row, rows) in order): rows are read file by file in
    record batches, so reading a sample holds at most one record batch of the column."""

    files: tuple[tuple[str, int, int], ...]
    column: str
    dim: int

    @property
    def shape(self) -> tuple[int, int]:
        return (sum(n for _, _, n in self.files), self.dim)

    def __getitem__(self, rows: np.ndarray) -> np.ndarray:
        import pyarrow.parquet as pq

        rows = np.asarray(rows, np.int64)
        out = np.zeros((len(rows), self.dim), np.float32)
        if not len(rows):
            return out
        starts = np.asarray([first for _, first, _ in self.files], np.int64)
        file_of = np.searchsorted(starts, rows, side="right") - 1
        for f in np.unique(file_of):
            mine = np.flatnonzero(file_of == f)
            path, first, _ = self.files[int(f)]
            mine = mine[np.argsort(rows[mine], kind="stable")]
            at = rows[mine] - first  # ascending row numbers within the file
            start = 0
            with pq.ParquetFile(path, pre_buffer=False, buffer_size=1 << 20) as pf:  # not the whole chunk
                for batch in pf.iter_batches(batch_size=_READ_ROWS, columns=[self.column]):
                    lo, hi = np.searchsorted(at, [start, start + batch.num_rows])
                    if hi > lo:
                        picked = batch.column(0).take(pa.array(at[lo:hi] - start, pa.int64()))
                        flat = pc.list_flatten(picked).to_numpy(zero_copy_only=False)
                        out[mine[lo:hi]] = np.asarray(flat, np.float32).reshape(hi - lo, self.dim)
                    start += batch.num_rows
                    if hi == len(at):
                        break
            pa.default_memory_pool().release_unused()  # what the file's pages took, back to the system
        return out


_READ_ROWS = 65_536  # rows of a vector column decoded at a time (64-d: 16 MB)


class BatchChecks:
    """What validation keeps of an insert's batches (see the module docstring)."""

    def __init__(self, spec: FeatureGroupSpec):
        self.spec = spec
        self.rules = [r for r in parse_expectations(spec).vectors]
        self.kept = [*spec.key_names, spec.event_time]  # keys and times; the other columns' checks ran per batch
        self.scalars: list[pa.Table] = []
        self.parts: dict[str, list[embedding.Derived]] = {r.feature: [] for r in self.rules}
        self.files: list[tuple[str, int, int]] = []
        self.hashes = TextHashes([*spec.key_names, spec.event_time])
        self.suite = SuiteParts(spec)

    def add(self, batch: pa.Table, files: Sequence[tuple[str, int, int]]) -> None:
        """Keep what validation needs of one conformed ``batch``, whose rows ``files`` hold."""
        whole: dict[str, embedding.Derived] = {}
        for rule in self.rules:
            d = whole[rule.feature] = embedding.derive(batch[rule.feature], rule.feature, rule.dim)
            hashes = None
            if rule.duplicates_max_share is not None:
                with np.errstate(over="ignore"):
                    assert isinstance(d.matrix, np.ndarray)
                    hashes = embedding.row_hashes(d.matrix)
            dims, nonfinite, valid = d.dims, d.nonfinite, d.valid
            if valid.all():  # what conform leaves: every row right-sized and finite, kept as one value each
                dims, nonfinite, valid = (np.broadcast_to(np.asarray(x, a.dtype), a.shape)
                                          for x, a in ((rule.dim, dims), (0, nonfinite), (True, valid)))
            self.parts[rule.feature].append(embedding.Derived(
                d.feature, d.value_type, d.fixed_size, dims, d.norms, nonfinite, valid,
                np.zeros((0, rule.dim), np.float32), hashes))
        self.hashes.add(batch)
        self.suite.add(batch, whole)
        del whole
        self.scalars.append(batch.select(self.kept))  # what the checks after the last batch read
        self.files += files

    def finish(self) -> tuple[pa.Table, dict[str, embedding.Derived]]:
        """The scalar columns of every row (keys unique per event time across the batches, or
        :class:`~featurestore.errors.DuplicateKey`), and the derived scalars of each vector column."""
        table = pa.concat_tables(self.scalars)
        self.scalars = []
        key_codes_hashed(table, self.kept, self.hashes, combined_only=True)  # kept with table
        self.hashes = TextHashes(self.hashes.columns)
        check_unique(self.spec, table)  # on those codes
        derived = {}
        for rule in self.rules:
            parts = self.parts[rule.feature]
            first = parts[0]
            hashes = [p.hashes for p in parts]
            derived[rule.feature] = embedding.Derived(
                first.feature, first.value_type, first.fixed_size,
                _joined([p.dims for p in parts]), np.concatenate([p.norms for p in parts]),
                _joined([p.nonfinite for p in parts]), _joined([p.valid for p in parts]),
                StagedRows(tuple(self.files), rule.feature, rule.dim),
                np.concatenate(hashes) if all(h is not None for h in hashes) else None)  # type: ignore[arg-type]
        return table, derived


def _joined(parts: list[np.ndarray]) -> np.ndarray:
    """The per-row ``parts`` in order; when each is one value repeated (a zero-stride view) and the
    values agree, again such a view of every row (no memory per row)."""
    filled = [p for p in parts if len(p)]
    values = {p.item(0) for p in filled} if all(p.strides == (0,) for p in filled) else set()
    if len(values) == 1:
        return np.broadcast_to(np.asarray(values.pop(), parts[0].dtype), (sum(len(p) for p in parts),))
    return np.concatenate(parts)


_TABLE_LEVEL = ("expect_table_row_count_to_be_between", "expect_column_values_to_be_unique")  # on the key codes


class SuiteParts:
    """The great_expectations suite of a batched insert, run batch by batch: the row-wise expectations
    (not null, between, in set: one verdict per row) on each batch's frame as it passes, merged exactly
    (:func:`featurestore.validation.gx.merged`), and the table-level ones (row count, keys unique) once on
    a frame of the (keys..., event_time) codes alone. No frame of every row's columns is ever built."""

    def __init__(self, spec: FeatureGroupSpec):
        self.spec = spec
        self.exp = parse_expectations(spec)
        document = suite_document(spec, self.exp)
        self.items = document["expectations"]
        self.row_wise = [i for i, e in enumerate(self.items) if e["type"] in gx.ROW_WISE]
        self.rest = [i for i in range(len(self.items)) if i not in self.row_wise]
        unknown = {self.items[i]["type"] for i in self.rest} - set(_TABLE_LEVEL)
        if unknown:  # the suite compiler and this split must grow together
            raise ValidationError(f"{spec.key}: no batch-by-batch form for expectation(s) {sorted(unknown)}")
        self.row_doc = {**document, "expectations": [self.items[i] for i in self.row_wise]}
        self.rest_doc = {**document, "expectations": [self.items[i] for i in self.rest]}
        self.parts: list[list[object]] = []
        self.starts: list[int] = []
        self.rows = 0

    def add(self, batch: pa.Table, derived: dict[str, embedding.Derived]) -> None:
        """Run the row-wise expectations on one conformed ``batch`` (``derived``: its vectors' scalars)."""
        if self.row_wise:
            gx.load()
            self.parts.append(gx.outcomes(self.row_doc, frame(self.spec, self.exp, batch, derived)))
            self.starts.append(self.rows)
        self.rows += batch.num_rows

    def results(self, table: pa.Table) -> list[CheckResult]:
        """Every expectation's CheckResult in suite order, as one run on all the rows gives it (``table``:
        every row's scalar columns, the key codes kept with it)."""
        out: dict[int, CheckResult] = {}
        if self.rest:
            gx.load()
            out.update(zip(self.rest, gx.run(self.rest_doc, key_frame(self.spec, self.exp, table)), strict=True))
        for k, i in enumerate(self.row_wise):  # every batch was added, an empty insert's empty one too
            out[i] = gx.merged(self.items[i], [p[k] for p in self.parts], self.starts)
        return [out[i] for i in range(len(self.items))]
