"""The PyTorch side of the sequence embedder: a SASRec-style causal self-attention encoder.

Only this module imports torch, and only inside functions (``featurestore[sequence]`` installs it), so
``import featurestore`` stays fast and works without the extra. The network is Kang and McAuley's
SASRec (ICDM 2018) as reproduced with a full cross-entropy loss by Klenitskiy and Vasilev (RecSys 2023):
item + position embeddings, ``blocks`` pre-norm Transformer blocks with causal attention, a final layer
norm; the score of item ``i`` after a prefix is ``h . E_i`` with ``E`` the (shared) item embeddings.

Weights travel as a dict of float32 numpy arrays (:func:`train` returns one, :func:`encode` takes one),
so the stored artifact is a plain ``.npz`` and never a pickle.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from featurestore.errors import PipelineError

#: bytes per float
_F = 4


@dataclass(frozen=True)
class NetConfig:
    n_items: int        # items (codes 1..n_items; 0 pads)
    hidden: int
    blocks: int
    heads: int
    window: int
    dropout: float


@dataclass(frozen=True)
class TrainConfig:
    lr: float
    batch_size: int
    max_epochs: int
    patience: int
    seed: int
    threads: int
    max_seconds: float | None
    weight_decay: float
    negatives: int | None       # None: full softmax; else shared sampled negatives with log-Q correction
    logit_budget: int           # floats of logits one step may hold (bounds memory)
    schedule: str = "cosine"    # "cosine": warm-up, then cosine decay to 0 over the run; "constant"
    warmup_steps: int = 100
    min_steps: int = 1          # steps an epoch takes at least: smaller batches on a small log


@dataclass
class TrainResult:
    state: dict[str, np.ndarray]
    epochs: int
    best_epoch: int
    best_hr: float
    history: list[dict[str, float]]
    stopped: str               # "patience", "max_epochs" or "budget"
    steps: int
    seconds: float
    tokens_per_epoch: int


def _torch() -> Any:
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise PipelineError("the sequence embedder needs PyTorch: pip install 'featurestore[sequence]'") from exc
    return torch


def build(cfg: NetConfig) -> Any:
    """The network (a torch.nn.Module): ``net(seq, pos)`` maps (B, L) item codes, right-padded with 0,
    and their position codes to (B, L, hidden) states. Attention is causal, so no event sees padding."""
    torch = _torch()
    nn, fn = torch.nn, torch.nn.functional

    class Block(nn.Module):  # type: ignore[misc,name-defined]
        """Pre-norm causal self-attention and a position-wise feed-forward layer, both residual."""

        def __init__(self) -> None:
            super().__init__()
            self.norm1, self.norm2 = nn.LayerNorm(cfg.hidden), nn.LayerNorm(cfg.hidden)
            self.qkv, self.out = nn.Linear(cfg.hidden, 3 * cfg.hidden), nn.Linear(cfg.hidden, cfg.hidden)
            self.ff1, self.ff2 = nn.Linear(cfg.hidden, cfg.hidden), nn.Linear(cfg.hidden, cfg.hidden)
            self.drop = nn.Dropout(cfg.dropout)

        def forward(self, x: Any) -> Any:
            b, length, d = x.shape
            q, k, v = self.qkv(self.norm1(x)).view(b, length, 3, cfg.heads, d // cfg.heads).permute(2, 0, 3, 1, 4)
            # no dropout on the attention weights: it makes the CPU kernel about 10x slower
            a = fn.scaled_dot_product_attention(q, k, v, is_causal=True)
            x = x + self.drop(self.out(a.transpose(1, 2).reshape(b, length, d)))
            return x + self.drop(self.ff2(self.drop(fn.gelu(self.ff1(self.norm2(x))))))

    class SASRec(nn.Module):  # type: ignore[misc,name-defined]
        def __init__(self) -> None:
            super().__init__()
            self.items = nn.Embedding(cfg.n_items + 1, cfg.hidden, padding_idx=0)
            self.positions = nn.Embedding(cfg.window, cfg.hidden)
            self.drop = nn.Dropout(cfg.dropout)
            self.layers = nn.ModuleList([Block() for _ in range(cfg.blocks)])
            self.norm = nn.LayerNorm(cfg.hidden)
            nn.init.normal_(self.items.weight, std=cfg.hidden ** -0.5)
            with torch.no_grad():
                self.items.weight[0].zero_()

        def forward(self, seq: Any, pos: Any) -> Any:
            x = self.drop(self.items(seq) * math.sqrt(cfg.hidden) + self.positions(pos))
            for layer in self.layers:
                x = layer(x)
            return self.norm(x)

    return SASRec()


def right_pad(x: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Left-padded rows -> (codes right-padded and cut to the longest row, position codes, lengths). An
    event's position counts back from the window's end, as in the left-padded layout (the newest event
    of a full window is at ``window - 1``)."""
    n = (x > 0).sum(axis=1)
    width = max(1, int(n.max()) if n.size else 1)
    cols = np.arange(width)
    src = np.minimum(x.shape[1] - n[:, None] + cols[None], x.shape[1] - 1)
    seq = np.where(cols[None] < n[:, None], np.take_along_axis(x, src, axis=1), 0).astype(np.int64)
    pos = np.clip(window - n[:, None] + cols[None], 0, window - 1).astype(np.int64)
    return seq, pos, n


def load(cfg: NetConfig, state: dict[str, np.ndarray]) -> Any:
    torch = _torch()
    net = build(cfg)
    net.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in state.items()})
    net.eval()
    return net


def numpy_state(net: Any) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy().astype(np.float32, copy=True) for k, v in net.state_dict().items()}


# ---- training -----------------------------------------------------------------------------------------
@dataclass
class Batches:
    """Training windows: ``inputs`` and ``targets`` (n, window) int64, left-padded with 0."""

    inputs: np.ndarray
    targets: np.ndarray

    def __len__(self) -> int:
        return int(self.inputs.shape[0])

    def lengths(self) -> np.ndarray:
        return (self.inputs > 0).sum(axis=1)


def plan(lengths: np.ndarray, positions: int, rng: np.random.Generator) -> list[np.ndarray]:
    """One epoch's steps: windows of similar length together (ties in a seeded random order), each step at
    most ``positions`` padded positions (rows x its longest window), the steps in a seeded random order."""
    order = np.lexsort((rng.random(lengths.size), lengths))
    sorted_len = np.maximum(lengths[order], 1)
    steps, lo = [], 0
    while lo < order.size:
        span = sorted_len[lo:lo + positions]                   # ascending: rows x longest grows with rows
        fits = np.arange(1, span.size + 1) * span <= positions
        n = max(1, int(np.argmin(fits)) if not fits.all() else span.size)
        steps.append(order[lo:lo + n])
        lo += n
    return [steps[i] for i in rng.permutation(len(steps))]


def _steps(data: Batches, positions: int, window: int, rng: np.random.Generator,
           lengths: np.ndarray) -> Iterator[tuple[np.ndarray, ...]]:
    for idx in plan(lengths, positions, rng):
        x, pos, _ = right_pad(data.inputs[idx], window)
        y, _, _ = right_pad(data.targets[idx], window)
        yield x, pos, y


def full_softmax_loss(torch: Any, h: Any, weight: Any, y: Any, chunk: int) -> Any:
    """Mean cross-entropy of ``h @ weight[1:].T`` against targets ``y`` (codes 1..n), computed ``chunk``
    rows at a time: the gradients are formed with the loss (softmax minus one-hot, then two products),
    so no (rows x items) matrix outlives its chunk and each chunk's softmax runs in cache."""
    return _fused_ce(torch).apply(h, weight, y, chunk)


_FUSED: dict[str, Any] = {}


def _fused_ce(torch: Any) -> Any:
    if "ce" in _FUSED:
        return _FUSED["ce"]

    class FusedCE(torch.autograd.Function):  # type: ignore[misc,name-defined]
        @staticmethod
        def forward(ctx: Any, h: Any, weight: Any, y: Any, chunk: int) -> Any:
            emb = weight.detach()[1:]
            h = h.detach()
            grad_h, grad_w = torch.empty_like(h), torch.zeros_like(weight)
            total = torch.zeros((), dtype=torch.float64)
            for lo in range(0, h.shape[0], chunk):
                hc, yc = h[lo:lo + chunk], y[lo:lo + chunk] - 1
                s = hc @ emb.T
                s.sub_(s.max(dim=1, keepdim=True).values)
                target = s.gather(1, yc[:, None])
                s.exp_()
                z = s.sum(dim=1, keepdim=True)
                total += (z.log() - target).sum(dtype=torch.float64)
                s.div_(z)
                s.view(-1)[torch.arange(yc.shape[0]) * s.shape[1] + yc] -= 1.0
                torch.mm(s, emb, out=grad_h[lo:lo + chunk])
                grad_w[1:].addmm_(s.T, hc)
            n = max(1, h.shape[0])
            ctx.save_for_backward(grad_h.div_(n), grad_w.div_(n))
            return (total / n).to(h.dtype)

        @staticmethod
        def backward(ctx: Any, grad: Any) -> Any:
            grad_h, grad_w = ctx.saved_tensors
            return grad_h * grad, grad_w * grad, None, None

    _FUSED["ce"] = FusedCE
    return FusedCE


def _loss(torch: Any, net: Any, x: Any, pos: Any, y: Any, cfg: TrainConfig, log_q: Any, gen: Any) -> Any:
    h = net(x, pos)
    keep = y > 0
    h, y = h[keep], y[keep]
    emb = net.items.weight
    if cfg.negatives is None:
        return full_softmax_loss(torch, h, emb, y, chunk_rows(cfg, emb.shape[0] - 1))
    # sampled softmax: shared negatives drawn by popularity, every logit corrected by -log Q (Yi et al. 2019)
    neg = torch.multinomial(log_q.exp(), cfg.negatives, replacement=True, generator=gen) + 1
    pos = (h * emb[y]).sum(-1, keepdim=True) - log_q[y - 1, None]
    negl = h @ emb[neg].T - log_q[neg - 1][None]
    negl = negl.masked_fill(neg[None] == y[:, None], float("-inf"))   # accidental hits
    logits = torch.cat([pos, negl], dim=1)
    return torch.nn.functional.cross_entropy(logits, torch.zeros(y.shape[0], dtype=torch.long))


def chunk_rows(cfg: TrainConfig, n_items: int) -> int:
    """Rows of a full-softmax chunk: at most 1,024 (the chunk's softmax stays in cache), fewer if the
    chunk's logits would pass the budget."""
    return max(1, min(1024, cfg.logit_budget // max(1, n_items)))


def batch_positions(cfg: TrainConfig, net: NetConfig) -> int:
    """Padded positions per step: ``batch_size`` full windows, lowered so that a sampled-softmax step's
    logits fit the budget (the full softmax works in chunks of ``logit_budget`` logits)."""
    positions = cfg.batch_size * net.window
    if cfg.negatives is not None:
        positions = min(positions, cfg.logit_budget // (cfg.negatives + 1))
    return max(net.window, positions)


def step_positions(cfg: TrainConfig, net: NetConfig, lengths: np.ndarray) -> int:
    """Padded positions per step: :func:`batch_positions`, lowered (to one window at least) so that an epoch
    takes at least ``min_steps`` steps: on a small log, full batches would make too few optimiser steps
    between two validations."""
    positions = batch_positions(cfg, net)
    steps = len(plan(lengths, positions, np.random.default_rng(0)))
    if steps < cfg.min_steps:
        positions = max(net.window, positions * steps // cfg.min_steps)
    return positions


def train(net_cfg: NetConfig, cfg: TrainConfig, data: Batches, validate: Callable[[Any], float],
          popularity: np.ndarray, report: Callable[[dict[str, float]], None]) -> TrainResult:
    """Fit by Adam until the validation hit rate stops improving for ``patience`` epochs, ``max_epochs``
    pass or the time budget runs out; the best epoch's weights are returned."""
    torch = _torch()
    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    try:
        net = build(net_cfg)
        opt = torch.optim.Adam(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        q = popularity.astype(np.float64) / popularity.sum()
        log_q = torch.from_numpy(np.log(np.maximum(q, 1e-12)).astype(np.float32))
        return _epochs(torch, net, opt, cfg, data, validate, log_q, gen, rng, report,
                       step_positions(cfg, net_cfg, data.lengths()))
    finally:
        torch.set_num_threads(threads)


class Schedule:
    """The learning rate of each step: a linear warm-up over ``warmup`` steps, then (``cosine``) a cosine
    decay reaching 0 at ``horizon`` steps: ``max_epochs`` epochs, or, under a time budget, the steps the
    budget affords at the speed measured so far (re-estimated after every epoch), so that the run ends
    annealed whatever the machine's speed."""

    def __init__(self, cfg: TrainConfig, steps_per_epoch: int):
        self.cfg = cfg
        self.limit = self.horizon = max(1, cfg.max_epochs * steps_per_epoch)

    def lr(self, step: int) -> float:
        warm = min(1.0, (step + 1) / max(1, self.cfg.warmup_steps))
        if self.cfg.schedule == "constant":
            return self.cfg.lr * warm
        return self.cfg.lr * warm * 0.5 * (1.0 + math.cos(math.pi * min(1.0, step / self.horizon)))

    def budget(self, steps: int, elapsed: float, left: float) -> None:
        """After an epoch: ``steps`` taken in ``elapsed`` seconds (validation included), ``left`` to go."""
        affordable = steps + int(left / max(elapsed / max(steps, 1), 1e-9))
        self.horizon = max(steps + 1, min(self.limit, affordable))   # grows again when the machine speeds up


def _epochs(torch: Any, net: Any, opt: Any, cfg: TrainConfig, data: Batches, validate: Callable[[Any], float],
            log_q: Any, gen: Any, rng: np.random.Generator, report: Callable[[dict[str, float]], None],
            rows: int) -> TrainResult:
    t0 = time.perf_counter()
    deadline = None if cfg.max_seconds is None else t0 + cfg.max_seconds
    best_state, best_hr, best_epoch, history, steps = numpy_state(net), -1.0, 0, [], 0
    stopped = "max_epochs"
    tokens = int((data.targets > 0).sum())
    lengths = data.lengths()
    schedule = Schedule(cfg, len(plan(lengths, rows, np.random.default_rng(0))))
    for epoch in range(1, cfg.max_epochs + 1):
        te = time.perf_counter()
        loss, n, cut = _one_epoch(torch, net, opt, (schedule, steps), data, lengths, (log_q, gen, rng), rows,
                                  deadline)
        steps += n
        net.eval()
        with torch.no_grad():
            hr = float(validate(net))
        now = time.perf_counter()
        row = {"epoch": epoch, "loss": loss, "val_hr@10": hr, "epoch_s": now - te, "elapsed_s": now - t0,
               "steps": n, "partial": cut}
        history.append(row)
        if hr > best_hr:
            best_state, best_hr, best_epoch = numpy_state(net), hr, epoch
        if deadline is not None:
            schedule.budget(steps, now - t0, deadline - now)
        row["best_hr@10"], row["best_epoch"] = best_hr, best_epoch
        row["left_s"] = _left(cfg, epoch, best_epoch, now - t0, now - te)
        report(row)
        if epoch - best_epoch >= cfg.patience:
            stopped = "patience"
            break
        if cut or (deadline is not None and now >= deadline):
            stopped = "budget"
            break
    return TrainResult(best_state, len(history), best_epoch, best_hr, history, stopped, steps,
                       time.perf_counter() - t0, tokens)


def _one_epoch(torch: Any, net: Any, opt: Any, at: tuple[Schedule, int], data: Batches, lengths: np.ndarray,
               draws: tuple[Any, Any, np.random.Generator], rows: int,
               deadline: float | None) -> tuple[float, int, bool]:
    """One pass over the windows in a seeded order: (mean loss, steps, whether the deadline cut it short)."""
    net.train()
    total, n = 0.0, 0
    schedule, step0 = at
    log_q, gen, rng = draws
    for x, pos, y in _steps(data, rows, net.positions.num_embeddings, rng, lengths):
        for group in opt.param_groups:
            group["lr"] = schedule.lr(step0 + n)
        opt.zero_grad(set_to_none=True)
        loss = _loss(torch, net, torch.from_numpy(x), torch.from_numpy(pos), torch.from_numpy(y), schedule.cfg,
                     log_q, gen)
        loss.backward()
        opt.step()
        total, n = total + loss.item(), n + 1
        if deadline is not None and time.perf_counter() >= deadline:
            return total / n, n, True
    return total / max(n, 1), n, False


def _left(cfg: TrainConfig, epoch: int, best_epoch: int, elapsed: float, per_epoch: float) -> float:
    """At most this many seconds of training are left (the epoch, patience and time limits)."""
    epochs_left = min(cfg.max_epochs - epoch, best_epoch + cfg.patience - epoch)
    left = max(0, epochs_left) * per_epoch
    if cfg.max_seconds is not None:
        left = min(left, max(0.0, cfg.max_seconds - elapsed))
    return left


# ---- inference ------------------------------------------------------------------------------------------
def last_states(net: Any, windows: np.ndarray, batch: int = 512) -> np.ndarray:
    """The encoder state after each row's last event: (n, hidden) float32 from left-padded windows."""
    torch = _torch()
    out = np.empty((windows.shape[0], net.items.weight.shape[1]), dtype=np.float32)
    order = np.argsort((windows > 0).sum(axis=1), kind="stable")   # similar lengths together: little padding
    with torch.no_grad():
        for lo in range(0, windows.shape[0], batch):
            rows = order[lo:lo + batch]
            x, pos, n = right_pad(windows[rows], net.positions.num_embeddings)
            h = net(torch.from_numpy(x), torch.from_numpy(pos))
            out[rows] = h[torch.arange(n.size), torch.from_numpy(np.maximum(n - 1, 0))].numpy()
    return out


def scores(net: Any, states: np.ndarray) -> np.ndarray:
    """The model's scores of every item (columns: codes 1..n) for the given states."""
    torch = _torch()
    with torch.no_grad():
        return (torch.from_numpy(states) @ net.items.weight[1:].T).numpy()


def memory_bytes(net: NetConfig, cfg: TrainConfig) -> int:
    """An upper estimate of training memory beyond the event arrays: weights, Adam state and gradients,
    the step's logits (forward, softmax and gradient) and its activations."""
    params = (net.n_items + 1 + net.window) * net.hidden + net.blocks * 6 * net.hidden * (net.hidden + 2)
    positions = batch_positions(cfg, net)
    activations = positions * net.hidden * net.blocks * 16 + positions * net.window * net.heads * 3
    return _F * (4 * params + 3 * cfg.logit_budget + activations)
