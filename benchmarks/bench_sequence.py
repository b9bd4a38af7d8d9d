"""Sequence embedder throughput on the synthetic generator: training events/s per core and incremental
re-encoding entities/s, at 1M and 5M events.

Training: one epoch over the next-event examples of a seeded sample of entities holding about
``--train-events`` events (the cost of an epoch is linear in its examples; the loss's width is the
sample's item count, ``train_items``: above 20,000 items the sampled softmax keeps it at 2,049, below
it the full softmax costs more per example as items grow). Re-encoding: the
entities with events in the log's last day (what an incremental daily run rewrites), encoded with the
trained model in batches. Rates are given per wall second and per CPU second of this process (the
machine may be shared: the CPU figure is what a quiet core would do), with the peak memory.

    python benchmarks/bench_sequence.py --scales 1M,5M
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from benchmarks._util import peak_rss_mb, report
from featurestore.embed.sequence import SequenceEmbedder
from featurestore.engine import read_events
from featurestore.engine.events import EventSource
from featurestore.synthetic import purchase_histories

SCALES = {"1M": dict(n_users=20_000, n_items=10_000, n_events=1_000_000),
          "5M": dict(n_users=100_000, n_items=50_000, n_events=5_000_000)}


def run_scale(name: str, train_events: int, threads: int, seed: int) -> dict:
    data = purchase_histories(**SCALES[name], seed=seed)
    events = read_events(EventSource(data.events))
    rng = np.random.default_rng(seed)
    share = min(1.0, train_events / max(len(events), 1))
    keep = rng.random(events.n_entities) < share
    sample = data.events.filter(pc.is_in(data.events["user_id"], value_set=pa.array(events.entity_ids[keep].tolist())))
    sub = read_events(EventSource(sample))
    # throughput of full-size steps (a log this small would get smaller ones: min_steps), without the
    # comparison with the default embedder (one epoch would fall back to it)
    embedder = SequenceEmbedder(max_epochs=1, seed=seed, threads=threads, validation_entities=1000,
                                min_targets_per_item=0, min_steps=1, baseline_check=False)
    cpu0, t0 = time.process_time(), time.perf_counter()
    model = embedder.fit(sub)
    fit_wall, fit_cpu = time.perf_counter() - t0, time.process_time() - cpu0
    info = model.info
    epoch_s = info["history"][0]["epoch_s"]
    tokens = info["tokens_per_epoch"]
    last_day = int(events.time.max()) - 86_400 * 10**6
    changed = np.unique(events.entity[events.time >= last_day])
    cpu0, t0 = time.process_time(), time.perf_counter()
    codes, _ = model.encoder.encode(events, changed)
    enc_wall, enc_cpu = time.perf_counter() - t0, time.process_time() - cpu0
    return {"scale": name, "events": len(events), "items": events.n_items, "train_items": sub.n_items,
            "loss": info["loss"],
            "train_examples": tokens, "epoch_s": round(epoch_s, 1),
            "train_events_per_s_per_core_wall": round(tokens / epoch_s / threads),
            "train_events_per_cpu_s": round(tokens / max(fit_cpu, 1e-9)),
            "fit_wall_s": round(fit_wall, 1), "fit_cpu_s": round(fit_cpu, 1),
            "reencoded": int(codes.size), "reencode_s": round(enc_wall, 2),
            "reencode_entities_per_s": round(codes.size / enc_wall),
            "reencode_entities_per_cpu_s": round(codes.size / max(enc_cpu, 1e-9)),
            "memory_bound_mb": info["memory_bound_mb"], "peak_rss_mb": round(peak_rss_mb())}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scales", default="1M,5M")
    ap.add_argument("--train-events", type=int, default=100_000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    rows = []
    for name in filter(None, args.scales.split(",")):
        print(f"== {name}", flush=True)
        rows.append(run_scale(name, args.train_events, args.threads, args.seed))
        print(rows[-1], flush=True)
    report("sequence", rows, {**vars(args), "cpus": os.cpu_count(), "load_avg": os.getloadavg()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
