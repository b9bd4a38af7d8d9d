"""Hot reload: watch the served feature groups for new commits, build and check the new view in the
background, then swap it in atomically.

Requests read ``registry.get(name)`` once and use that view to the end, so in-flight requests finish
on the old view; the swap is one reference assignment. A feature service's views are held together
in one :class:`~featurestore.online.service.ServiceSnapshot`: the groups that got new commits in one
poll are built and checked first, then swapped together, and every service reading them gets a new
snapshot in one assignment, so one service answer never mixes the commits of two reloads.

A build that fails or does not pass its checks (row count, dimension, finite vectors, approximate-index
recall on a sample against exact search) leaves the old view serving; the reason is logged and shown by
``GET /feature-groups/{name}``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.compute as pc

from featurestore.errors import FeatureGroupNotFound, FeatureStoreError, ServeError, ServiceNotFound
from featurestore.feature_group import FeatureGroup
from featurestore.online import index as ix
from featurestore.online.build import lease, list_views, materialize, prune
from featurestore.online.service import ServiceSnapshot, request_fields
from featurestore.online.view import OnlineView
from featurestore.schema import ServiceSpec
from featurestore.schema.service import check_service, group_specs
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
    build_niceness: int = 10  # the build process's scheduling priority is lowered by this much (Unix)


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
                 on_event: Callable[[str, str], None] | None = None, services: list[str] | None = None):
        self.store = store
        self.policy = policy or ReloadPolicy()
        self.on_event = on_event or (lambda _name, _event: None)
        self._served: dict[str, Served] = {}
        self._services: dict[str, ServiceSnapshot] = {}
        self._swap_lock = threading.Lock()
        if groups is None:
            newest: dict[str, int] = {}
            for spec in store.specs():
                newest[spec.name] = spec.version
            groups = sorted(newest.items())
        service_specs = self._service_specs(services, dict(groups))
        listed = {n for n, _ in groups}
        groups = [*groups, *sorted({(n, v) for sv in service_specs for n, v in _refs(sv) if n not in listed})]
        self._open_groups(groups)
        for sv in service_specs:
            specs = group_specs(sv, lambda n, v: self.store.feature_group(n, v).spec)
            views = {n: self._served[n].view for n in specs}
            self._services[sv.name] = ServiceSnapshot(sv, views, 0, request_fields(sv, specs))
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _service_specs(self, services: list[str] | None, groups: dict[str, int | None]) -> list[ServiceSpec]:
        """The services to serve: those named (an error when one reads another version of a served group),
        or by default every registered service whose groups are served at its versions or not at all."""
        out = []
        for name in (self.store.services() if services is None else services):
            spec = self.store.catalog.service_spec(name)
            specs = group_specs(spec, lambda n, v: self.store.feature_group(n, v).spec)
            check_service(spec, specs)
            clash = [(n, s.version) for n, s in specs.items()
                     if n in groups and self.store.feature_group(n, groups[n]).version != s.version]
            if clash and services is not None:
                raise ServeError(f"service {name!r} reads {clash[0][0]} v{clash[0][1]}, but the server serves "
                                 f"another version of it")
            if clash:
                log.warning("not serving service %s: it reads %s v%d, another version is served", name, *clash[0])
                continue
            out.append(spec)
        return out

    def _open_groups(self, groups: list[tuple[str, int | None]]) -> None:
        for name, version in groups:
            fg = self.store.feature_group(name, version)
            if name in self._served:
                raise FeatureGroupNotFound(f"{name} is listed twice")
            c = fg.commit_of(None)
            t = time.perf_counter()
            view = OnlineView(materialize(fg, c)).warm()
            log.info("serving %s v%d commit %d (%d rows) opened in %.2fs", name, fg.version, c, view.rows,
                     time.perf_counter() - t)
            self._served[name] = Served(fg, view)
            lease(fg, {c})  # vacuum keeps the view this process serves

    def names(self) -> list[str]:
        return sorted(self._served)

    def get(self, name: str) -> Served:
        try:
            return self._served[name]
        except KeyError:
            raise FeatureGroupNotFound(f"no served feature group {name!r}; served: "
                                       f"{', '.join(self.names()) or 'none'}") from None

    def service_names(self) -> list[str]:
        return sorted(self._services)

    def service(self, name: str) -> ServiceSnapshot:
        """The current snapshot of a served feature service: read it once per request."""
        try:
            return self._services[name]
        except KeyError:
            raise ServiceNotFound(f"no served feature service {name!r}; served: "
                                  f"{', '.join(self.service_names()) or 'none'}") from None

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
        """Check every served group once; build and check the new commits, then swap all that passed
        together (services see them in one snapshot). Returns the swapped names."""
        todo: dict[str, int] = {}
        for name in self.names():
            if self._stop.is_set():
                break
            served = self._served[name]
            try:
                newest = served.fg.commit_of(None)
            except FeatureStoreError as exc:
                log.warning("reload %s: cannot read the table: %s", name, exc)
                continue
            if newest > served.view.commit and newest != served.failed_commit:
                todo[name] = newest
        if len(todo) > 1:  # several groups moved (a pipeline run commits several): build them side by side
            with ThreadPoolExecutor(min(4, len(todo)), thread_name_prefix="featurestore-reload-build") as pool:
                built = dict(zip(todo, pool.map(self._prepare, todo, todo.values())))
        else:
            built = {name: self._prepare(name, commit) for name, commit in todo.items()}
        ready = {name: new for name, new in built.items() if new is not None}
        self._swap(ready)
        return sorted(ready)

    def build(self, fg: FeatureGroup, commit: int) -> tuple[Path, bool]:
        """Materialise the view of ``commit`` and check it (:func:`check_view`) in a separate process, so
        neither the build's CPU (reading the rows, the key table, the index) nor the check's (reading the
        commit's keys, exact search for the recall) competes with requests for this process's interpreter.
        Returns the view's folder and whether it was checked there. Stores opened with explicit storage
        options (which a child cannot be given safely) build in this process's reload thread instead."""
        if fg.root.explicit_options or not self.policy.build_in_subprocess:
            return materialize(fg, commit), False
        cmd = [sys.executable, "-m", "featurestore.server.build_worker", fg.root.uri, fg.name, str(fg.version),
               str(commit), str(self.policy.min_recall), str(self.policy.sample)]
        with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as child:
            if self.policy.build_niceness and hasattr(os, "setpriority"):  # requests first, then the build
                with contextlib.suppress(OSError):
                    os.setpriority(os.PRIO_PROCESS, child.pid, self.policy.build_niceness)
            try:
                stdout, stderr = child.communicate(timeout=self.policy.build_timeout_s)
            except subprocess.TimeoutExpired:
                child.kill()
                child.communicate()
                raise FeatureStoreError(f"building the view of commit {commit} took more than "
                                        f"{self.policy.build_timeout_s:.0f}s; stopped it") from None
        if child.returncode != 0:
            raise FeatureStoreError(f"building the view of commit {commit} failed: "
                                    f"{(stderr.strip().splitlines() or ['(no message)'])[-1]}")
        return Path(json.loads(stdout.strip().splitlines()[-1])["path"]), True

    def reload(self, name: str, commit: int) -> bool:
        """Build, check and swap in the view of ``commit``; on failure keep the old view and say why."""
        new = self._prepare(name, commit)
        if new is not None:
            self._swap({name: new})
        return new is not None

    def _prepare(self, name: str, commit: int) -> Served | None:
        """Build and check the view of ``commit`` (not yet served); None, with the reason kept, on failure."""
        served = self._served[name]
        t = time.perf_counter()
        try:
            path, checked = self.build(served.fg, commit)
            view = OnlineView(path).warm()
            self.check(view, served, checked=checked)
        except Exception as exc:  # any failure must leave the old view serving
            served.failures += 1
            served.failed_commit = commit
            served.last_error = f"commit {commit}: {type(exc).__name__}: {exc}"
            log.error("reload %s: keeping commit %d: %s", name, served.view.commit, served.last_error)
            self.on_event(name, "failure")
            return None
        log.info("reload %s: commit %d (%d rows) built and checked in %.2fs", name, commit, view.rows,
                 time.perf_counter() - t)
        return Served(served.fg, view, reloads=served.reloads + 1, failures=served.failures)

    def _swap(self, ready: dict[str, Served]) -> None:
        """Serve the views of ``ready`` together: each group is one reference assignment, and each service
        reading any of them gets one new snapshot holding all of them."""
        if not ready:
            return
        with self._swap_lock:
            for name, new in ready.items():
                self._served[name] = new
            for sname, snap in list(self._services.items()):
                if any(n in ready for n in snap.views):
                    views = {n: self._served[n].view for n in snap.views}
                    self._services[sname] = ServiceSnapshot(snap.spec, views, snap.generation + 1, snap.fields)
        for name, new in ready.items():
            commit = new.view.commit
            lease(new.fg, {commit})
            log.info("reload %s: now serving commit %d", name, commit)
            if self.policy.keep_views:
                kept = sorted(c for c in list_views(new.fg) if c <= commit)[-self.policy.keep_views:]
                removed = prune(new.fg, {*kept, commit})
                if removed:
                    log.info("reload %s: removed the views of commits %s", name, removed)
            self.on_event(name, "success")

    def check(self, view: OnlineView, served: Served, *, checked: bool = False) -> None:
        """Refuse a view whose dimension or vector features differ from the served one's, or (unless the
        build's process ``checked`` it) whose rows, values or recall are wrong (:func:`check_view`)."""
        if view.matrix.shape[1:] != (served.view.dim,) or set(view.vectors) != set(served.view.vectors):
            raise FeatureStoreError(f"view has {view.rows} rows x {view.matrix.shape[1:]} and vector features "
                                    f"{sorted(view.vectors)}; the served view has {served.view.dim} dimensions "
                                    f"and {sorted(served.view.vectors)}")
        if not checked:
            check_view(view, served.fg, self.policy)


def check_view(view: OnlineView, fg: FeatureGroup, policy: ReloadPolicy) -> None:
    """Refuse a view whose rows (against the distinct keys of its commit), values or approximate-index
    recall are wrong. Run where the view was built (the build's child process): reading a commit's keys
    and searching a sample exactly hold the interpreter for long stretches."""
    table = fg.read(view.commit, columns=view.key_names)
    if len(view.key_names) == 1:
        expected = pc.count_distinct(table[0]).as_py() if table.num_rows else 0
    else:
        expected = table.group_by(view.key_names).aggregate([]).num_rows
    if view.rows != expected:
        raise FeatureStoreError(f"view has {view.rows} rows; commit {view.commit} has {expected} keys")
    if view.rows and not np.isfinite(np.asarray(view.matrix[:: max(1, view.rows // 10_000)])).all():
        raise FeatureStoreError("view holds NaN or infinite values")
    if view._index is not None:
        rng = np.random.default_rng()
        rows = np.sort(rng.choice(view.rows, min(policy.sample, view.rows), replace=False))
        q = np.ascontiguousarray(np.asarray(view.search_matrix[rows]))
        k = min(11, view.rows)
        exact, _ = ix.exact_topk(view.search_matrix, q, k, view.metric, sqnorms=view._sqnorms)
        approx, _ = ix.search(view._index, view.index_config, view._breadth, q, k, view.metric)
        recall = ix.recall_at_k(ix.drop_self(approx, rows, k - 1), ix.drop_self(exact, rows, k - 1))
        if recall < policy.min_recall:
            raise FeatureStoreError(f"approximate recall@10 {recall:.3f} is below {policy.min_recall}")


def _refs(spec: ServiceSpec) -> list[tuple[str, int]]:
    """(group, version) of every part of a service and of its nearest step."""
    refs = [(p.name, p.version) for p in spec.parts]
    if spec.nearest is not None:
        refs.append((spec.nearest.name, spec.nearest.version))
    return refs
