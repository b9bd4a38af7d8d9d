"""Web console page timings: every page of the console on the demo store and on a 1M-row feature group.

Each page is fetched over HTTP from a real uvicorn server on 127.0.0.1. "first" is the first request
after the server starts: it opens the views, and computes and caches the 2-D map (cached maps are
removed before timing; ``featurestore ui`` computes the newest ones in the background at start).
"first_cpu" is the CPU time the process (server and client) spent on that first request: on a shared,
loaded machine it shows the work a page does, which wall time hides under waiting for a core.
"warm" is the median of the next requests. Each store is timed under ``featurestore ui`` and under
``featurestore serve``'s ``/ui`` (where the newest commit is the served view, already open), each cold and
after the background warm-up. Views are materialised before timing (their build is
reported on its own line: serving builds them anyway). No peer: Feast's UI is a separate React app
over its registry, with no comparable pages (no commit history, comparison or projector). A last line
times the comparison of the large group's two commits when the older one has no view (read from the table).

    python benchmarks/bench_ui.py                 # demo store + 1M rows (10 minutes: view builds)
    python benchmarks/bench_ui.py --rows 200000   # a smaller large group
"""

from __future__ import annotations

import argparse
import contextlib
import io
import shutil
import statistics
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._util import peak_rss_mb, report
from featurestore import FeatureStore, demo
from featurestore.console.projection import PROJECTIONS_DIR
from featurestore.console.web import standalone
from featurestore.online.build import views_dir
from featurestore.server.app import create_app
from featurestore.server.reload import ReloadPolicy

T0 = datetime(2026, 11, 1, tzinfo=UTC)
SPEC = """
name: big_embeddings
version: 1
description: generated clustered 64-d vectors, for the console benchmark
entity_keys: [{name: entity_id, type: string}]
features:
  - {name: embedding, type: vector, dim: 64, metric: cosine, normalized: true}
  - {name: n_events, type: int64}
  - {name: score, type: float64}
expectations:
  row_count: {min: 1}
policy: warn
online:
  index: auto
"""


class Server:
    """uvicorn serving an app on a free port of 127.0.0.1, in a thread."""

    def __init__(self, app: Any):
        import socket

        import uvicorn

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                                    access_log=False))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> Server:
        self.thread.start()
        deadline = time.time() + 30
        while not self.server.started and time.time() < deadline:
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.should_exit = True
        self.thread.join(10)


def batch(n: int, start: int, seed: int, clusters: int = 50) -> pa.Table:
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(0).standard_normal((clusters, 64)).astype(np.float32)
    v = centres[rng.integers(0, clusters, n)] + 0.6 * rng.standard_normal((n, 64)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return pa.table({
        "entity_id": [f"e{i:07d}" for i in range(start, start + n)],
        "embedding": pa.FixedSizeListArray.from_arrays(pa.array(v.ravel()), 64),
        "n_events": rng.integers(0, 500, n),
        "score": rng.random(n),
    })


def big_store(root: Path, rows: int) -> tuple[FeatureStore, float]:
    """A store with one group: ``rows`` keys at commit 1; a tenth rewritten and 5% added at commit 2."""
    if (root / "featurestore.json").exists():  # kept from an earlier run (--workdir)
        return FeatureStore(root), 0.0
    root.parent.mkdir(parents=True, exist_ok=True)
    store = FeatureStore(root)
    (root.parent / "schemas").mkdir(exist_ok=True)
    (root.parent / "schemas" / "big_embeddings.v1.yaml").write_text(SPEC)
    store.apply(root.parent / "schemas")
    fg = store.feature_group("big_embeddings", 1)
    t = time.perf_counter()
    fg.insert(batch(rows, 0, 1), cutoff=T0)
    fg.insert(pa.concat_tables([batch(rows // 10, 0, 2), batch(rows // 20, rows, 3)]), cutoff=T0 + timedelta(days=1))
    return store, time.perf_counter() - t


def pages(name: str, commits: int, key: str) -> list[tuple[str, str]]:
    g = f"/ui/groups/{name}/v1"
    a, b = max(1, commits - 1), commits
    return [("feature groups", "/ui/"), ("training sets", "/ui/training-sets"), ("one group", g),
            ("compare", f"{g}/compare?a={a}&b={b}"), ("projector page", f"{g}/projector?commit={b}"),
            ("projection.json", f"{g}/projection.json?commit={b}"),
            ("projection.json side by side", f"{g}/projection.json?commit={b}&with={a}"),
            ("neighbours.json", f"{g}/neighbours.json?commit={b}&key={key}"),
            ("projector with a key", f"{g}/projector?commit={b}&key={key}")]


MODES = ("ui", "ui, after warm-up", "serve", "serve, after warm-up")


def console_app(store: FeatureStore, mode: str) -> tuple[Any, Any]:
    """The app of ``featurestore ui`` or of ``featurestore serve`` (no reloads), and its console's state."""
    if mode.startswith("serve"):
        app = create_app(store, policy=ReloadPolicy(interval=0), warm_console=mode.endswith("warm-up"))
        return app, app.app.state.console
    app = standalone(store)
    return app, next(r.app for r in app.routes if getattr(r, "path", "") == "/ui").state.console


def time_pages(store: FeatureStore, label: str, name: str, key: str, repeat: int, mode: str
               ) -> list[dict[str, Any]]:
    """Every page's first and warm request under ``mode`` (see :data:`MODES`): after the warm-up, the
    newest map and the two newest commits compared are ready (``featurestore ui`` and ``serve`` run it in
    the background at start; here it is waited for and timed on its own line)."""
    fg = store.feature_group(name)
    newest = fg.commit_of(None)
    rows: list[dict[str, Any]] = []
    label = f"{label}, {mode}"
    t = time.perf_counter()
    for c in range(max(1, newest - 1), newest + 1):
        store.online(name, fg.version, c)
    if mode == "ui":
        rows.append({"store": label, "page": "(views materialised before timing)", "first_ms": round(
            (time.perf_counter() - t) * 1000, 1)})
    for folder in views_dir(fg).glob(f"{PROJECTIONS_DIR}/*"):  # cached maps (derived): "first" computes them
        shutil.rmtree(folder)
    report_id = fg.history()[-1].extra.get("validation_report")
    targets = pages(name, newest, key)
    if report_id:
        targets.append(("validation report", f"/ui/groups/{name}/v1/reports/{report_id}"))
    t = time.perf_counter()
    app, console = console_app(store, mode)
    if mode.startswith("serve"):
        rows.append({"store": label, "page": "(app built: the served views opened)",
                     "first_ms": round((time.perf_counter() - t) * 1000, 1)})
    with Server(app) as server, httpx.Client(base_url=f"http://127.0.0.1:{server.port}", timeout=120) as client:
        if mode.endswith("warm-up"):
            t = time.perf_counter()
            if mode.startswith("serve"):
                console.warmed()  # started by the server's start-up
            else:
                console.warm()
            rows.append({"store": label, "page": "(warm-up, in the background at start)",
                         "first_ms": round((time.perf_counter() - t) * 1000, 1)})
        for what, url in targets:
            t, cpu = time.perf_counter(), time.process_time()
            r = client.get(url)
            first, first_cpu = time.perf_counter() - t, time.process_time() - cpu
            warm = []
            for _ in range(repeat):
                t = time.perf_counter()
                r = client.get(url)
                warm.append(time.perf_counter() - t)
            rows.append({"store": label, "page": what, "first_ms": round(first * 1000, 1),
                         "first_cpu_ms": round(first_cpu * 1000, 1),
                         "warm_ms": round(statistics.median(warm) * 1000, 1), "status": r.status_code,
                         "bytes": len(r.content)})
    return rows


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20


def no_view_rows(store: FeatureStore, label: str, name: str) -> list[dict[str, Any]]:
    """The compare page under ``featurestore ui`` when the older commit has no online view (its view is
    moved aside): read from the table, nothing built. "rss_growth_mb" is the process's resident memory
    after the request less before it (the server runs in this process)."""
    fg = store.feature_group(name)
    b = fg.commit_of(None)
    a = max(1, b - 1)
    folder = views_dir(fg) / f"c{a}"
    aside = folder.with_name(f".bench-aside-c{a}")
    folder.rename(aside)
    try:
        app, _ = console_app(store, "ui")
        with Server(app) as server, httpx.Client(base_url=f"http://127.0.0.1:{server.port}", timeout=1200) as client:
            before = rss_mb()
            t, cpu = time.perf_counter(), time.process_time()
            r = client.get(f"/ui/groups/{name}/v1/compare?a={a}&b={b}")
            first, first_cpu = time.perf_counter() - t, time.process_time() - cpu
            grown = rss_mb() - before
        built = (folder / "manifest.json").exists()
    finally:
        if folder.exists():  # a view the page built
            shutil.rmtree(folder)
        aside.rename(folder)
    return [{"store": f"{label}, ui", "page": f"compare, commit {a} without a view", "first_ms": round(first * 1000, 1),
             "first_cpu_ms": round(first_cpu * 1000, 1), "status": r.status_code, "bytes": len(r.content),
             "rss_growth_mb": round(grown), "view_built": built}]


def demo_rows(root: Path, repeat: int) -> list[dict[str, Any]]:
    print("building the demo store ...", flush=True)
    if (root / "featurestore.json").exists():
        store = FeatureStore(root)
    else:
        with contextlib.redirect_stdout(io.StringIO()):
            store = demo.run(root, progress=False)
    rows: list[dict[str, Any]] = []
    for mode in MODES:
        rows += time_pages(store, "demo items", "item_embeddings", "i0001", repeat, mode)
        rows += time_pages(store, "demo users", "user_embeddings", "u00001", repeat, mode)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000, help="keys of the large group (default 1M)")
    parser.add_argument("--repeat", type=int, default=5, help="warm requests per page (median)")
    parser.add_argument("--skip-large", action="store_true", help="time the demo store only")
    parser.add_argument("--skip-demo", action="store_true", help="time the large group only")
    parser.add_argument("--workdir", default=None, help="keep the stores here and reuse them (default: a temporary "
                        "folder); delete it to rebuild")
    args = parser.parse_args()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-ui-") as scratch:
        tmp = args.workdir or scratch
        if not args.skip_demo:
            rows += demo_rows(Path(tmp) / "demo" / "store", args.repeat)
        if not args.skip_large:
            print(f"building a {args.rows:,}-row group ...", flush=True)
            big, seconds = big_store(Path(tmp) / "big" / "store", args.rows)
            print(f"  two commits in {seconds:.1f}s", flush=True)
            for mode in MODES:
                rows += time_pages(big, f"{args.rows // 1000}k rows", "big_embeddings", "e0000001", args.repeat,
                                   mode)
            rows += no_view_rows(big, f"{args.rows // 1000}k rows", "big_embeddings")
    rows.append({"store": "process", "page": "peak RSS (MB)", "first_ms": round(peak_rss_mb(), 1)})
    report("ui", rows, {"rows": args.rows, "repeat": args.repeat})


if __name__ == "__main__":
    main()
