"""The sequence embedder: item vectors and an entity encoder learned from the order of events.

A SASRec-style causal self-attention encoder (item + position embeddings, ``blocks`` Transformer
blocks, see :mod:`featurestore.embed.sasrec`) reads each entity's time-ordered items (consecutive
repeats of one item collapse into one) and is trained to predict the next item:

- **Loss**: full-softmax cross-entropy over all items while there are at most ``full_softmax_items``
  (20,000) of them; above that, a sampled softmax over ``negatives`` shared negatives drawn by
  popularity, with the log-Q correction. Every position of a window is a training example; a history
  longer than ``window`` is cut into windows from its end, so every event is used.
- **Early stopping**: each entity's last event (when it has at least three) is held out; after each
  epoch the hit rate at 10 of those held-out events (all items ranked, history excluded, on up to
  ``validation_entities`` entities) is measured; training stops after ``patience`` epochs without
  improvement, after ``max_epochs`` or when ``max_minutes`` run out, and the best epoch's weights are kept.
- **Schedule**: Adam, warmed up over ``warmup_steps``, then a cosine decay to 0 at ``max_epochs`` or, with
  ``max_minutes``, at the step the budget affords (re-estimated each epoch), so budgeted runs end annealed.
  Steps batch windows of similar length (up to ``batch_size * window`` padded positions).
- **Vectors**: an item's vector is its embedding ``E_i`` (the model's output embedding), an entity's
  the encoder state ``h`` after its most recent ``window`` events before the cutoff; the model ranks
  items by ``h . E_i``. Stored vectors have ``dim = hidden + 1`` coordinates: items
  ``[E_i / M, sqrt(1 - |E_i|^2 / M^2)]`` (``M`` the largest norm, so rows have unit norm), entities
  ``[h / |h|, 0]``. Their cosine is ``h . E_i / (|h| M)``: per entity, both cosine and inner product
  rank items exactly as the model does (the norm-slack trick of Bachrach et al., RecSys 2014).
- **Reproducible**: the same events, ``seed`` and ``threads`` give bit-identical weights and vectors
  (with ``max_minutes``, where training stops and the schedule depend on the machine's speed).
- **Thin data**: after training, the best validation HR@10 is compared with what the default
  (co-occurrence) embedder would serve, fitted on the same events without the held-out ones and scored
  on the same held-out events; unless the sequence model beats it by one standard error of its own
  figure (the best of many epochs, so an optimistic one), the embedder returns the default
  embedder's model of all the events instead (``fallback``; a ``ThinDataWarning`` says so, and
  ``model_info["fallback"]`` holds both figures). ``fallback=False`` keeps the sequence model, warning only.
- **Bounded**: a step holds at most ``memory_mb`` of logits, activations and optimiser state
  (:meth:`SequenceEmbedder.memory_bound`); the training windows take ``8 * window`` bytes per window.

The fitted model travels with the item vectors as ``ItemModel.encoder`` (:class:`SequenceEncoder`):
the pipeline stores its weights as a checksummed artifact with the item commit and, on an incremental
run, re-encodes only the entities with new events with the committed weights, without retraining.

Example::

    from featurestore.embed.sequence import SequenceEmbedder
    model = SequenceEmbedder(dim=64, max_epochs=20, seed=0).fit(events)
    users = aggregate(events, model)      # the encoder's states, not a mean of item vectors
"""

from __future__ import annotations

import io
import json
import sys
import time
import warnings
import zipfile
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from featurestore.embed import sasrec
from featurestore.embed.aggregate import Aggregation, aggregate
from featurestore.embed.base import Embedder, ItemModel
from featurestore.embed.cooccurrence import CooccurrenceEmbedder
from featurestore.engine.base import Engine
from featurestore.engine.counting import sequence_tokens
from featurestore.engine.events import Events, EventTable
from featurestore.errors import CorruptData, PipelineError
from featurestore.storage import npy

FORMAT = "featurestore-sasrec-1"


class ThinDataWarning(UserWarning):
    """The events are too few for a sequence model to learn much: the co-occurrence embedder is likely
    to rank better on them."""


@dataclass(frozen=True)
class SequenceEmbedder:
    """A causal self-attention next-item model as an embedder (see the module docstring).

    ``dim``: stored vector size (the encoder is ``dim - 1`` wide, plus the norm-slack coordinate);
    ``window``: events the encoder reads per entity; ``max_minutes``: a training budget (the best epoch
    so far is kept); ``threads``: torch threads (part of what makes a run reproducible).
    """

    dim: int = 64
    blocks: int = 2
    heads: int = 1
    window: int = 200
    dropout: float = 0.2
    lr: float = 2e-3
    weight_decay: float = 0.0
    batch_size: int = 16
    schedule: str = "cosine"
    warmup_steps: int = 100
    min_steps: int = 256                 # an epoch takes at least this many steps (smaller batches if need be)
    max_epochs: int = 200
    patience: int = 5
    max_minutes: float | None = None
    full_softmax_items: int = 20_000
    negatives: int = 2048
    validation_entities: int = 10_000
    memory_mb: int = 1024
    seed: int = 0
    threads: int = 2
    min_events: int = 20                 # fewer training targets: refuse to train
    min_targets_per_item: float = 10.0   # fewer: warn (ThinDataWarning)
    baseline_check: bool = True          # compare with the default embedder on the held-out events (Thin data)
    fallback: bool = True                # ... and serve its model when it validates better (else: warn only)
    imports: tuple[str, ...] = field(default=("torch",), repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.dim < 3:
            raise PipelineError(f"SequenceEmbedder: dim must be at least 3; got {self.dim}")
        if (self.dim - 1) % self.heads:
            raise PipelineError(f"SequenceEmbedder: heads ({self.heads}) must divide dim - 1 ({self.dim - 1})")
        for name in ("blocks", "window", "batch_size", "max_epochs", "patience", "threads", "negatives", "min_steps"):
            if getattr(self, name) < 1:
                raise PipelineError(f"SequenceEmbedder: {name} must be >= 1; got {getattr(self, name)}")
        if self.schedule not in ("cosine", "constant"):
            raise PipelineError(f"SequenceEmbedder: schedule must be 'cosine' or 'constant'; got {self.schedule!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise PipelineError(f"SequenceEmbedder: dropout must be in [0, 1); got {self.dropout}")
        if self.max_minutes is not None and self.max_minutes <= 0:
            raise PipelineError(f"SequenceEmbedder: max_minutes must be positive; got {self.max_minutes}")

    @property
    def name(self) -> str:
        return "sequence"

    def params(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k != "imports"}

    def with_budget(self, max_minutes: float | None) -> SequenceEmbedder:
        return replace(self, max_minutes=max_minutes)

    def memory_bound(self, n_items: int) -> int:
        """Bytes training may hold beyond the events and the training windows."""
        return sasrec.memory_bytes(self._net(n_items), self._train_config(n_items))

    def _net(self, n_items: int) -> sasrec.NetConfig:
        return sasrec.NetConfig(n_items, self.dim - 1, self.blocks, self.heads, self.window, self.dropout)

    def _train_config(self, n_items: int) -> sasrec.TrainConfig:
        sampled = n_items > self.full_softmax_items
        return sasrec.TrainConfig(
            self.lr, self.batch_size, self.max_epochs, self.patience, self.seed, self.threads,
            None if self.max_minutes is None else self.max_minutes * 60, self.weight_decay,
            self.negatives if sampled else None, max(1, (self.memory_mb << 20) // (4 * 4)), self.schedule,
            self.warmup_steps, self.min_steps)

    def fit(self, events: EventTable, *, progress: bool = False, engine: Engine | None = None) -> ItemModel:
        """Train on ``events`` (loaded into memory: the model reads the sequences) and return the item
        vectors with the entity encoder attached, or the default embedder's model when that one ranks the
        held-out events better (``fallback``: see the module docstring)."""
        t0 = time.perf_counter()
        events = events.load()
        seqs = Sequences.of(events)
        train_seqs, val = seqs.holdout()
        data = train_seqs.windows(self.window)
        n_targets = int((data.targets > 0).sum())
        self._check_thin(n_targets, events.n_items)
        net_cfg, cfg = self._net(events.n_items), self._train_config(events.n_items)
        validate = _validator(train_seqs, val, self.window, self.validation_entities, self.seed)
        popularity = np.bincount(seqs.tokens - 1, minlength=events.n_items).astype(np.float64) + 1.0
        bar = _Progress(progress, self.max_epochs)
        try:
            result = sasrec.train(net_cfg, cfg, data, validate, popularity, bar.update)
        except (RuntimeError, ValueError) as exc:  # torch reports its failures as these
            raise PipelineError(f"training the sequence model failed: {exc}") from exc
        finally:
            bar.close()
        encoder = SequenceEncoder(net_cfg, result.state, events.item_ids.copy())
        info = {"epochs": result.epochs, "best_epoch": result.best_epoch,
                "validation_hr@10": round(result.best_hr, 6), "stopped": result.stopped,
                "steps": result.steps, "train_seconds": round(result.seconds, 3),
                "tokens_per_epoch": result.tokens_per_epoch, "validation_entities": int(val.shape[0]),
                "loss": "full_softmax" if cfg.negatives is None else f"sampled_softmax({cfg.negatives}, log-Q)",
                "memory_bound_mb": round(sasrec.memory_bytes(net_cfg, cfg) / 2**20, 1),
                "fit_seconds": round(time.perf_counter() - t0, 3), "history": result.history}
        if not self.baseline_check:
            return encoder.item_model(info)
        return self._judged(encoder.item_model(info), events, train_seqs, val, engine)

    def default_embedder(self) -> CooccurrenceEmbedder:
        """The embedder a thin log falls back to: the pipeline's default at this ``dim`` and ``seed`` (below
        10 coordinates, with fewer than its 4 similarity coordinates)."""
        return CooccurrenceEmbedder(dim=self.dim, seed=self.seed,
                                    similarity_dims=None if self.dim >= 10 else (self.dim - 2) // 2)

    def _judged(self, model: ItemModel, events: Events, train: Sequences, val: np.ndarray,
                engine: Engine | None) -> ItemModel:
        """``model``, or the default embedder's model of ``events`` unless ``model`` ranks the held-out events
        better by a standard error (``fallback``); either way a ThinDataWarning when it does not."""
        info, hr = model.info, model.info["validation_hr@10"]
        base = count_baseline_hr(train, val, events.n_items, self.validation_entities, self.seed)
        info["validation_hr@10_count_baseline"] = round(base, 6)
        try:
            default = self.default_embedder()
            judge = default_embedder_hr(default, events, train, val, self.validation_entities, self.seed, engine)
        except PipelineError as exc:  # too few co-occurring items for it: the count model judges, nothing to serve
            info["validation_hr@10_default"] = f"unavailable: {exc}"
            if hr < base:
                _warn_weak(hr, f"that of a next-item count model ({base:.4f})", "the default embedder cannot be "
                           "fitted on these events either; the sequence model is kept")
            return model
        info["validation_hr@10_default"] = round(judge, 6)
        # the best epoch's figure is the largest of many noisy ones (an optimistic estimate): the sequence
        # model is kept when it beats the default by one standard error of that figure
        se = float(np.sqrt(hr * (1 - hr) / max(1, min(val.shape[0], self.validation_entities))))
        info["validation_hr@10_se"] = round(se, 6)
        if hr - se >= judge:
            return model
        if not self.fallback:
            _warn_weak(hr, f"the co-occurrence embedder's ({judge:.4f}) plus one standard error ({se:.4f})",
                       "the sequence model is kept "
                       "(fallback=False); the co-occurrence embedder (the default) is likely to rank better here")
            return model
        served = default.fit(events, engine=engine)
        seq_info = {k: v for k, v in info.items() if k != "history"}
        served.info = {**served.info, "fallback": {
            "embedder": default.name, "params": default.params(), "validation_hr@10_sequence": round(hr, 6),
            "validation_hr@10_default": round(judge, 6), "sequence": seq_info}}
        _warn_weak(hr, f"the co-occurrence embedder's ({judge:.4f}) plus one standard error ({se:.4f})",
                   "serving the co-occurrence embedder's model instead (model_info['fallback']; fallback=False "
                   "keeps the sequence model)")
        return served

    def load_encoder(self, data: bytes, source: str = "model artifact") -> SequenceEncoder:
        """The encoder stored by :meth:`SequenceEncoder.to_bytes` (the pipeline's incremental runs)."""
        return SequenceEncoder.from_bytes(data, source)

    def _check_thin(self, n_targets: int, n_items: int) -> None:
        if n_targets < self.min_events:
            raise PipelineError(
                f"too little data for a sequence model: {n_targets} next-event examples (need at least "
                f"{self.min_events}; entities need 2+ events). Use the co-occurrence embedder for such logs")
        if n_targets < self.min_targets_per_item * n_items:
            warnings.warn(
                f"thin data for a sequence model: {n_targets:,} next-event examples for {n_items:,} items "
                f"({n_targets / max(n_items, 1):.1f} per item, fewer than {self.min_targets_per_item:g}); "
                "the co-occurrence embedder (the default) is likely to rank better on these events",
                ThinDataWarning, stacklevel=3)


def _warn_weak(hr: float, other: str, outcome: str) -> None:
    warnings.warn(f"thin data for a sequence model: its best validation HR@10 ({hr:.4f}) is not above {other} "
                  f"on the same held-out events (each entity's last event): {outcome}", ThinDataWarning,
                  stacklevel=4)


# ---- sequences --------------------------------------------------------------------------------------
@dataclass
class Sequences:
    """Token codes (item code + 1) of every entity in order: entity ``e`` is ``tokens[starts[e]:starts[e+1]]``."""

    tokens: np.ndarray      # int32
    starts: np.ndarray      # int64, n_entities + 1

    @classmethod
    def of(cls, events: Events, item_rows: np.ndarray | None = None) -> Sequences:
        """From events (consecutive repeats collapsed); ``item_rows`` maps event item codes to model rows
        (-1: an item the model does not know, left out)."""
        ent, item, _, _ = sequence_tokens(events)
        rows = item if item_rows is None else item_rows[item]
        keep = rows >= 0
        ent, rows = ent[keep], rows[keep]
        if item_rows is not None and ent.size:  # dropping unknown items may make repeats consecutive again
            new = np.ones(ent.size, dtype=bool)
            new[1:] = (ent[1:] != ent[:-1]) | (rows[1:] != rows[:-1])
            ent, rows = ent[new], rows[new]
        counts = np.bincount(ent, minlength=events.n_entities)
        return cls((rows + 1).astype(np.int32), np.concatenate([[0], np.cumsum(counts)]).astype(np.int64))

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.starts)

    def holdout(self) -> tuple[Sequences, np.ndarray]:
        """(sequences without each entity's last token when it has 3+, those tokens' positions)."""
        n = self.lengths
        held = self.starts[1:][n >= 3] - 1
        keep = np.ones(self.tokens.size, dtype=bool)
        keep[held] = False
        counts = n - (n >= 3)
        return Sequences(self.tokens[keep], np.concatenate([[0], np.cumsum(counts)])), \
            np.stack([np.flatnonzero(n >= 3), self.tokens[held]], axis=1) if held.size else np.zeros((0, 2), np.int64)

    def windows(self, window: int) -> sasrec.Batches:
        """(input, next token) pairs cut into left-padded windows from the end of each sequence."""
        pairs = np.maximum(self.lengths - 1, 0)
        chunks = -(-pairs // window)
        row0 = np.cumsum(chunks) - chunks
        ent = np.repeat(np.arange(pairs.size), pairs)
        j = np.arange(ent.size) - np.repeat(np.cumsum(pairs) - pairs, pairs)
        back = pairs[ent] - 1 - j
        row, col = row0[ent] + back // window, window - 1 - back % window
        inputs = np.zeros((int(chunks.sum()), window), dtype=np.int32)
        targets = np.zeros_like(inputs)
        src = self.starts[:-1][ent] + j
        inputs[row, col] = self.tokens[src]
        targets[row, col] = self.tokens[src + 1]
        return sasrec.Batches(inputs, targets)

    def last_windows(self, entities: np.ndarray, window: int) -> np.ndarray:
        """(len(entities), window) int32: each entity's last ``window`` tokens, left-padded with 0."""
        out = np.zeros((entities.size, window), dtype=np.int32)
        ends = self.starts[entities + 1]
        n = np.minimum(ends - self.starts[entities], window)
        row = np.repeat(np.arange(entities.size), n)
        back = np.arange(row.size) - np.repeat(np.cumsum(n) - n, n)   # 0 .. n-1 from the oldest kept
        out[row, window - n[row] + back] = self.tokens[ends[row] - n[row] + back]
        return out

    def history_matrix(self, entities: np.ndarray, n_items: int) -> sp.csr_matrix:
        n = self.lengths[entities]
        idx = np.concatenate([np.arange(self.starts[e], self.starts[e + 1]) for e in entities]) \
            if entities.size else np.zeros(0, np.int64)
        rows = np.repeat(np.arange(entities.size), n)
        m = sp.csr_matrix((np.ones(idx.size, np.float32), (rows, self.tokens[idx] - 1)),
                          shape=(entities.size, n_items))
        m.sum_duplicates()
        return m


def _validation_sample(val: np.ndarray, limit: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(entities, held-out item codes) of a seeded sample of at most ``limit`` validation entities."""
    if val.shape[0] > limit:
        val = val[np.sort(np.random.default_rng(seed).choice(val.shape[0], size=limit, replace=False))]
    return val[:, 0], val[:, 1] - 1


def _hit_rate(train: Sequences, entities: np.ndarray, targets: np.ndarray, score: Any) -> float:
    """HR@10 of ``targets`` under ``score(rows) -> (len(rows), n_items)``, all items ranked, history excluded."""
    hits = 0
    for lo in range(0, entities.size, 1024):
        sl = slice(lo, lo + 1024)
        s = np.array(score(np.arange(entities.size)[sl]), dtype=np.float32)
        h = train.history_matrix(entities[sl], s.shape[1])
        s[np.repeat(np.arange(h.shape[0]), np.diff(h.indptr)), h.indices] = -np.inf
        t = targets[sl]
        ts = s[np.arange(t.size), t]
        rank = (s > ts[:, None]).sum(axis=1)
        hits += int(((rank < 10) & np.isfinite(ts)).sum())
    return hits / max(entities.size, 1)


def _validator(train: Sequences, val: np.ndarray, window: int, limit: int, seed: int) -> Any:
    """HR@10 of the held-out next events of a seeded sample of entities, all items ranked, history excluded."""
    entities, targets = _validation_sample(val, limit, seed)
    windows = train.last_windows(entities, window)

    def hit_rate(net: Any) -> float:
        if entities.size == 0:
            return 0.0
        states = sasrec.last_states(net, windows)
        return _hit_rate(train, entities, targets, lambda rows: sasrec.scores(net, states[rows]))
    return hit_rate


#: the count baseline: items following within this many events, the last ``_BASE_LAST`` events decayed
_BASE_AHEAD, _BASE_LAST, _BASE_DECAY = 5, 20, 0.8


def count_baseline_hr(train: Sequences, val: np.ndarray, n_items: int, limit: int, seed: int) -> float:
    """Validation HR@10 of a count model on the same entities: how often item ``j`` followed item ``i``
    within the next 5 events (rows normalised), summed over the entity's last 20 events with a decay of
    0.8 per event. What a sequence model must beat to be worth its training."""
    entities, targets = _validation_sample(val, limit, seed)
    if entities.size == 0:
        return 0.0
    ent = np.repeat(np.arange(train.starts.size - 1), train.lengths)
    a_parts, b_parts = [], []
    for d in range(1, _BASE_AHEAD + 1):
        same = ent[:-d] == ent[d:]
        a_parts.append(train.tokens[:-d][same] - 1)
        b_parts.append(train.tokens[d:][same] - 1)
    a, b = np.concatenate(a_parts), np.concatenate(b_parts)
    t = sp.csr_matrix((np.ones(a.size, np.float32), (a, b)), shape=(n_items, n_items))
    t.sum_duplicates()
    t = sp.diags(1.0 / np.maximum(np.asarray(t.sum(axis=1)).ravel(), 1.0)).astype(np.float32) @ t
    last = train.last_windows(entities, _BASE_LAST)             # (n, 20) tokens, 0 pads, newest last
    w = _BASE_DECAY ** np.arange(_BASE_LAST - 1, -1, -1, dtype=np.float32)
    rows, cols = np.nonzero(last)
    q = sp.csr_matrix((w[cols], (rows, last[rows, cols] - 1)), shape=(entities.size, n_items))
    q.sum_duplicates()
    return _hit_rate(train, entities, targets, lambda r: (q[r] @ t).toarray())


#: how the pipeline aggregates entity vectors by default (``Pipeline.aggregation``): what it would serve
SERVED_AGGREGATION = Aggregation(half_life=2, max_events=10)


def default_embedder_hr(embedder: Embedder, events: Events, train: Sequences, val: np.ndarray, limit: int,
                        seed: int, engine: Engine | None = None) -> float:
    """Validation HR@10 of what ``embedder`` would serve through the pipeline (its item vectors and the
    default aggregation of each entity's events, ranked by inner product, as ``nearest`` ranks unit
    vectors), fitted on ``events`` without the held-out ones and scored on the same entities as the
    sequence model. A ``PipelineError`` when it cannot be fitted on them."""
    entities, targets = _validation_sample(val, limit, seed)
    if entities.size == 0:
        return 0.0
    seen = without_held_out(events, val[:, 0])
    model = embedder.fit(seen, engine=engine)
    vectors = aggregate(seen, model, SERVED_AGGREGATION, engine=engine)
    rows = pd.Index(vectors.entity_ids).get_indexer(events.entity_ids[entities])
    cols = pd.Index(events.item_ids).get_indexer(model.item_ids)
    query = np.zeros((entities.size, model.dim), np.float32)
    query[rows >= 0] = vectors.vectors[rows[rows >= 0]]

    def score(r: np.ndarray) -> np.ndarray:
        s = np.full((r.size, events.n_items), -np.inf, np.float32)   # items it left out rank last
        s[:, cols] = query[r] @ model.vectors.T
        s[rows[r] < 0] = -np.inf                                     # no vector: no hit
        return s
    return _hit_rate(train, entities, targets, score)


def without_held_out(events: Events, entities: np.ndarray) -> Events:
    """``events`` without the events of each listed entity's last token (its trailing run of one item:
    what :meth:`Sequences.holdout` holds out)."""
    ent, item = events.entity, events.item
    if not entities.size:
        return events
    new = np.ones(ent.size, dtype=bool)
    new[1:] = (ent[1:] != ent[:-1]) | (item[1:] != item[:-1])
    token_start = np.flatnonzero(new)
    ends = events.entity_starts()[entities + 1]
    mark = np.zeros(ent.size + 1, dtype=np.int64)
    np.add.at(mark, token_start[np.cumsum(new)[ends - 1] - 1], 1)
    np.add.at(mark, ends, -1)
    keep = np.cumsum(mark[:-1]) == 0
    return _subset(events, keep)


def _subset(events: Events, keep: np.ndarray) -> Events:
    """The events where ``keep``, with the same id tables and their counts and latest times recomputed."""
    ent, item, t = events.entity[keep], events.item[keep], events.time[keep]
    item_last = np.full(events.n_items, np.iinfo(np.int64).min, np.int64)
    np.maximum.at(item_last, item, t)
    entity_last = np.full(events.n_entities, np.iinfo(np.int64).min, np.int64)
    np.maximum.at(entity_last, ent, t)
    return replace(events, entity=ent, item=item, weight=events.weight[keep], time=t,
                   item_count=np.bincount(item, minlength=events.n_items).astype(np.int64), item_last=item_last,
                   entity_count=np.bincount(ent, minlength=events.n_entities).astype(np.int64),
                   entity_last=entity_last)


class _Progress:
    def __init__(self, show: bool, total: int):
        from tqdm import tqdm

        self.bar = tqdm(total=total, desc="sequence model", unit="epoch", disable=not show, leave=False,
                        file=sys.stderr)

    def update(self, row: dict[str, float]) -> None:
        self.bar.update()
        self.bar.set_postfix_str(f"loss {row['loss']:.3f} val HR@10 {row['val_hr@10']:.4f} (best "
                                 f"{row['best_hr@10']:.4f} @{int(row['best_epoch'])}) {row['epoch_s']:.0f}s/epoch, "
                                 f"<= {row['left_s'] / 60:.1f} min left")

    def close(self) -> None:
        self.bar.close()


# ---- the fitted model ----------------------------------------------------------------------------------
class SequenceEncoder:
    """A trained sequence model: item vectors, and entity vectors from event histories.

    ``rotation`` (dim x dim, orthogonal) is applied to every stored vector: the alignment onto the
    previous commit (:func:`featurestore.embed.align.align` composes it through :meth:`rotated`).
    """

    def __init__(self, net: sasrec.NetConfig, state: dict[str, np.ndarray], item_ids: np.ndarray,
                 rotation: np.ndarray | None = None):
        self.net_config, self.state, self.item_ids = net, state, item_ids
        self.rotation = rotation
        self._net: Any = None

    @property
    def dim(self) -> int:
        return self.net_config.hidden + 1

    def item_vectors(self) -> np.ndarray:
        e = self.state["items.weight"][1:].astype(np.float64)
        norms = np.linalg.norm(e, axis=1)
        m = float(norms.max()) if norms.size else 1.0
        slack = np.sqrt(np.maximum(0.0, 1.0 - (norms / m) ** 2))
        return self._rotate(np.hstack([e / m, slack[:, None]]))

    def item_model(self, info: dict[str, Any]) -> ItemModel:
        return ItemModel(self.item_ids, self.item_vectors(), info, query_dims=self.dim - 1, query_tail=(0.0,),
                         encoder=self)

    def _rotate(self, x: np.ndarray) -> np.ndarray:
        if self.rotation is not None:
            x = x @ self.rotation
        return x.astype(np.float32)

    def rotated(self, r: np.ndarray) -> SequenceEncoder:
        total = r if self.rotation is None else self.rotation @ r
        return SequenceEncoder(self.net_config, self.state, self.item_ids, np.asarray(total, np.float64))

    def network(self) -> Any:
        if self._net is None:
            self._net = sasrec.load(self.net_config, self.state)
        return self._net

    def encode(self, events: EventTable, entities: np.ndarray | None = None, *,
               batch: int = 1024) -> tuple[np.ndarray, np.ndarray]:
        """(entity codes, unit vectors) for the entities of ``events`` (or the codes in ``entities``) with at
        least one event on an item the model knows, from their last ``window`` such events. Encodes in
        batches of ``batch`` entities (memory: ``batch * window`` states per block)."""
        events = events.load()
        rows = pd.Index(self.item_ids).get_indexer(events.item_ids)
        seqs = Sequences.of(events, rows)
        codes = np.arange(events.n_entities) if entities is None else np.unique(np.asarray(entities, np.int64))
        codes = codes[seqs.lengths[codes] > 0]
        out = np.empty((codes.size, self.dim), dtype=np.float32)
        net = self.network()
        for lo in range(0, codes.size, batch):
            windows = seqs.last_windows(codes[lo:lo + batch], self.net_config.window)
            h = sasrec.last_states(net, windows, batch=batch).astype(np.float64)
            h /= np.maximum(np.linalg.norm(h, axis=1, keepdims=True), 1e-30)
            out[lo:lo + batch] = self._rotate(np.hstack([h, np.zeros((h.shape[0], 1))]))
        return codes, out

    def scores(self, events: EventTable, entities: np.ndarray) -> np.ndarray:
        """The model's own scores ``h . E_i`` of every item (columns: ``item_ids``) for entity codes."""
        events = events.load()
        rows = pd.Index(self.item_ids).get_indexer(events.item_ids)
        seqs = Sequences.of(events, rows)
        net = self.network()
        states = sasrec.last_states(net, seqs.last_windows(np.asarray(entities, np.int64), self.net_config.window))
        return sasrec.scores(net, states)

    # ---- storage ----
    def to_bytes(self) -> bytes:
        """A zip of .npy arrays and a JSON header: no pickle, and the same model gives the same bytes."""
        buf = io.BytesIO()
        header = {"format": FORMAT, "net": asdict(self.net_config), "state": sorted(self.state)}
        arrays = {f"state/{k}": v for k, v in self.state.items()}
        arrays["item_ids"] = np.asarray(self.item_ids.astype(str))
        if self.rotation is not None:
            arrays["rotation"] = self.rotation
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
            z.writestr(zipfile.ZipInfo("header.json", (1980, 1, 1, 0, 0, 0)), json.dumps(header, sort_keys=True))
            for name in sorted(arrays):
                arr = io.BytesIO()
                np.lib.format.write_array(arr, np.ascontiguousarray(arrays[name]), allow_pickle=False)
                z.writestr(zipfile.ZipInfo(f"{name}.npy", (1980, 1, 1, 0, 0, 0)), arr.getvalue())
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes, source: str = "model artifact") -> SequenceEncoder:
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as z:
                header = json.loads(z.read("header.json"))
                if header.get("format") != FORMAT:
                    raise CorruptData(f"{source}: format {header.get('format')!r}, expected {FORMAT!r}")

                def arr(name: str) -> np.ndarray:
                    return npy.read_array(io.BytesIO(z.read(f"{name}.npy")))
                state = {k: arr(f"state/{k}") for k in header["state"]}
                rotation = arr("rotation") if "rotation.npy" in z.namelist() else None
                ids = arr("item_ids").astype(object)
        except (zipfile.BadZipFile, KeyError, ValueError, OSError) as exc:
            raise CorruptData(f"{source} is not a readable sequence model: {exc}") from exc
        return cls(sasrec.NetConfig(**header["net"]), state, ids, rotation)
