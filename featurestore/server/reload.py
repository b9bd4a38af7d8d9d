"""Hot reload: watch the served feature groups for new commits, build and check the new view in the
background, then swap it in atomically.

Requests read ``registry.get(name)`` once and use that view to the end, so in-flight requests finish
on the old view; the swap is one reference assignment. A build that fails or does not pass its checks
(row count, dimension, finite vectors, approximate-index recall on a sample against exact search)
leaves the old view serving; the reason is logged and shown by ``GET /feature-groups/{name}``.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.compute as pc

from featurestore.errors import FeatureGroupNotFound, FeatureStoreError
from featurestore.feature_group import FeatureGroup
from featurestore.online import index as ix
from featurestore.online.build import lease, list_views, materialize, prune
from featurestore.online.view import OnlineView
from featurestore.store import FeatureStore

log = logging.getLogger("featurestore.server.reload")


@dataclass(frozen=True)
class ReloadPolicy:
    """How the server checks a new view before serving it."""

    interval: float = 5.0  # seconds between polls for new commits; 0 disables reloading
    min_recall: float = 0.9  # recall@10 on a sample against exact search, approximate indexes only
    sample: int = 200  # queries in the recall check
    keep_views: int = 2  # views kept on disk per feature group after a swap (0 keeps all)
    build_in_subprocess: bool = True  # build new views in a child process, off the serving interpreter
    build_timeout_s: float = 3600.0


@dataclass
class Served:
    """One served feature group: its view and the state of its reloads."""

    fg: FeatureGroup
    view: OnlineView
    loaded_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    reloads: int = 0
    failures: int = 0
    last_error: str | None = None
    failed_commit: int | None = None

    def status(self) -> dict[str, Any]:
        return {
            **self.view.info(),
            "loaded_at": self.loaded_at.isoformat(),
            "reloads": self.reloads,
            "reload_failures": self.failures,
            "last_reload_error": self.last_error,
        }


class Registry:
    """The views a server serves, by feature-group name, and the thread that reloads them."""

    def __init__(self, store: FeatureStore, groups: list[tuple[str, int | None]] | None = None,
                 policy: ReloadPolicy | None = None,
                 on_event: Callable[[str, str], None] | None = None):
        self.store = store
        self.policy = policy or ReloadPolicy()
        self.on_event = on_event or (lambda _name, _event: None)
        self._served: dict[str, Served] = {}
        if groups is None:
            newest: dict[str, int] = {}
            for spec in store.specs():
                newest[spec.name] = spec.version
            groups = sorted(newest.items())
        for name, version in groups:
            fg = store.feature_group(name, version)
            if name in self._served:
                raise FeatureGroupNotFound(f"{name} is listed twice")
            c = fg.commit_of(None)
            t = time.perf_counter()
            view = OnlineView(materialize(fg, c)).warm()
            log.info("serving %s v%d commit %d (%d rows) opened in %.2fs", name, fg.version, c, view.rows,
                     time.perf_counter() - t)
            self._served[name] = Served(fg, view)
            lease(fg, {c})  # vacuum keeps the view this process serves
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def names(self) -> list[str]:
        return sorted(self._served)

    def get(self, name: str) -> Served:
        try:
            return self._served[name]
        except KeyError:
            raise FeatureGroupNotFound(f"no served feature group {name!r}; served: "
                                       f"{', '.join(self.names()) or 'none'}") from None

    # ---- reloading -------------------------------------------------------------------------------
    def start(self) -> None:
        if self.policy.interval > 0 and self._thread is None:
            self._thread = threading.Thread(target=self._run, name="featurestore-reload", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        for served in self._served.values():
            lease(served.fg, set())

    def _run(self) -> None:
        while not self._stop.wait(self.policy.interval):
            self.poll()

    def poll(self) -> list[str]:
        """Check every served group once; build, check and swap new commits. Returns swapped names."""
        swapped = []
        for name in self.names():
            if self._stop.is_set():
                break
            served = self._served[name]
            try:
                newest = served.fg.commit_of(None)
            except FeatureStoreError as exc:
                log.warning("reload %s: cannot read the table: %s", name, exc)
                continue
            if newest <= served.view.commit or newest == served.failed_commit:
                continue
            if self.reload(name, newest):
                swapped.append(name)
        return swapped

    def build(self, fg: FeatureGroup, commit: int) -> Path:
        """Materialise the view of ``commit`` in a separate process, so the build's CPU (reading the
        rows, the key table, the index) never competes with requests for this process's interpreter.
        Stores opened with explicit storage options (which a child cannot be given safely) build in
        this process's reload thread instead."""
        if fg.root.storage_options or not self.policy.build_in_subprocess:
            return materialize(fg, commit)
        cmd = [sys.executable, "-m", "featurestore", "materialize", fg.name, "--version", str(fg.version),
               "--commit", str(commit), "--root", fg.root.uri, "--json"]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=self.policy.build_timeout_s,
                              check=False)
        if done.returncode != 0:
            raise FeatureStoreError(f"building the view of commit {commit} failed: "
                                    f"{(done.stderr.strip().splitlines() or ['(no message)'])[-1]}")
        return Path(json.loads(done.stdout)["path"])

    def reload(self, name: str, commit: int) -> bool:
        """Build, check and swap in the view of ``commit``; on failure keep the old view and say why."""
        served = self._served[name]
        t = time.perf_counter()
        try:
            view = OnlineView(self.build(served.fg, commit)).warm()
            self.check(view, served)
        except Exception as exc:  # any failure must leave the old view serving
            served.failures += 1
            served.failed_commit = commit
            served.last_error = f"commit {commit}: {type(exc).__name__}: {exc}"
            log.error("reload %s: keeping commit %d: %s", name, served.view.commit, served.last_error)
            self.on_event(name, "failure")
            return False
        new = Served(served.fg, view, reloads=served.reloads + 1, failures=served.failures)
        self._served[name] = new  # the swap: one reference assignment
        lease(served.fg, {commit})
        log.info("reload %s: now serving commit %d (%d rows) after %.2fs", name, commit, view.rows,
                 time.perf_counter() - t)
        if self.policy.keep_views:
            kept = sorted(c for c in list_views(served.fg) if c <= commit)[-self.policy.keep_views:]
            removed = prune(served.fg, {*kept, commit})
            if removed:
                log.info("reload %s: removed the views of commits %s", name, removed)
        self.on_event(name, "success")
        return True

    def check(self, view: OnlineView, served: Served) -> None:
        """Refuse a view whose rows, dimension, values or recall are wrong."""
        keys = served.fg.read(view.commit, columns=[view.manifest["key"]])[0]
        expected = pc.count_distinct(keys).as_py() if len(keys) else 0
        if view.rows != expected or view.matrix.shape != (view.rows, served.view.dim):
            raise FeatureStoreError(f"view has {view.rows} rows x {view.matrix.shape[1:]}; expected "
                                    f"{expected} x {served.view.dim}")
        if view.rows and not np.isfinite(np.asarray(view.matrix[:: max(1, view.rows // 10_000)])).all():
            raise FeatureStoreError("view holds NaN or infinite values")
        if view._index is not None:
            rng = np.random.default_rng()
            rows = np.sort(rng.choice(view.rows, min(self.policy.sample, view.rows), replace=False))
            q = np.ascontiguousarray(np.asarray(view.search_matrix[rows]))
            k = min(11, view.rows)
            exact, _ = ix.exact_topk(view.search_matrix, q, k, view.metric, sqnorms=view._sqnorms)
            approx, _ = ix.search(view._index, view.index_config, view._breadth, q, k, view.metric)
            recall = ix.recall_at_k(ix.drop_self(approx, rows, k - 1), ix.drop_self(exact, rows, k - 1))
            if recall < self.policy.min_recall:
                raise FeatureStoreError(f"approximate recall@10 {recall:.3f} is below {self.policy.min_recall}")
