"""Scheduled embedding pipelines: events -> item model -> alignment -> entity vectors -> commits.

A :class:`Pipeline` names an event source, an embedder, an aggregation and the two feature groups it
writes (item and entity vectors). :meth:`Pipeline.run` does one dated run; :meth:`Pipeline.backfill`
runs a range of dates in order. Runs are idempotent per (pipeline name, ``cutoff``): the commit
metadata records both, and a run that finds its own commit writes nothing.

Point in time: a run reads only events with ``time < cutoff``. Incremental mode: the item model is
retrained when the newest one is at least ``retrain_every`` old; otherwise it is reused and only the
entities with events since the previous run are rewritten. A retrained model rewrites every entity.

Example::

    from featurestore.engine.events import EventSource
    from featurestore.pipeline import Pipeline
    p = Pipeline("purchase_embeddings", EventSource("events/*.parquet"))
    result = p.run(store, cutoff=datetime(2026, 11, 1, tzinfo=UTC))
    print(result.summary())
"""

from __future__ import annotations

import importlib.util
import os
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from functools import partial
from typing import Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from featurestore.conform import to_utc
from featurestore.embed.aggregate import Aggregation, aggregate_batches, aggregate_frame
from featurestore.embed.align import align
from featurestore.embed.base import Embedder, EntityEncoder, ItemModel, matrix_bytes, matrix_from_bytes
from featurestore.embed.cooccurrence import CooccurrenceEmbedder
from featurestore.engine import resolve
from featurestore.engine.base import Engine, EngineName, Scan
from featurestore.engine.events import EventSource, EventTable
from featurestore.errors import PipelineError
from featurestore.feature_group import Commit, FeatureGroup
from featurestore.schema import TIMESTAMP, FeatureGroupSpec
from featurestore.storage import artifacts
from featurestore.storage.fs import exclusive
from featurestore.store import FeatureStore
from featurestore.validation import preload
from featurestore.version import __version__

Mode = Literal["full", "incremental"]


@dataclass
class RunResult:
    """What one dated run did."""

    pipeline: str
    cutoff: datetime
    status: Literal["written", "skipped"]
    events: int = 0
    items: int = 0
    entities: int = 0          # entities with a vector at this cutoff
    entities_written: int = 0
    dim: int = 0
    retrained: bool = False
    seconds: dict[str, float] = field(default_factory=dict)
    commits: list[Commit] = field(default_factory=list)
    alignment: dict[str, Any] | None = None
    message: str = ""

    def summary(self) -> str:
        if self.status == "skipped":
            return f"{self.pipeline} cutoff {self.cutoff.isoformat()}: {self.message}"
        stages = ", ".join(f"{k} {v:.2f}s" for k, v in self.seconds.items())
        commits = ", ".join(f"{c.feature_group} v{c.version} commit {c.commit} ({c.row_count} rows)"
                            for c in self.commits)
        lines = [
            f"{self.pipeline} cutoff {self.cutoff.isoformat()}: {self.events:,} events read, "
            f"{self.items:,} items, {self.entities:,} entities ({self.entities_written:,} written), {self.dim}-d, "
            f"item model {'retrained' if self.retrained else 'reused'}",
            f"  time: {stages}",
            f"  commits: {commits or 'none'}",
        ]
        if self.alignment:
            a = self.alignment
            lines.append(f"  alignment over {a['shared_items']:,} shared items: mean cosine "
                         f"{a['mean_cosine_before']:.3f} -> {a['mean_cosine_after']:.3f}, neighbour overlap@10 "
                         f"{a['neighbour_overlap_at_10']}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {"pipeline": self.pipeline, "cutoff": self.cutoff.isoformat(), "status": self.status,
                "events": self.events, "items": self.items, "entities": self.entities,
                "entities_written": self.entities_written, "dim": self.dim, "retrained": self.retrained,
                "seconds": self.seconds, "alignment": self.alignment, "message": self.message,
                "commits": [c.to_dict() for c in self.commits]}


@dataclass(frozen=True)
class Pipeline:
    """An embedding pipeline (see the module docstring).

    ``aggregation``: how entity vectors weigh their history (default: the last 10 events, half-life 2
    events, chosen with the default embedder on held-out next events); ``weights``: event-type weights
    (None: :data:`featurestore.engine.events.DEFAULT_WEIGHTS`); ``items`` and ``entities``: the
    (feature group, version) pairs written; ``mode``: ``"incremental"`` or ``"full"``;
    ``retrain_every``: in incremental mode, reuse an item model younger than this (0: retrain every run);
    ``retrain_runs``: also retrain once this many runs have reused the model; ``retrain_drift``: also retrain
    when more than this share of the events since the model's cutoff are on items the model does not know.
    ``engine``: what reads and counts the events, ``"duckdb"``, ``"spark"`` or an engine object (None: the
    store's); a run's ``engine=`` overrides it. Both give the same vectors (docs/scale-out.md).
    ``entity_batch_rows``: about how many entity vectors are aggregated and written at a time (None: the
    engine's default, 262,144); the run's entity commit is one commit of all of them whatever the size.
    When Spark makes and writes the entity vectors on its executors, its frame's partitions
    (``spark.sql.shuffle.partitions``) set that instead.
    """

    name: str
    source: EventSource
    embedder: Embedder = field(default_factory=CooccurrenceEmbedder)
    aggregation: Aggregation = field(default_factory=lambda: Aggregation(half_life=2, max_events=10))
    weights: Mapping[str, float] | None = None
    items: tuple[str, int] = ("item_embeddings", 1)
    entities: tuple[str, int] = ("user_embeddings", 1)
    mode: Mode = "incremental"
    retrain_every: timedelta = timedelta(0)
    align: bool = True
    retrain_runs: int | None = None
    retrain_drift: float | None = None
    engine: Engine | EngineName | None = None
    entity_batch_rows: int | None = None

    def __post_init__(self) -> None:
        if not self.name or not isinstance(self.name, str):
            raise PipelineError("a pipeline needs a name")
        if self.mode not in ("full", "incremental"):
            raise PipelineError(f"mode must be 'full' or 'incremental'; got {self.mode!r}")
        if not isinstance(self.embedder, Embedder):
            raise PipelineError(f"embedder {self.embedder!r} does not implement fit() and params()")
        if self.entity_batch_rows is not None and self.entity_batch_rows < 1:
            raise PipelineError(f"entity_batch_rows must be >= 1; got {self.entity_batch_rows}")

    def with_source(self, source: EventSource) -> Pipeline:
        return replace(self, source=source)

    def params(self) -> dict[str, Any]:
        return {"embedder": {"name": self.embedder.name, **self.embedder.params()},
                "aggregation": self.aggregation.params(),
                "weights": dict(self.weights) if self.weights is not None else "default",
                "mode": self.mode, "retrain_every_s": self.retrain_every.total_seconds(),
                **({"retrain_runs": self.retrain_runs} if self.retrain_runs is not None else {}),
                **({"retrain_drift": self.retrain_drift} if self.retrain_drift is not None else {}),
                "source": self.source.describe(), "columns": self.source.columns.to_dict()}

    def run(self, store: FeatureStore, cutoff: datetime, *, progress: bool | None = None,
            quiet: bool = False, force: bool = False, engine: Engine | EngineName | None = None) -> RunResult:
        """One run at cutoff ``cutoff`` (events strictly before it).

        A date already done is skipped without reading the events, unless ``force``: then the run is
        done again from the events as they are now and commits anew (its commits become the date's).
        A date with no event since the previous run's cutoff writes nothing (those vectors still hold).
        """
        chosen = resolve(engine or self.engine, store.engine)
        return _Run(self, store, to_utc(cutoff), _show(progress, quiet), force=force, engine=chosen).execute()

    def backfill(self, store: FeatureStore, start: datetime, end: datetime, every: timedelta = timedelta(days=1),
                 *, progress: bool | None = None, quiet: bool = False, force: bool = False,
                 on_result: Any = None, engine: Engine | EngineName | None = None) -> list[RunResult]:
        """Run every date from ``start`` to ``end`` (inclusive) in order, skipping dates already done
        (unless ``force``, see :meth:`run`)."""
        dates = schedule(start, end, every)
        results = []
        from tqdm import tqdm

        for d in tqdm(dates, desc=f"{self.name} backfill", unit="run", disable=not _show(progress, quiet)):
            r = self.run(store, d, progress=False, quiet=True, force=force, engine=engine)
            results.append(r)
            if on_result is not None:
                on_result(r)
        return results

    def done(self, store: FeatureStore, cutoff: datetime) -> bool:
        """Whether a run of this pipeline at ``cutoff`` has completed."""
        ent = store.feature_group(*self.entities)
        return _find(ent.history(), self.name, to_utc(cutoff)) is not None


def schedule(start: datetime, end: datetime, every: timedelta) -> list[datetime]:
    """The cutoffs start, start + every, ... up to and including end."""
    if every <= timedelta(0):
        raise PipelineError(f"--every must be positive; got {every}")
    start, end = to_utc(start), to_utc(end)
    if end < start:
        raise PipelineError(f"the backfill ends ({end.isoformat()}) before it starts ({start.isoformat()})")
    out, d = [], start
    while d <= end:
        out.append(d)
        d += every
    return out


def parse_every(text: str) -> timedelta:
    """``1d``, ``6h``, ``30m``, ``90s``, ``1w`` -> timedelta."""
    units = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
    text = text.strip()
    try:
        value, unit = float(text[:-1]), units[text[-1]]
    except (ValueError, KeyError, IndexError) as exc:
        raise PipelineError(f"a period looks like 1d, 6h, 30m, 90s or 1w; got {text!r}") from exc
    return timedelta(**{unit: value})


# ---- one run ------------------------------------------------------------------------------------
def _show(progress: bool | None, quiet: bool) -> bool:
    if quiet:
        return False
    return sys.stderr.isatty() if progress is None else progress


def _find(history: list[Commit], name: str, cutoff: datetime) -> Commit | None:
    for c in reversed(history):
        if c.metadata.get("pipeline") == name and c.cutoff == cutoff:
            return c
    return None


def _previous(history: list[Commit], name: str, cutoff: datetime) -> Commit | None:
    """The commit of this pipeline with the greatest cutoff before ``cutoff``."""
    best = None
    for c in history:
        if (c.metadata.get("pipeline") == name and c.cutoff is not None and c.cutoff < cutoff
                and (best is None or c.cutoff >= best.cutoff)):  # type: ignore[operator]
            best = c
    return best


def _next(history: list[Commit], name: str, cutoff: datetime) -> Commit | None:
    """The commit of this pipeline with the smallest cutoff after ``cutoff`` (a backfill run out of order)."""
    best = None
    for c in history:
        if (c.metadata.get("pipeline") == name and c.cutoff is not None and c.cutoff > cutoff
                and (best is None or c.cutoff < best.cutoff)):  # type: ignore[operator]
            best = c
    return best


def _key(spec: FeatureGroupSpec) -> str:
    if len(spec.entity_keys) != 1:
        raise PipelineError(f"{spec.key} must have exactly one entity key to hold pipeline output")
    return spec.entity_keys[0].name


def _vector_feature(spec: FeatureGroupSpec) -> tuple[str, int]:
    vecs = spec.vector_features
    if len(vecs) != 1:
        raise PipelineError(f"{spec.key} must have exactly one vector feature to hold pipeline output")
    return vecs[0].name, int(vecs[0].dim)  # type: ignore[arg-type]


def read_model(fg: FeatureGroup, commit: Commit, embedder: Embedder | None = None) -> ItemModel:
    """The item vectors written by one pipeline commit (rows whose event_time is that commit's cutoff);
    with ``embedder``, also the entity encoder the commit stored (a sequence model's weights), verified."""
    key = _key(fg.spec)
    vec, dim = _vector_feature(fg.spec)
    assert commit.cutoff is not None
    # only the files this commit added (appends never remove files), and only its run's rows
    files = fg.files(commit.commit)
    if commit.commit > 0:
        older = set(fg.files(commit.commit - 1))
        files = [f for f in files if f not in older]
    et = fg.spec.event_time
    table = fg.engine.scan(Scan(fg.spec, tuple(files), (key, vec, et)))
    if table.num_rows:
        table = table.filter(pc.equal(table[et], pa.scalar(commit.cutoff, table.schema.field(et).type)))
    ids = np.asarray([str(k) for k in table[key].to_pylist()], dtype=object)
    order = np.argsort(ids, kind="stable")
    flat = table[vec].combine_chunks().flatten().to_numpy(zero_copy_only=False) if table.num_rows else []
    vectors = np.ascontiguousarray(flat, dtype=np.float32).reshape(table.num_rows, dim)[order]
    query = commit.metadata.get("query")
    try:
        qvec = _query_vectors(fg, commit, query, ids.size)
        model = ItemModel.from_query(ids[order], vectors, {"commit": commit.commit}, query, qvec)
    except (ValueError, KeyError, TypeError) as exc:
        raise PipelineError(f"{fg.spec.key} commit {commit.commit}: its recorded query layout is unreadable "
                            f"({exc})") from exc
    model.encoder = _encoder(fg, commit, embedder)
    return model


def _query_vectors(fg: FeatureGroup, commit: Commit, query: dict[str, Any] | None, n: int) -> np.ndarray | None:
    """The items' history side a commit stored as an artifact (``ItemModel.query_vectors``), verified."""
    record = (query or {}).get("vectors")
    if record is None:
        return None
    shape = tuple(record["shape"])
    if shape[0] != n:
        raise ValueError(f"query vectors for {shape[0]} items where the commit holds {n}")
    return matrix_from_bytes(artifacts.load(fg.root, fg.rel, record), (shape[0], shape[1]))


def _encoder(fg: FeatureGroup, commit: Commit, embedder: Embedder | None) -> EntityEncoder | None:
    record = commit.metadata.get("model_artifact")
    if record is None or embedder is None:
        return None
    loader = getattr(embedder, "load_encoder", None)
    if loader is None:
        raise PipelineError(f"{fg.spec.key} commit {commit.commit} stores a model artifact that the embedder "
                            f"{embedder.name!r} cannot read")
    return loader(artifacts.load(fg.root, fg.rel, record), f"{fg.spec.key} commit {commit.commit} model")


def _ids_array(ids: np.ndarray, spec: FeatureGroupSpec) -> pa.Array:
    t = spec.entity_keys[0].arrow_type
    arr = pa.array(ids, pa.string())  # straight from the object array: no list of the ids
    if pa.types.is_string(t):
        return arr
    try:
        return arr.cast(t)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise PipelineError(f"{spec.key}: ids such as {ids[:3].tolist()} do not fit key type {t}") from exc


def _rows(spec: FeatureGroupSpec, ids: np.ndarray, vectors: np.ndarray, n_events: np.ndarray,
          last_us: np.ndarray) -> pa.Table:
    vec, dim = _vector_feature(spec)
    cols: dict[str, Any] = {
        _key(spec): _ids_array(ids, spec),
        vec: pa.FixedSizeListArray.from_arrays(pa.array(np.ascontiguousarray(vectors, np.float32).ravel()), dim),
    }
    names = {f.name for f in spec.features}
    if "n_events" in names:
        cols["n_events"] = pa.array(np.asarray(n_events, np.int64))
    if "last_event_time" in names:
        cols["last_event_time"] = pa.array(np.asarray(last_us, np.int64)).cast(TIMESTAMP)
    return pa.table(cols)


@dataclass
class _Written:
    """What a run's entity commit wrote: rows, entities without a vector, seconds spent aggregating."""

    rows: int = 0
    skipped: int = 0
    aggregating: float = 0.0
    commit: Any = None


class _Run:
    def __init__(self, p: Pipeline, store: FeatureStore, cutoff: datetime, show: bool, *, force: bool = False,
                 engine: Engine | None = None):
        self.p, self.store, self.cutoff, self.show, self.force = p, store, cutoff, show, force
        self.engine = engine or store.engine
        self.items_fg = store.feature_group(*p.items)
        self.ent_fg = store.feature_group(*p.entities)
        self.seconds: dict[str, float] = {}
        self.t = 0.0  # when the current stage started
        self.bar: Any = None  # the progress bar of a run
        self.retrained = False  # this run fitted (or re-read its own) item model
        self.since: int | None = None  # only entities with events since this time (us) are rewritten (None: all)
        for fg in (self.items_fg, self.ent_fg):
            _key(fg.spec)
            _, dim = _vector_feature(fg.spec)
            if dim != p.embedder.dim:
                raise PipelineError(f"{fg.spec.key} holds {dim}-d vectors but the embedder makes "
                                    f"{p.embedder.dim}-d ones: a new dimension is a new feature group version")

    def _stage(self, name: str, t0: float) -> float:
        now = time.perf_counter()
        self.seconds[name] = round(self.seconds.get(name, 0.0) + now - t0, 3)
        return now

    def execute(self) -> RunResult:
        """The run, holding the lock of its (pipeline, cutoff) on a local store: a second process running
        the same date waits, then finds it done and skips it (never a second commit of one run)."""
        if not self.store.root.local:
            return self._execute()
        stamp = self.cutoff.strftime("%Y%m%dT%H%M%S%fZ")
        with exclusive(os.path.join(self.store.root.uri, "_locks", f"run-{self.p.name}-{stamp}.lock")):
            return self._execute()

    def _execute(self) -> RunResult:
        p, cutoff = self.p, self.cutoff
        ent_hist = self.ent_fg.history()
        done = _find(ent_hist, p.name, cutoff)
        if done is not None and not self.force:
            return RunResult(p.name, cutoff, "skipped",
                             message=f"already done (commit {done.commit} of {self.ent_fg.spec.key}); nothing "
                                     "written, events not read (--force runs it again)", commits=[])
        self._importing: threading.Thread | None = None
        try:
            return self._write(ent_hist)
        finally:
            if self._importing is not None:
                self._importing.join()

    def _write(self, ent_hist: list[Commit]) -> RunResult:
        from tqdm import tqdm

        p = self.p
        self.bar = tqdm(total=5, desc=f"{p.name} {self.cutoff.date()}", unit="stage", disable=not self.show,
                        leave=False)
        try:
            self.t = time.perf_counter()
            events = self._read_events()
            with events:  # what the engine keeps for the events (temporary tables, spill files) is released
                stale = self._nothing_new(events, ent_hist)
                if stale is not None:
                    return stale
                model, model_commit, commits, alignment = self._item_model(events)
                written = self._entity_vectors(events, model, model_commit, ent_hist, alignment)
            commits.append(written.commit)
        finally:
            self.bar.close()
        return RunResult(p.name, self.cutoff, "written", events=len(events), items=len(model),
                         entities=events.n_entities - written.skipped if self.since is None else events.n_entities,
                         entities_written=written.rows, dim=model.dim, retrained=self.retrained,
                         seconds=_ordered(self.seconds), commits=commits, alignment=alignment)

    def _step(self, name: str, bar_steps: int = 1) -> None:
        """Close the stage ``name`` (its time and the progress bar)."""
        self.t = self._stage(name, self.t)
        self.bar.update(bar_steps)

    def _read_events(self) -> EventTable:
        p = self.p
        self.bar.set_postfix_str("read")
        events = self.engine.read_events(p.source, before=self.cutoff, weights=p.weights)
        self.t = self._stage("read", self.t)
        # the validation import (and the fit's own later imports) overlap the fit
        self._importing = preload.start(getattr(p.embedder, "imports", ()))
        self.bar.update()
        if len(events) == 0:
            raise PipelineError(f"no events before {self.cutoff.isoformat()} in {p.source.describe()}")
        return events

    def _nothing_new(self, events: EventTable, ent_hist: list[Commit]) -> RunResult | None:
        """A skip when no event arrived since the previous run's cutoff (a backfill past the end of the
        events): that run's vectors hold for this cutoff too, so nothing is rewritten."""
        prev = _previous(ent_hist, self.p.name, self.cutoff)
        if prev is None or prev.cutoff is None or len(events) == 0:
            return None
        newest = events.newest
        if newest is None or newest >= int(prev.cutoff.timestamp() * 1e6):
            return None
        return RunResult(self.p.name, self.cutoff, "skipped", events=len(events),
                         message=f"no event since the previous run's cutoff {prev.cutoff.isoformat()} (commit "
                                 f"{prev.commit} of {self.ent_fg.spec.key}): its vectors still hold; nothing written")

    def _item_model(self, events: EventTable) -> tuple[ItemModel, Commit, list[Commit], dict[str, Any] | None]:
        """The item model of this run: its own earlier commit (an interrupted run), a new fit, or the
        previous run's; with the commits written and the alignment figures."""
        p, cutoff = self.p, self.cutoff
        item_hist = self.items_fg.history()
        own = None if self.force else _find(item_hist, p.name, cutoff)  # an interrupted earlier run of this date
        prev = _previous(item_hist, p.name, cutoff)
        self.retrained = True
        if own is not None:
            self.bar.update(2)
            return read_model(self.items_fg, own, p.embedder), own, [], None
        reused = None
        if p.mode == "incremental" and prev is not None and cutoff - prev.cutoff < p.retrain_every:  # type: ignore[operator]
            reused = self._reusable(prev, events)
        if reused is None:
            model, alignment = self._fit(events, prev if prev is not None else _next(item_hist, p.name, cutoff))
            codes = _codes(events.item_ids, model.item_ids)
            table = _rows(self.items_fg.spec, model.item_ids, model.vectors, events.item_count[codes],
                          events.item_last[codes])
            meta = self._meta(events, model, retrained=True, model_commit=None, alignment=alignment)
            if model.encoder is not None:  # the weights an incremental run re-encodes entities with
                meta["model_artifact"] = artifacts.save(self.items_fg.root, self.items_fg.rel,
                                                        model.encoder.to_bytes(), kind=p.embedder.name)
            if model.query_vectors is not None:  # the items' history side, rows in the order read_model reads
                meta["query"]["vectors"].update(artifacts.save(
                    self.items_fg.root, self.items_fg.rel,
                    matrix_bytes(model.query_vectors[np.argsort(model.item_ids, kind="stable")]), kind="query"))
            model_commit = self.items_fg.insert(table, cutoff=cutoff, metadata=meta)
            self.t = self._stage("commit", self.t)
            return model, model_commit, [model_commit], alignment
        self.retrained = False
        self.t = self._stage("fit", self.t)
        self.bar.update(2)
        assert prev is not None
        return reused, prev, [], None

    def _reusable(self, prev: Commit, events: EventTable) -> ItemModel | None:
        """The previous item model, unless the schedule (``retrain_runs``, ``retrain_drift``) says to refit
        or it lacks the encoder this embedder needs."""
        p = self.p
        model = read_model(self.items_fg, prev, p.embedder)
        if model.encoder is None and hasattr(p.embedder, "load_encoder") and not _fallback(prev):
            return None   # (a model this embedder fell back to has no encoder of its own: it is reusable)
        if p.retrain_runs is not None:
            runs = sum(1 for c in self.ent_fg.history() if c.metadata.get("pipeline") == p.name
                       and c.metadata.get("model_commit") == prev.commit and not c.metadata.get("retrained")
                       and c.cutoff is not None and c.cutoff < self.cutoff)
            if runs >= p.retrain_runs:
                return None
        if p.retrain_drift is not None and prev.cutoff is not None:
            ev = events.load()
            new = ev.time >= int(prev.cutoff.timestamp() * 1e6)
            known = pd.Index(model.item_ids).get_indexer(ev.item_ids) >= 0
            if new.any() and float(np.mean(~known[ev.item[new]])) > p.retrain_drift:
                return None
        return model

    def _fit(self, events: EventTable, reference: Commit | None) -> tuple[ItemModel, dict[str, Any] | None]:
        """Fit a new item model and align it onto ``reference``: the run before this date, or for a
        backfill older than every run so far the next later run, so every commit shares one frame."""
        self.bar.set_postfix_str("fit")
        model = self.p.embedder.fit(events, progress=self.show, engine=self.engine)
        self._step("fit")
        self.bar.set_postfix_str("align")
        alignment = None
        if reference is not None:
            before = read_model(self.items_fg, reference)
            if before.layout() != model.layout() and self._switched(reference, model):
                model.info["not_aligned"] = (f"commit {reference.commit} holds the other of this embedder's two "
                                             "models (its own or its fallback): coordinates not comparable")
                self._step("align")
                return model, None
            if before.layout() != model.layout():
                raise PipelineError(
                    f"{self.items_fg.spec.key} commit {reference.commit} holds a model whose coordinates mean "
                    f"something else (layout {before.describe_layout()}, dim {before.dim}; this run's: "
                    f"{model.describe_layout()}, dim {model.dim}): the two are not comparable, so neither "
                    f"alignment nor the drift checks can hold. Write this model to new versions of the "
                    f"feature groups (e.g. items=('item_embeddings', 2), entities=('user_embeddings', 2)) "
                    f"or to another store; nothing was written")
            if self.p.align:
                model, a = align(model, before)
                alignment = a.to_dict() if a is not None else None
        self._step("align")
        return model, alignment

    def _switched(self, reference: Commit, model: ItemModel) -> bool:
        """Whether ``reference`` and ``model`` are this embedder's two kinds of model (its own and the one it
        falls back to on thin data, :class:`~featurestore.embed.sequence.SequenceEmbedder`)."""
        same = reference.metadata.get("params", {}).get("embedder", {}).get("name") == self.p.embedder.name
        return same and (_fallback(reference) != bool(model.info.get("fallback")))

    def _entity_vectors(self, events: EventTable, model: ItemModel, model_commit: Commit, ent_hist: list[Commit],
                        alignment: dict[str, Any] | None) -> _Written:
        """Aggregate and commit the entity vectors: every entity, or (incremental, same model as the
        previous run) only those with events since that run's cutoff. They are aggregated in batches,
        each written to its data files before the next is made, and committed together as one commit;
        on an engine with its own frames (Spark) they are made, written and validated on the cluster
        and never come to this process (:func:`~featurestore.embed.aggregate.aggregate_frame`)."""
        p = self.p
        self.bar.set_postfix_str("aggregate")
        self.since = None
        prev_ent = _previous(ent_hist, p.name, self.cutoff)
        if (not self.retrained and p.mode == "incremental" and prev_ent is not None
                and prev_ent.metadata.get("model_commit") == model_commit.commit):
            self.since = int(prev_ent.cutoff.timestamp() * 1e6)  # type: ignore[union-attr]
        written = _Written()
        spec = self.ent_fg.spec

        def meta(rows: int) -> dict[str, Any]:
            return self._meta(events, model, retrained=self.retrained, model_commit=model_commit.commit,
                              alignment=alignment, entities_written=rows,
                              incremental_since=prev_ent.cutoff.isoformat()  # type: ignore[union-attr]
                              if self.since is not None else None)

        # on the engine's frames (Spark) the vectors are made and written on the cluster: into the table's
        # staging folder (a file system the cluster shares), or as objects under the table's prefix
        start = time.perf_counter()  # the frame path's aggregation (the generator below keeps its own)
        writes = self.ent_fg.root.local or self.engine.reads_objects
        framed = aggregate_frame(events, model, p.aggregation, since=self.since, engine=self.engine,
                                 to_rows=partial(_rows, spec)) if writes else None
        if framed is not None:
            frame, considered = framed

            def staged(rows: int) -> dict[str, Any]:  # called once the frame's files are written
                written.rows, written.skipped = rows, considered - rows
                written.aggregating = time.perf_counter() - start
                self._aggregated(events, written)
                return meta(rows)

            written.commit = self.ent_fg.insert(frame, cutoff=self.cutoff, metadata=staged)
            return self._committed(written)

        def tables() -> Iterator[pa.Table]:
            start = time.perf_counter()
            for v in aggregate_batches(events, model, p.aggregation, since=self.since, engine=self.engine,
                                       batch_rows=p.entity_batch_rows):
                written.skipped += v.skipped
                if v.entity_ids.size:
                    written.rows += v.entity_ids.size
                    table = _rows(spec, v.entity_ids, v.vectors, v.n_events, v.last_event_time)
                    del v
                    written.aggregating += time.perf_counter() - start
                    yield table
                    start = time.perf_counter()
            written.aggregating += time.perf_counter() - start
            self._aggregated(events, written)

        written.commit = self.ent_fg.insert_batches(tables(), cutoff=self.cutoff, metadata=meta)
        return self._committed(written)

    def _aggregated(self, events: EventTable, written: _Written) -> None:
        """The entity vectors are made (and written): the events are not needed any more."""
        events.close()  # the engine's copy of the events (memory, spill files)
        self.seconds["aggregate"] = round(written.aggregating, 3)
        self.bar.update()
        self.bar.set_postfix_str("commit")

    def _committed(self, written: _Written) -> _Written:
        now = time.perf_counter()
        self.seconds["commit"] = round(self.seconds.get("commit", 0.0) + now - self.t - written.aggregating, 3)
        self.t = now
        self.bar.update()
        return written

    def _meta(self, events: EventTable, model: ItemModel, *, retrained: bool, model_commit: int | None,
              alignment: dict[str, Any] | None, **more: Any) -> dict[str, Any]:
        info = {k: v for k, v in model.info.items() if k != "alignment"}
        return {
            "pipeline": self.p.name, "cutoff": self.cutoff.isoformat(), "params": self.p.params(),
            "code_version": f"featurestore {__version__}", "model_commit": model_commit,
            "retrained": retrained, "model_info": info, "alignment": alignment, "query": model.query(),
            "events_read": len(events), "event_types": events.type_counts, "items": len(model),
            "entities": events.n_entities, "seconds": dict(self.seconds), **more,
        }


def _fallback(commit: Commit) -> bool:
    """Whether the commit's item model is the one its embedder fell back to (``model_info["fallback"]``)."""
    return bool((commit.metadata.get("model_info") or {}).get("fallback"))


def _ordered(seconds: dict[str, float]) -> dict[str, float]:
    order = ["read", "fit", "align", "aggregate", "commit"]
    return {k: seconds[k] for k in sorted(seconds, key=lambda k: order.index(k) if k in order else 99)}


def _codes(all_ids: np.ndarray, subset: np.ndarray) -> np.ndarray:
    import pandas as pd

    codes = pd.Index(all_ids).get_indexer(subset)
    if (codes < 0).any():  # pragma: no cover - an embedder returned an item it was not given
        raise PipelineError("the embedder returned items that are not in the events")
    return codes


def load_pipeline(path: str) -> Pipeline:
    """The pipeline defined by a Python file: its module-level ``pipeline`` (a :class:`Pipeline`), or
    the result of calling its ``build_pipeline()``."""
    if not os.path.isfile(path):
        raise PipelineError(f"no pipeline file {path!r}")
    name = "featurestore_pipeline_" + os.path.splitext(os.path.basename(path))[0]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise PipelineError(f"{path!r} is not a Python file")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        raise PipelineError(f"cannot load pipeline {path!r}: {type(exc).__name__}: {exc}") from exc
    obj = getattr(module, "pipeline", None)
    if obj is None and callable(getattr(module, "build_pipeline", None)):
        obj = module.build_pipeline()
    if not isinstance(obj, Pipeline):
        raise PipelineError(f"{path!r} defines no `pipeline = Pipeline(...)` (nor build_pipeline())")
    return obj
