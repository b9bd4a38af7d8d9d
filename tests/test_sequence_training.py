"""The sequence model's training pieces against simple references: the chunked full-softmax loss equals
torch's cross-entropy in value and gradients, a step plan covers every window once within its bound, and
the learning-rate schedule warms up, decays to zero at its horizon and shortens to fit a time budget."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from featurestore.embed import sasrec

torch = pytest.importorskip("torch")


@settings(max_examples=25, deadline=None)
@given(rows=st.integers(1, 40), items=st.integers(2, 30), chunk=st.integers(1, 50), seed=st.integers(0, 1000))
def test_chunked_full_softmax_matches_cross_entropy(rows, items, chunk, seed):
    g = torch.Generator().manual_seed(seed)
    h = (torch.randn(rows, 5, generator=g, dtype=torch.float64) * 3).requires_grad_()
    w = torch.randn(items + 1, 5, generator=g, dtype=torch.float64).requires_grad_()
    y = torch.randint(1, items + 1, (rows,), generator=g)
    ref = torch.nn.functional.cross_entropy(h @ w[1:].T, y - 1)
    ref_h, ref_w = torch.autograd.grad(ref * 2.5, (h, w))
    got = sasrec.full_softmax_loss(torch, h, w, y, chunk)
    got_h, got_w = torch.autograd.grad(got * 2.5, (h, w))
    assert math.isclose(got.item(), ref.item(), rel_tol=1e-9, abs_tol=1e-12)
    torch.testing.assert_close(got_h, ref_h)
    torch.testing.assert_close(got_w, ref_w)
    assert got_w[0].abs().sum().item() == 0.0          # the padding row gets no gradient


@settings(max_examples=50, deadline=None)
@given(lengths=st.lists(st.integers(0, 12), min_size=1, max_size=60), positions=st.integers(12, 80),
       seed=st.integers(0, 100))
def test_plan_covers_every_window_once_within_the_bound(lengths, positions, seed):
    n = np.asarray(lengths)
    steps = sasrec.plan(n, positions, np.random.default_rng(seed))
    flat = np.concatenate(steps)
    assert sorted(flat.tolist()) == list(range(n.size))
    for idx in steps:
        assert idx.size * max(1, int(n[idx].max())) <= positions
    again = sasrec.plan(n, positions, np.random.default_rng(seed))
    assert [s.tolist() for s in again] == [s.tolist() for s in steps]


def _cfg(**kw) -> sasrec.TrainConfig:
    base = dict(lr=0.01, batch_size=4, max_epochs=10, patience=3, seed=0, threads=1, max_seconds=None,
                weight_decay=0.0, negatives=None, logit_budget=1000, schedule="cosine", warmup_steps=5)
    return sasrec.TrainConfig(**{**base, **kw})


def test_schedule_warms_up_decays_and_fits_the_budget():
    s = sasrec.Schedule(_cfg(), steps_per_epoch=10)         # horizon: 10 epochs x 10 steps
    lrs = [s.lr(i) for i in range(101)]
    assert lrs[0] == pytest.approx(0.002) and lrs[4] == pytest.approx(0.01 * 0.5 * (1 + math.cos(math.pi * 0.04)))
    assert all(a >= b for a, b in itertools.pairwise(lrs[4:])) and lrs[100] == 0.0
    s.budget(steps=10, elapsed=20.0, left=40.0)              # 2 s a step, 40 s left: 20 more steps
    assert s.horizon == 30 and s.lr(30) == 0.0 and s.lr(20) > 0.0
    s.budget(steps=20, elapsed=30.0, left=60.0)              # faster now (1.5 s a step): the end moves out
    assert s.horizon == 60
    s.budget(steps=30, elapsed=30.0, left=1e9)               # never past max_epochs
    assert s.horizon == 100
    flat = sasrec.Schedule(_cfg(schedule="constant"), steps_per_epoch=10)
    assert [flat.lr(i) for i in (4, 50, 99)] == [0.01, 0.01, 0.01]


def test_small_logs_get_smaller_steps_up_to_min_steps():
    net = sasrec.NetConfig(n_items=50, hidden=8, blocks=1, heads=1, window=10, dropout=0.0)
    lengths = np.full(40, 10)                                # 40 full windows: 4 steps of batch 10
    cfg = _cfg(batch_size=10, min_steps=1)
    assert sasrec.step_positions(cfg, net, lengths) == 100
    positions = sasrec.step_positions(_cfg(batch_size=10, min_steps=8), net, lengths)
    assert positions == 50 and len(sasrec.plan(lengths, positions, np.random.default_rng(0))) == 8
    assert sasrec.step_positions(_cfg(batch_size=10, min_steps=1000), net, lengths) == 10   # one window a step
    many = np.full(400, 10)                                  # already 40 steps: a large log keeps its batches
    assert sasrec.step_positions(_cfg(batch_size=10, min_steps=8), net, many) == 100
