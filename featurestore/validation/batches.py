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

Past :data:`SPILL_ROWS` rows (2M) the keys and event times go to disk instead (:class:`KeyRows`): hash
buckets of whole keys, which the checks over every row's keys (uniqueness, great_expectations' row count
and values-unique, coverage) read a group of buckets at a time, their results added up exactly; a
sample's keys are read back from the staged files. The vectors' norms go to a file beside them
(:class:`~featurestore.validation.embedding.DiskColumn`), which the norm statistics and the collapse
sample read chunk by chunk. What then stays in memory per row is only a vector's row hash, when the
spec checks duplicate vectors.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from featurestore.conform import check_unique, duplicate_key, duplicated
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
        rows = np.asarray(rows, np.int64)
        out = np.zeros((len(rows), self.dim), np.float32)
        if len(rows):
            flat = pc.list_flatten(staged_rows(self.files, [self.column], rows).column(0))
            out[:] = np.asarray(flat.to_numpy(zero_copy_only=False), np.float32).reshape(len(rows), self.dim)
        return out


def staged_rows(files: Sequence[tuple[str, int, int]], columns: list[str], rows: np.ndarray) -> pa.Table:
    """``columns`` of rows ``rows`` (numbered within the append) of the data files ``files`` ((path, first
    row, rows) in order), in the order asked: read file by file in record batches, so a sample holds at
    most one record batch of the columns besides the rows it keeps."""
    import pyarrow.parquet as pq

    rows = np.asarray(rows, np.int64)
    starts = np.asarray([first for _, first, _ in files], np.int64)
    file_of = np.searchsorted(starts, rows, side="right") - 1
    pieces, order = [], []
    for f in np.unique(file_of):
        mine = np.flatnonzero(file_of == f)
        path, first, _ = files[int(f)]
        mine = mine[np.argsort(rows[mine], kind="stable")]
        at = rows[mine] - first  # ascending row numbers within the file
        start = 0
        with pq.ParquetFile(path, pre_buffer=False, buffer_size=1 << 20) as pf:  # not the whole chunk
            for batch in pf.iter_batches(batch_size=_READ_ROWS, columns=columns):
                lo, hi = np.searchsorted(at, [start, start + batch.num_rows])
                if hi > lo:
                    pieces.append(batch.take(pa.array(at[lo:hi] - start, pa.int64())))
                start += batch.num_rows
                if hi == len(at):
                    break
        order.append(mine)
        pa.default_memory_pool().release_unused()  # what the file's pages took, back to the system
    if not pieces:
        return pq.read_schema(files[0][0]).empty_table().select(columns) if files else \
            pa.table({c: pa.array([], pa.null()) for c in columns})
    back = np.empty(len(rows), np.int64)
    back[np.concatenate(order)] = np.arange(len(rows))
    return pa.Table.from_batches(pieces).take(pa.array(back, pa.int64()))


_READ_ROWS = 65_536  # rows of a vector column decoded at a time (64-d: 16 MB)


SPILL_ROWS = 2_000_000  # an insert's keys stay in memory up to this many rows, beyond it they go to disk
_BUCKETS = 256  # hash buckets of spilled keys: a bucket group holds SPILL_ROWS rows, or one bucket
ROW = "__fs_row"  # a spilled key's row number within the append


class KeyRows:
    """The keys and event times (``columns``) of a batched insert's rows, in row order.

    Up to ``spill_rows`` rows they are kept in memory (:meth:`table`). Past that they are written to
    Arrow files in a temporary folder (inside ``spill_dir`` when given), into one of 256 buckets by a hash
    of the keys, each row with its row number (:data:`ROW`), so every row of one key lands in one bucket.
    The checks that look at every row's keys then read them a group of whole buckets at a time
    (:meth:`groups`): uniqueness (:meth:`check_unique`), great_expectations' values-unique
    (:class:`SuiteParts`) and coverage; a sample's keys are read back from the staged data files
    (:meth:`take`). What stays in memory is then one bucket group, about ``spill_rows`` rows at a time
    (more only when one bucket outgrows it: more than 256 x ``spill_rows`` rows).
    """

    def __init__(self, spec: FeatureGroupSpec, spill_rows: int, spill_dir: str | None = None):
        self.spec = spec
        self.columns = [*spec.key_names, spec.event_time]
        self.spill_rows, self.spill_dir = spill_rows, spill_dir
        self.parts: list[pa.Table] = []
        self.num_rows = 0
        self.folder: str | None = None
        self.writers: dict[int, Any] = {}
        self.buckets: list[int] = []  # the finished bucket files, once the last batch is in
        self.files: Sequence[tuple[str, int, int]] = ()

    @property
    def column_names(self) -> list[str]:
        return self.columns

    @property
    def spilled(self) -> bool:
        return self.folder is not None

    def add(self, batch: pa.Table, files: Sequence[tuple[str, int, int]]) -> None:
        """Keep ``batch``'s keys and event times (its rows follow the rows added before; ``files``: every
        staged data file so far)."""
        keys = batch.select(self.columns)
        self.files = files
        if self.folder is None and self.num_rows + keys.num_rows > self.spill_rows:
            self.folder = tempfile.mkdtemp(prefix="featurestore-keys-", dir=self.spill_dir)
            first = 0
            for part in self.parts:
                self._write(part, first)
                first += part.num_rows
            self.parts = []
        if self.folder is None:
            self.parts.append(keys)
        else:
            self._write(keys, self.num_rows)
        self.num_rows += keys.num_rows

    def _write(self, keys: pa.Table, first: int) -> None:
        import pandas as pd

        if not keys.num_rows:
            return
        bucket = pd.util.hash_pandas_object(keys.select(self.spec.key_names).to_pandas(), index=False) \
            .to_numpy() % np.uint64(_BUCKETS)
        order = np.argsort(bucket, kind="stable")  # rows stay in row order within a bucket
        bounds = np.searchsorted(bucket[order], np.arange(_BUCKETS + 1))
        rows = pa.array(np.arange(first, first + keys.num_rows, dtype=np.int64))
        keys = keys.append_column(ROW, rows).take(pa.array(order))
        assert self.folder is not None
        for b in np.flatnonzero(np.diff(bounds)):
            writer = self.writers.get(int(b))
            if writer is None:
                writer = self.writers[int(b)] = pa.ipc.new_stream(self._bucket(int(b)), keys.schema)
            writer.write_table(keys.slice(int(bounds[b]), int(bounds[b + 1] - bounds[b])))

    def table(self) -> pa.Table:
        """Every row's keys and event time (only when not :attr:`spilled`)."""
        assert self.folder is None
        out = pa.concat_tables(self.parts) if self.parts else \
            pa.table({c: pa.array([], pa.null()) for c in self.columns})
        self.parts = []
        return out

    def groups(self) -> Iterator[pa.Table]:
        """Every row's keys, event time and :data:`ROW`, a group of whole buckets at a time (spilled)."""
        assert self.folder is not None
        self._close_writers()
        group: list[pa.Table] = []
        rows = 0
        for b in self.buckets:
            with pa.OSFile(self._bucket(b)) as source:
                bucket = pa.ipc.open_stream(source).read_all()
            if group and rows + bucket.num_rows > self.spill_rows:
                yield pa.concat_tables(group)
                group, rows = [], 0
            group.append(bucket)
            rows += bucket.num_rows
        if group:
            yield pa.concat_tables(group)

    def check_unique(self) -> None:
        """:class:`~featurestore.errors.DuplicateKey` as :func:`~featurestore.conform.check_unique` raises it
        on all the rows: every repeated (keys..., event_time) counted, the example the first such row."""
        n_keys, first, example = 0, -1, None
        for group in self.groups():
            found = duplicated(self.spec, group)
            if found is None:
                continue
            n_keys += found[1]
            at = np.flatnonzero(found[0])
            numbers = group[ROW].to_numpy()[at]
            if example is None or int(numbers.min()) < first:
                first = int(numbers.min())
                example = group.slice(int(at[np.argmin(numbers)]), 1)
        if example is not None:
            raise duplicate_key(self.spec, n_keys, example, 0)

    def take(self, rows: np.ndarray) -> pa.Table:
        """The keys and event times of ``rows`` (row numbers within the append), in that order, read back
        from the staged data files (spilled)."""
        assert self.folder is not None
        return staged_rows(self.files, self.columns, np.asarray(rows, np.int64))

    def _bucket(self, b: int) -> str:
        assert self.folder is not None
        return os.path.join(self.folder, f"{b:03d}.arrows")

    def _close_writers(self) -> None:
        """Finish the bucket files (after the last batch)."""
        for b, writer in sorted(self.writers.items()):
            writer.close()
            self.buckets.append(b)
        self.writers = {}

    def close(self) -> None:
        """Delete the spilled keys: the folder this object made, and only that."""
        with contextlib.suppress(Exception):
            self._close_writers()
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)


class BatchChecks:
    """What validation keeps of an insert's batches (see the module docstring)."""

    def __init__(self, spec: FeatureGroupSpec, *, spill_rows: int | None = None, spill_dir: str | None = None):
        self.spec = spec
        self.rules = [r for r in parse_expectations(spec).vectors]
        self.kept = [*spec.key_names, spec.event_time]  # keys and times; the other columns' checks ran per batch
        self.keys = KeyRows(spec, SPILL_ROWS if spill_rows is None else spill_rows, spill_dir)
        self.parts: dict[str, list[embedding.Derived]] = {r.feature: [] for r in self.rules}
        self.files: list[tuple[str, int, int]] = []
        self.hashes = TextHashes([*spec.key_names, spec.event_time])
        self.suite = SuiteParts(spec)
        self.added = 0  # batches

    def add(self, batch: pa.Table, files: Sequence[tuple[str, int, int]]) -> None:
        """Keep what validation needs of one conformed ``batch``, whose rows ``files`` hold."""
        self.added += 1
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
        self.suite.add(batch, whole)
        del whole
        self.files += files
        self.keys.add(batch, self.files)  # what the checks after the last batch read
        if self.keys.spilled:  # their codes come from each bucket group's own dictionary
            self.hashes = TextHashes(())
            for rule in self.rules:  # and the norms go to disk beside them
                self.parts[rule.feature] = [self._spill_norms(rule.feature, p) if len(p.norms) else p
                                            for p in self.parts[rule.feature]]
        else:
            self.hashes.add(batch)

    def _spill_norms(self, feature: str, part: embedding.Derived) -> embedding.Derived:
        """``part`` with its norms appended to ``feature``'s file in the spill folder instead."""
        if len(part.norms):
            assert self.keys.folder is not None and isinstance(part.norms, np.ndarray)
            with open(self._norms_path(feature), "ab") as out:
                np.ascontiguousarray(part.norms, np.float64).tofile(out)
        return dataclasses.replace(part, norms=np.zeros(0, np.float64))

    def _norms_path(self, feature: str) -> str:
        assert self.keys.folder is not None
        return os.path.join(self.keys.folder, f"norms-{[r.feature for r in self.rules].index(feature)}.f64")

    def finish(self) -> tuple[pa.Table | KeyRows, dict[str, embedding.Derived]]:
        """The keys and event times of every row (unique across the batches, or
        :class:`~featurestore.errors.DuplicateKey`): a table, or the :class:`KeyRows` when they were spilled
        to disk; and the derived scalars of each vector column."""
        if self.keys.spilled:
            self.keys.check_unique()
            table: pa.Table | KeyRows = self.keys
        else:
            table = self.keys.table()
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
                _joined([p.dims for p in parts]),
                embedding.DiskColumn(self._norms_path(rule.feature), self.keys.num_rows) if self.keys.spilled
                else np.concatenate([p.norms for p in parts]),
                _joined([p.nonfinite for p in parts]), _joined([p.valid for p in parts]),
                StagedRows(tuple(self.files), rule.feature, rule.dim),
                np.concatenate(hashes) if all(h is not None for h in hashes) else None)  # type: ignore[arg-type]
            self.parts[rule.feature] = []  # each batch's copy, not kept beside the joined one
            del parts, first, hashes
        return table, derived


def _joined(parts: list[np.ndarray]) -> np.ndarray:
    """The per-row ``parts`` in order; when each is one value repeated (a zero-stride view) and the
    values agree, again such a view of every row (no memory per row)."""
    filled = [p for p in parts if len(p)]
    values = {p.item(0) for p in filled} if all(p.strides == (0,) for p in filled) else set()
    if len(values) == 1:
        return np.broadcast_to(np.asarray(values.pop(), parts[0].dtype), (sum(len(p) for p in parts),))
    return np.concatenate(parts)


_TABLE_LEVEL = (gx.ROW_COUNT, gx.UNIQUE)  # on the key codes


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

    def results(self, table: pa.Table | KeyRows) -> list[CheckResult]:
        """Every expectation's CheckResult in suite order, as one run on all the rows gives it (``table``:
        every row's keys and event time, the key codes kept with it; or the :class:`KeyRows` they were
        spilled to: then values-unique runs on each group of whole keys and the results add up)."""
        out: dict[int, CheckResult] = {}
        if self.rest and isinstance(table, KeyRows):  # on each group of whole keys; the results add up
            gx.load()
            parts, rows = [], []
            for group in table.groups():
                got = gx.outcomes(self.rest_doc, key_frame(self.spec, self.exp, group))
                numbers = group[ROW].to_numpy()
                shown = {int(i) for r in got if r is not None
                         for i in ((r.result or {}).get("partial_unexpected_index_list") or [])}
                parts.append(got)
                rows.append({i: int(numbers[i]) for i in shown})  # the row numbers of the rows shown only
                del group, numbers
            out.update({i: gx.merged(self.items[i], [p[k] for p in parts], rows=rows)
                        for k, i in enumerate(self.rest)})
        elif self.rest:
            gx.load()
            out.update(zip(self.rest, gx.run(self.rest_doc, key_frame(self.spec, self.exp, table)), strict=True))
        for k, i in enumerate(self.row_wise):  # every batch was added, an empty insert's empty one too
            out[i] = gx.merged(self.items[i], [p[k] for p in self.parts], self.starts)
        return [out[i] for i in range(len(self.items))]
