"""The end-to-end demo behind ``featurestore demo`` / ``make demo``: generated purchase histories,
the reference embedding pipeline run for several dates, and a look at what it learned.

It generates seeded events with planted structure (item categories, drifting user tastes), writes
them as Parquet, applies the shipped specs, runs the pipeline daily (the first run trains the item
model, later runs align a retrained model or update only the users with new events), re-runs a date
to show that nothing is written twice, and prints a user's nearest items next to that user's planted
tastes.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from featurestore.console.plot import plot_group
from featurestore.engine.events import Columns, EventSource
from featurestore.errors import UnsafeOperation
from featurestore.pipeline import Pipeline, load_pipeline
from featurestore.storage.fs import Root
from featurestore.store import FeatureStore
from featurestore.synthetic import Synthetic, purchase_histories

REPO = Path(__file__).resolve().parent.parent
SCHEMAS = REPO / "schemas"
REFERENCE = REPO / "pipelines" / "purchase_embeddings.py"
MARKER = ".featurestore-demo"   # lists the top-level entries the demo created in its root
SIZES: dict[str, dict[str, int]] = {
    "default": dict(n_users=15_000, n_items=5_000, n_events=600_000, n_categories=20),
    "small": dict(n_users=800, n_items=400, n_events=40_000, n_categories=12),
}


def _pipeline(events: Path) -> Pipeline:
    source = EventSource(str(events), columns=Columns(entity="user_id", item="item_id", type="event_type",
                                                      time="event_time"))
    if REFERENCE.exists():
        return load_pipeline(str(REFERENCE)).with_source(source)
    return Pipeline("purchase_embeddings", source, weights={"view": 1.0, "add_to_cart": 2.0, "purchase": 4.0},
                    retrain_every=timedelta(days=1))


@dataclass(frozen=True)
class Recovery:
    """How well a sample of users' nearest items fall in their planted tastes (the synthetic truth)."""

    user_ids: list[str]      # the sampled users
    n_events: np.ndarray     # their events
    hits: np.ndarray         # per user: share of the k nearest items in the top planted categories
    chance: np.ndarray       # per user: the share expected by chance


def recovery(store: FeatureStore, data: Synthetic, cutoff: datetime, *, users: int = 300, k: int = 10,
             top_categories: int = 3, seed: int = 0) -> Recovery:
    """Per sampled user, the share of their ``k`` nearest items (by the served vectors) that fall in
    their ``top_categories`` planted categories at ``cutoff``, and that share by chance."""
    items = store.feature_group("item_embeddings", 1).latest()
    people = store.feature_group("user_embeddings", 1).latest()
    ivec = np.stack(items["embedding"].to_numpy(zero_copy_only=False)).astype(np.float32)
    item_no = np.array([int(s[1:]) for s in items["item_id"].to_pylist()])
    user_no = np.array([int(s[1:]) for s in people["user_id"].to_pylist()])
    pick = np.random.default_rng(seed).choice(user_no.size, size=min(users, user_no.size), replace=False)
    uvec = np.stack(people["embedding"].to_numpy(zero_copy_only=False)[pick]).astype(np.float32)
    top = np.argsort(-(uvec @ ivec.T), axis=1)[:, :k]
    cats = np.argsort(-data.taste_at(cutoff)[user_no[pick]], axis=1)[:, :top_categories]
    item_cat = data.item_category[item_no]
    hits = (item_cat[top][:, :, None] == cats[:, None, :]).any(axis=2).mean(axis=1)
    share = np.bincount(item_cat, minlength=data.n_categories) / item_cat.size
    ids = people["user_id"].to_pylist()
    return Recovery([ids[i] for i in pick], people["n_events"].to_numpy()[pick], hits, share[cats].sum(axis=1))


def planted_recovery(store: FeatureStore, data: Synthetic, cutoff: datetime, *, users: int = 300, k: int = 10,
                     top_categories: int = 3, seed: int = 0) -> tuple[float, float]:
    """(share of users' k nearest items in their top planted categories, the share expected by chance)."""
    r = recovery(store, data, cutoff, users=users, k=k, top_categories=top_categories, seed=seed)
    return float(r.hits.mean()), float(r.chance.mean())


def _claim_root(root: Root, *, fresh: bool) -> None:
    """Make ``root`` the demo's: an empty or missing folder (or prefix), or one a previous demo made.

    Nothing the demo did not create is ever removed: a non-empty folder without the demo's marker, or
    one holding entries the marker does not list, is refused with :class:`UnsafeOperation`.
    """
    where = root.uri
    if root.local and Path(where).exists() and not Path(where).is_dir():
        raise UnsafeOperation(f"demo root {where} exists and is not a folder; pick another with --root")
    present = root.listdir("")
    if not present:
        return
    if MARKER not in present:
        raise UnsafeOperation(
            f"demo root {where} is not empty and was not made by `featurestore demo`; nothing was changed. "
            "Pick an empty or new folder with --root (or $FEATURESTORE_ROOT)")
    try:
        created = set(root.read_json(MARKER)["created"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UnsafeOperation(f"demo root {where}: unreadable marker {root.uri_of(MARKER)}; nothing was "
                              f"changed") from exc
    foreign = [name for name in present if name not in created and name != MARKER]
    if foreign:
        raise UnsafeOperation(
            f"demo root {where} holds entries the demo did not create ({', '.join(foreign[:5])}); nothing was "
            "changed. Pick an empty or new folder with --root")
    if fresh:
        print(f"removing the previous demo's store at {where}: {', '.join(sorted(created & set(present)))}")
        for name in sorted(created & set(present)):
            if root.local:
                path = Path(where) / name
                shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
            else:
                root.delete(name)
                root.delete_tree(name)


def _mark_root(root: Root) -> None:
    """Record every top-level entry of the demo's root as created by the demo."""
    names = sorted(n for n in root.listdir("") if n != MARKER)
    if root.local:  # as written before object-store roots, byte for byte
        (Path(root.uri) / MARKER).write_text(json.dumps({"created": names}, indent=1) + "\n")
    else:
        root.write_bytes(MARKER, (json.dumps({"created": names}, indent=1) + "\n").encode())


def run(root: str | Path = "./featurestore_data", *, size: str = "default", days: int = 4, fresh: bool = True,
        schemas: Path = SCHEMAS, seed: int = 0, progress: bool | None = None) -> FeatureStore:
    """Run the demo and print what happened; returns the store."""
    started = time.perf_counter()
    where = Root(os.fspath(root))
    _claim_root(where, fresh=fresh)
    where.makedirs("")
    try:
        return _tour(where, size=size, days=days, schemas=schemas, seed=seed, progress=progress, started=started)
    finally:
        _mark_root(where)   # whatever the tour got to create, a later demo may replace


def _tour(where: Root, *, size: str, days: int, schemas: Path, seed: int, progress: bool | None,
          started: float) -> FeatureStore:
    params = SIZES[size]
    data = purchase_histories(params["n_users"], params["n_items"], params["n_events"],
                              n_categories=params["n_categories"], days=30, seed=seed)
    # the events the pipeline reads are a local file (an object-store root: in its cache folder)
    root = Path(where.uri) if where.local else where.cached("")
    events_dir = root / "_demo_events"
    events_dir.mkdir(parents=True, exist_ok=True)
    events_path = events_dir / "events.parquet"
    pq.write_table(data.events, events_path)
    print(f"generated {data.events.num_rows:,} events: {params['n_users']:,} users, {params['n_items']:,} items in "
          f"{params['n_categories']} planted categories, {data.start.date()} to {data.end.date()} "
          f"-> {events_path}")

    store = FeatureStore(where.uri)
    for r in store.apply(schemas):
        what = f"service {r.name}" if r.kind == "service" else f"{r.name} v{r.version}"
        print(f"apply: {what} {r.action}")
    pipeline = replace(_pipeline(events_path), retrain_every=timedelta(days=2))
    print(f"pipeline {pipeline.name}: {pipeline.embedder.name} (dim {pipeline.embedder.dim}), "
          f"{pipeline.mode}, item model retrained every {pipeline.retrain_every.days} days")

    last = data.end.replace(hour=0, minute=0, second=0, microsecond=0)
    first = last - timedelta(days=days - 1)
    print(f"\nbackfill {first.date()} .. {last.date()} (daily):")
    results = pipeline.backfill(store, first, last, timedelta(days=1), progress=progress,
                                on_result=lambda r: print(r.summary()))
    again = pipeline.run(store, last, progress=False)
    print(f"\nre-run {last.date()}: {again.message}")

    users = store.feature_group("user_embeddings", 1)
    print("\nuser_embeddings history:")
    for c in users.history()[1:]:
        m = c.metadata
        print(f"  commit {c.commit}: cutoff {c.cutoff.date() if c.cutoff else '-'}  {c.row_count:>6,} rows  "
              f"model commit {m.get('model_commit')}  {'retrained' if m.get('retrained') else 'incremental'}")

    # one user: nearest items next to the planted tastes
    _showcase(store, data, last, seed)
    n = store.sql("SELECT count(*) FROM user_embeddings").fetchall()[0][0]
    print(f"SQL: SELECT count(*) FROM user_embeddings -> {n:,} rows over {len(results)} runs")
    for name in ("item_embeddings", "user_embeddings"):  # the console's maps and neighbours read the views
        store.online(name)
    picture = plot_group(store, "item_embeddings", out=root / "item_embeddings_map.png", color="n_events")
    print(f"projector map of item_embeddings (PCA, coloured by n_events): {picture}\n"
          f"  browse the store: featurestore ui --root {where.uri}")
    print(f"\ndone in {time.perf_counter() - started:.1f}s; store at {where.uri}")
    return store


def _showcase(store: FeatureStore, data: Synthetic, last: datetime, seed: int) -> None:
    """One user's nearest items next to the planted tastes: the sampled user the model matches best
    (and why), then the figure over every sampled user."""
    r = recovery(store, data, last, seed=seed)
    best = int(np.lexsort((-r.n_events, -r.hits))[0])  # most hits, then most events
    user_id = r.user_ids[best]
    print(f"\nshowcase: user {user_id}, picked from {len(r.user_ids)} sampled users as the one whose 10 nearest "
          f"items best match their planted tastes ({r.hits[best]:.0%}; the median user: {np.median(r.hits):.0%}, "
          f"chance: {r.chance.mean():.0%})")
    taste = data.taste_at(last)[int(user_id[1:])]
    top_cats = np.argsort(-taste)[:3]
    print(f"user {user_id} ({int(r.n_events[best])} events). Planted taste at {last.date()}: "
          + ", ".join(f"category {c} {taste[c]:.0%}" for c in top_cats))
    items = store.feature_group("item_embeddings", 1).latest()
    ivec = np.stack(items["embedding"].to_numpy(zero_copy_only=False)).astype(np.float32)
    item_ids = items["item_id"].to_pylist()
    vec = np.asarray(store.sql("SELECT embedding FROM user_embeddings_latest WHERE user_id = $u",
                               params={"u": user_id}).fetchall()[0][0], np.float32)
    scores = ivec @ vec
    print("  nearest items (cosine)      planted category")
    for j in np.argsort(-scores)[:10]:
        cat = int(data.item_category[int(item_ids[j][1:])])
        mark = "  <- planted taste" if cat in top_cats else ""
        print(f"  {item_ids[j]:10} {scores[j]:.3f}        {cat}{mark}")
    print(f"\nover {len(r.user_ids)} users: {r.hits.mean():.0%} of their 10 nearest items fall in their top-3 "
          f"planted categories (chance: {r.chance.mean():.0%})")
