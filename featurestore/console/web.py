"""The web console: server-rendered pages (FastAPI + Jinja2) over a store, mounted at ``/ui`` of
``featurestore serve`` or run alone by ``featurestore ui``.

Pages: the feature groups, one group (commit history, verdicts, alignment), a validation report, two
commits compared, the embedding projector, saved training sets. Tables are plain HTML (readable without
JavaScript); the projector's map is a canvas drawn by ``static/projector.js``, shipped in the package
like every script and style: no page loads anything from another host. With a token, every page needs
``Authorization: Bearer TOKEN`` or the console's cookie, set by opening any page once with ``?token=TOKEN``.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import hmac
import inspect
import logging
import os
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import numpy as np
import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from featurestore.console import insights
from featurestore.console.colors import color_columns, coloring
from featurestore.console.commits import CommitData, read_commit, read_table_commit
from featurestore.console.projection import MAX_POINTS, METHODS, pair, projection, umap_available
from featurestore.errors import CommitNotFound, FeatureStoreError, InvalidData, InvalidQuery, NotFound
from featurestore.feature_group import FeatureGroup
from featurestore.online.build import fetch, list_views, view_path
from featurestore.online.view import OnlineView
from featurestore.store import FeatureStore
from featurestore.validation.report import format_threshold, format_value
from featurestore.validation.report import load as load_report
from featurestore.version import __version__

log = logging.getLogger("featurestore.console")
HERE = Path(__file__).parent
COOKIE = "featurestore_console"
OPEN_VIEWS = 8  # online views of other commits than the served ones kept open
#: a warm-up to run: (feature group, version (None: newest), commit (None: newest))
Warm = tuple[str, int | None, int | None]


class Console:
    """The console's state: the store, the served views (under ``serve``), opened views, the token."""

    def __init__(self, store: FeatureStore, *, served: insights.Served | None = None, token: str | None = None,
                 api_docs: bool = False):
        self.store = store
        self.api_docs = api_docs
        self.served = served
        self.token = token
        self._views: OrderedDict[tuple[str, int, int], OnlineView] = OrderedDict()
        self._compared: OrderedDict[tuple[str, int, int, int], tuple[insights.Comparison, float]] = OrderedDict()
        self.maps: OrderedDict[tuple[Any, ...], bytes] = OrderedDict()  # projection.json answers
        self._lock = threading.Lock()
        self._env: Any = None
        self._warming: threading.Thread | None = None  # the last warm-up thread started
        self._warm_todo: deque[Warm | None] = deque()
        self._warm_running = False
        self._warm_idle = threading.Event()
        self._warm_idle.set()

    # ---- data ------------------------------------------------------------------------------------
    def group(self, name: str, version: int | None = None) -> FeatureGroup:
        return self.store.feature_group(name, version)

    def commit_number(self, fg: FeatureGroup, commit: int | None) -> int:
        newest = fg.commit_of(None)
        if commit is None:
            return newest
        if not 0 <= commit <= newest:
            raise CommitNotFound(f"{fg.spec.key} has no commit {commit} (commits 0..{newest})")
        return commit

    def view(self, fg: FeatureGroup, commit: int | None = None) -> OnlineView:
        """The online view of ``commit`` (default: newest): the served one when it is that commit, else
        opened and kept among the last few opened. Never built: a page read writes nothing, so a commit
        without a view is :class:`CommitNotFound` saying how to build one."""
        c = self.commit_number(fg, commit)
        if c == 0:
            raise InvalidQuery(f"{fg.spec.key} commit 0 is the table's creation: it holds no rows")
        served = self.served_view(fg, c)
        if served is not None:
            return served
        key = (fg.name, fg.version, c)
        with self._lock:
            view = self._views.get(key)
            if view is not None:
                self._views.move_to_end(key)
                return view
        if not fetch(fg, c):
            built = ", ".join(map(str, list_views(fg))) or "none"
            raise CommitNotFound(f"{fg.spec.key} commit {c} has no online view, and the console never builds one "
                                 f"(run `featurestore materialize {fg.name} --version {fg.version} --commit {c}`); "
                                 f"commits with a view: {built}")
        view = OnlineView(view_path(fg, c))
        with self._lock:
            self._views[key] = view
            while len(self._views) > OPEN_VIEWS:
                self._views.popitem(last=False)
        return view

    def served_view(self, fg: FeatureGroup, commit: int) -> OnlineView | None:
        """The view the server serves when it is ``fg``'s ``commit``, else None."""
        served = self.served(fg.name) if self.served is not None else None
        return served if served is not None and served.version == fg.version and served.commit == commit else None

    def has_view(self, fg: FeatureGroup, commit: int) -> bool:
        return self.served_view(fg, commit) is not None or (view_path(fg, commit) / "manifest.json").exists()

    def remember(self, cache: OrderedDict[Any, Any], key: Any, value: Any, keep: int = OPEN_VIEWS) -> Any:
        with self._lock:
            cache[key] = value
            while len(cache) > keep:
                cache.popitem(last=False)
        return value

    def recall(self, cache: OrderedDict[Any, Any], key: Any) -> Any:
        with self._lock:
            value = cache.get(key)
            if value is not None:
                cache.move_to_end(key)
            return value

    def commit_data(self, fg: FeatureGroup, commit: int) -> CommitData:
        """What a comparison reads of ``commit``: from its view when one is open (served, or opened by
        another page), else only the files a comparison needs of its view (not the search index), else,
        when it has no view, the latest rows read from the table. Builds nothing, writes nothing."""
        if commit == 0:
            raise InvalidQuery(f"{fg.spec.key} commit 0 is the table's creation: it holds no rows")
        served = self.served_view(fg, commit)
        if served is not None:
            return CommitData.of_view(served)
        with self._lock:
            view = self._views.get((fg.name, fg.version, commit))
        if view is not None:
            return CommitData.of_view(view)
        data = read_commit(fg, commit)
        return data if data is not None else read_table_commit(fg, commit)

    def comparison(self, fg: FeatureGroup, a: int, b: int) -> tuple[insights.Comparison, float]:
        """Commits ``a`` and ``b`` compared, and the seconds it took: computed once per pair (commits never
        change), the last few kept."""
        key = (fg.name, fg.version, a, b)
        hit = self.recall(self._compared, key)
        if hit is not None:
            return hit  # type: ignore[no-any-return]
        t = time.perf_counter()
        with ThreadPoolExecutor(2) as pool:  # reading a commit is mostly checksumming its files: in parallel
            da, db = pool.map(lambda c: self.commit_data(fg, c), (a, b))
        cmp = insights.compare(fg, da, db)
        return self.remember(self._compared, key, (cmp, time.perf_counter() - t))  # type: ignore[no-any-return]

    def start_warming(self, groups: list[Warm] | None = None) -> threading.Thread:
        """Warm ``groups`` up (:meth:`warm_group`; default: every feature group version at its newest
        commit) in a background thread at low priority: the caller does not wait, and requests keep the
        CPU first. ``featurestore ui`` and ``featurestore serve`` call this at start, and ``serve`` again
        for a group each time a reload swaps in a new commit. One thread runs while work is queued; a
        group already waiting is not queued twice. Returns the thread."""
        todo: list[Warm | None] = [None] if groups is None else list(groups)  # None: every group
        with self._lock:
            for g in todo:
                if g not in self._warm_todo:
                    self._warm_todo.append(g)
            self._warm_idle.clear()
            if not self._warm_running:
                self._warm_running = True
                self._warming = threading.Thread(target=self._warm_queued, name="featurestore-console-warm",
                                                 daemon=True)
                self._warming.start()
            assert self._warming is not None
            return self._warming

    def rewarm(self, name: str) -> None:
        """Warm the commit the server now serves for ``name`` (after a reload swapped it in), in the
        background (:meth:`start_warming`)."""
        view = self.served(name) if self.served is not None else None
        if view is not None:
            self.start_warming([(name, view.version, view.commit)])

    def warmed(self, timeout: float | None = None) -> bool:
        """Wait until no warm-up is queued or running (False when ``timeout`` seconds passed first)."""
        return self._warm_idle.wait(timeout)

    def _warm_queued(self) -> None:
        with contextlib.suppress(AttributeError, OSError):  # Linux: a thread's own nice value
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
        while True:
            with self._lock:
                if not self._warm_todo:
                    self._warm_running = False
                    self._warm_idle.set()
                    return
                item = self._warm_todo.popleft()
            if item is None:
                self.warm()
            else:
                self.warm_group(*item)

    def warm(self) -> None:
        """:meth:`warm_group` every feature group version at its newest commit, in this thread."""
        try:
            specs = self.store.specs()
        except FeatureStoreError as exc:  # the pages will say what is wrong
            log.warning("console warm-up: %s", exc)
            return
        for spec in specs:
            self.warm_group(spec.name, spec.version)

    def warm_group(self, name: str, version: int | None = None, commit: int | None = None) -> None:
        """Compute the map of ``commit`` (default: the newest) and compare it with the commit before (the
        comparison the group page links), so the first visits are fast. Only from views that exist
        (served, or built): warming builds none and reads no table. Failures are logged: the pages
        will show them."""
        try:
            fg = self.group(name, version)
            c = fg.commit_of(None) if commit is None else commit
            if c < 1 or not self.has_view(fg, c):
                return
            if fg.spec.vector_features:
                projection(fg, self.view(fg, c))
            if c > 1 and self.has_view(fg, c - 1):
                self.comparison(fg, c - 1, c)
        except Exception as exc:  # a page will say what is wrong; warming must not stop the console
            log.warning("console warm-up of %s v%s: %s", name, version, exc)

    # ---- rendering ---------------------------------------------------------------------------------
    def env(self) -> Any:
        if self._env is None:
            import jinja2  # the web console's template engine, imported only here

            env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(HERE / "templates")),
                                     autoescape=True, undefined=jinja2.StrictUndefined,
                                     trim_blocks=True, lstrip_blocks=True)
            env.filters.update(size=human_bytes, num=number, when=when, figure=figure, short=short)
            env.globals.update(version=__version__, format_value=format_value, format_threshold=format_threshold)
            self._env = env
        return self._env

    def page(self, request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
        t = time.perf_counter()
        base = request.scope.get("root_path", "")
        html = self.env().get_template(template).render(base=base, request=request, api_docs=self.api_docs,
                                                        **context)
        timing = f"render;dur={(time.perf_counter() - t) * 1000:.1f}"
        return HTMLResponse(html, status_code=status, headers={"server-timing": timing})

    def error_page(self, request: Request, status: int, title: str, message: str) -> Response:
        if request.url.path.endswith(".json"):
            return Response(orjson.dumps({"detail": message, "error": title}), status_code=status,
                            media_type="application/json")
        try:
            return self.page(request, "error.html", status=status, title=title, message=message, code=status)
        except Exception:  # the error page itself failed: plain text, never a traceback
            log.exception("rendering the error page failed")
            return Response(f"{status} {title}: {message}", status_code=status, media_type="text/plain")

    # ---- auth ----------------------------------------------------------------------------------------
    def cookie_value(self) -> str:
        assert self.token is not None
        return hashlib.sha256(f"featurestore-console:{self.token}".encode()).hexdigest()

    def allowed(self, request: Request) -> bool:
        if self.token is None:
            return True
        header = request.headers.get("authorization", "").encode()
        if hmac.compare_digest(header, f"Bearer {self.token}".encode()):
            return True
        cookie = request.cookies.get(COOKIE, "").encode()
        return hmac.compare_digest(cookie, self.cookie_value().encode())


def human_bytes(n: int | None) -> str:
    if n is None:
        return "-"
    size = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1024 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def number(n: Any) -> str:
    return "-" if n is None else f"{int(n):,}"


def when(t: Any) -> str:
    return "-" if t is None else t.strftime("%Y-%m-%d %H:%M:%S")


def figure(x: Any, digits: int = 3) -> str:
    if x is None:
        return "-"
    x = float(x)
    return "-" if not np.isfinite(x) else f"{x:.{digits}f}"


def short(text: Any, n: int = 8) -> str:
    s = "" if text is None else str(text)
    return s if len(s) <= n else s[:n] + "…"


# ---- the app --------------------------------------------------------------------------------------------
def _int(request: Request, name: str, default: int | None = None) -> int | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise InvalidQuery(f"{name} must be a whole number; got {raw!r}") from None


def guarded(console: Console, fn: Callable[..., Any]) -> Callable[..., Awaitable[Response]]:
    """``fn(request, ...)`` run in a worker thread, with every failure answered by an error page."""

    @functools.wraps(fn)
    async def handler(request: Request, **kwargs: Any) -> Response:
        from starlette.concurrency import run_in_threadpool

        try:
            return await run_in_threadpool(fn, request, **kwargs)
        except Exception as exc:
            return console.error_page(request, *status_of(exc))

    handler.__signature__ = inspect.signature(fn)  # type: ignore[attr-defined]
    return handler


def status_of(exc: Exception) -> tuple[int, str, str]:
    if isinstance(exc, NotFound):
        return 404, "Not found", str(exc).strip("'\"")
    if isinstance(exc, InvalidData):
        return 400, "Bad request", str(exc)
    if isinstance(exc, FeatureStoreError):
        return 503, type(exc).__name__, str(exc)
    log.exception("console page failed")
    return 500, "Internal error", "the page failed; the server log has the details"


def create_console(store: FeatureStore, *, served: insights.Served | None = None, token: str | None = None,
                   api_docs: bool = False) -> FastAPI:
    """The console as an ASGI app, to mount (at ``/ui``) in another app (``api_docs``: that app serves
    ``/docs``, linked from every page)."""
    console = Console(store, served=served, token=token, api_docs=api_docs)
    app = FastAPI(title="featurestore console", openapi_url=None, docs_url=None, redoc_url=None)
    app.state.console = console
    pages = Pages(console)
    for path, fn in pages.routes():
        app.add_api_route(path, guarded(console, fn), methods=["GET"], include_in_schema=False)
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")

    async def not_found(request: Request, exc: Exception) -> Response:
        code = exc.status_code if isinstance(exc, StarletteHTTPException) else 400
        text = "no such page" if code == 404 else str(getattr(exc, "detail", "bad request"))
        return console.error_page(request, code, "Not found" if code == 404 else "Bad request", text)

    app.add_exception_handler(StarletteHTTPException, not_found)
    app.add_exception_handler(RequestValidationError, not_found)

    @app.middleware("http")
    async def auth(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        if console.token is None:
            return await call_next(request)
        given = request.query_params.get("token")
        if given is not None:
            if not hmac.compare_digest(given.encode(), console.token.encode()):
                return console.error_page(request, 401, "Unauthorized", "wrong token")
            rest = urlencode([(k, v) for k, v in request.query_params.multi_items() if k != "token"])
            target = request.url.path + (f"?{rest}" if rest else "")
            response = RedirectResponse(target, status_code=303)
            response.set_cookie(COOKIE, console.cookie_value(), httponly=True, samesite="strict",
                                path=request.scope.get("root_path", "") + "/")
            return response
        if not console.allowed(request):
            return console.error_page(request, 401, "Unauthorized",
                                      "this console needs the server's token: open it once with ?token=TOKEN "
                                      "(or send Authorization: Bearer TOKEN)")
        return await call_next(request)

    return app


def mount(app: FastAPI, store: FeatureStore, *, served: insights.Served | None = None, token: str | None = None,
          path: str = "/ui", api_docs: bool = False) -> Console:
    """Mount the console at ``path`` of ``app``; returns its state (``.start_warming()`` at start-up)."""
    console = create_console(store, served=served, token=token, api_docs=api_docs)
    app.mount(path, console, name="console")
    return console.state.console  # type: ignore[no-any-return]


def standalone(store: FeatureStore, *, token: str | None = None, warm: bool = False) -> FastAPI:
    """The app of ``featurestore ui``: the console at ``/ui`` and ``/`` redirecting to it; ``warm``
    opens the newest views and computes their maps in a background thread."""
    app = FastAPI(title="featurestore console", version=__version__, openapi_url=None, docs_url=None,
                  redoc_url=None)

    async def home() -> RedirectResponse:
        return RedirectResponse("/ui/", status_code=307)

    app.add_api_route("/", home, methods=["GET"], include_in_schema=False)
    console = create_console(store, token=token)
    app.mount("/ui", console, name="console")
    if warm:
        console.state.console.start_warming()
    return app


class Pages:
    """One method per page (``request`` first, path parameters after)."""

    def __init__(self, console: Console):
        self.c = console

    def routes(self) -> list[tuple[str, Callable[..., Any]]]:
        g = "/groups/{name}/v{version:int}"
        return [("/", self.groups), ("/training-sets", self.training_sets), ("/groups/{name}", self.newest),
                (g, self.group), (g + "/reports/{report_id}", self.report), (g + "/compare", self.compare),
                (g + "/projector", self.projector), (g + "/projection.json", self.projection_json),
                (g + "/neighbours.json", self.neighbours_json)]

    def groups(self, request: Request) -> Response:
        rows = insights.summaries(self.c.store, self.c.served)
        return self.c.page(request, "groups.html", groups=rows)

    def training_sets(self, request: Request) -> Response:
        return self.c.page(request, "training_sets.html", sets=insights.training_sets(self.c.store))

    def newest(self, request: Request, name: str) -> Response:
        return self._group(request, self.c.group(name))

    def group(self, request: Request, name: str, version: int) -> Response:
        return self._group(request, self.c.group(name, version))

    def _group(self, request: Request, fg: FeatureGroup) -> Response:
        name = fg.name
        s = insights.summary(self.c.store, name, fg.version, self.c.served)
        return self.c.page(request, "group.html", s=s, fg=fg, history=insights.history(self.c.store, fg))

    def report(self, request: Request, name: str, version: int, report_id: str) -> Response:
        fg = self.c.group(name, version)
        r = load_report(self.c.store.root, report_id, fg.name, fg.version)
        checks = sorted(r.checks, key=lambda c: (c.success, c.skipped))
        return self.c.page(request, "report.html", fg=fg, r=r, checks=checks)

    def compare(self, request: Request, name: str, version: int) -> Response:
        fg = self.c.group(name, version)
        newest = fg.commit_of(None)
        b = self.c.commit_number(fg, _int(request, "b", newest))
        a = self.c.commit_number(fg, _int(request, "a", max(1, (b or 1) - 1)))
        commits = [c for c in range(1, newest + 1)]
        if a == b or not commits:
            return self.c.page(request, "compare.html", fg=fg, a=a, b=b, commits=commits, cmp=None, bars=None)
        cmp, seconds = self.c.comparison(fg, a, b)
        bars = {"mean": bar_chart(cmp.mean_shift), "std": bar_chart(cmp.std_shift)}
        return self.c.page(request, "compare.html", fg=fg, a=a, b=b, commits=commits, cmp=cmp, bars=bars,
                           seconds=seconds)

    def _method(self, request: Request) -> str:
        method = request.query_params.get("method") or "pca"
        if method not in METHODS:
            raise InvalidQuery(f"method must be one of {', '.join(METHODS)}; got {method!r}")
        return method

    def projector(self, request: Request, name: str, version: int) -> Response:
        fg = self.c.group(name, version)
        commit = self.c.commit_number(fg, _int(request, "commit"))
        other = _int(request, "with")
        if other is not None:
            self.c.commit_number(fg, other)
        view = self.c.view(fg, commit)
        key = (request.query_params.get("key") or "").strip()
        k = min(max(_int(request, "k", 10) or 10, 1), 100)
        found = self._neighbours(view, key, k) if key else None
        columns = color_columns(view)
        color = request.query_params.get("color") or next((c for c in columns if c != fg.spec.event_time), "")
        if color and color not in columns:
            raise InvalidQuery(f"{fg.spec.key} has no scalar column {color!r} to colour by; "
                               f"columns: {', '.join(columns) or 'none'}")
        return self.c.page(request, "projector.html", fg=fg, view=view, commit=commit, other=other,
                           commits=list(range(1, fg.commit_of(None) + 1)), columns=columns, color=color,
                           method=self._method(request), methods=METHODS, umap=umap_available(), key=key, k=k,
                           found=found, max_points=MAX_POINTS)

    def _neighbours(self, view: OnlineView, key: str, k: int) -> dict[str, Any]:
        typed: Any = key
        if view.manifest.get("key_type") == "int64":
            try:
                typed = int(key)
            except ValueError:
                raise InvalidQuery(f"{view.name} has integer keys; got {key!r}") from None
        if typed not in view:
            return {"key": typed, "found": False, "neighbours": []}
        res = view.nearest(key=typed, k=k, exclude=[typed])
        return {"key": typed, "found": True, "exact": res.exact,
                "neighbours": [{"key": n, "score": float(s)} for n, s in zip(res.keys, res.scores)]}

    def neighbours_json(self, request: Request, name: str, version: int) -> Response:
        fg = self.c.group(name, version)
        view = self.c.view(fg, _int(request, "commit"))
        key = (request.query_params.get("key") or "").strip()
        if not key:
            raise InvalidQuery("give a key: ?key=...")
        k = min(max(_int(request, "k", 10) or 10, 1), 100)
        doc = {"commit": view.commit, **self._neighbours(view, key, k)}
        return Response(orjson.dumps(doc), media_type="application/json")

    def projection_json(self, request: Request, name: str, version: int) -> Response:
        fg = self.c.group(name, version)
        commit = self.c.commit_number(fg, _int(request, "commit"))
        method = self._method(request)
        other = _int(request, "with")
        key = (fg.name, fg.version, commit, method, other)
        body = self.c.recall(self.c.maps, key)
        if body is None:
            body = self.c.remember(self.c.maps, key, self._map(fg, self.c.view(fg, commit), method, other))
        return Response(body, media_type="application/json")

    def _map(self, fg: FeatureGroup, view: OnlineView, method: str, other: int | None) -> bytes:
        """The projector's data: the sampled keys, their coordinates and scalar columns (and the other
        commit's coordinates of the same keys)."""
        p = projection(fg, view, "pca" if other is not None else method)
        keys = view.keys_at(p.rows)
        colors = {c: coloring(view, c, p.rows).to_json() for c in color_columns(view)}
        doc: dict[str, Any] = {"feature_group": fg.name, "version": fg.version, "commit": view.commit,
                               "method": p.method, "rows": view.rows, "sample": len(p), "keys": keys,
                               "x": _column(p.coords, 0), "y": _column(p.coords, 1), "colors": colors,
                               "explained_variance": p.manifest.get("explained_variance")}
        if other is not None:
            pr = pair(view, p, self.c.commit_data(fg, other))
            doc["with"] = {"commit": other, "x": _column(pr.right, 0), "y": _column(pr.right, 1), "shared": pr.shared,
                           "cosine_before": pr.cosine_before, "cosine_after": pr.cosine_after}
        return orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)


def _column(coords: np.ndarray, i: int) -> np.ndarray:
    """One coordinate of every point, rounded (4 decimals are plenty on screen), for JSON."""
    return np.ascontiguousarray(np.round(coords[:, i].astype(np.float64), 4))


def bar_chart(values: np.ndarray, width: int = 640, height: int = 120) -> dict[str, Any]:
    """An SVG bar chart of per-dimension values (rendered by the template; no script)."""
    n = max(1, len(values))
    top = float(np.max(np.abs(values))) if len(values) else 0.0
    scale = (height / 2 - 4) / top if top > 0 else 0.0
    w = width / n
    bars = []
    for i, v in enumerate(values):
        h = abs(float(v)) * scale
        y = height / 2 - h if v >= 0 else height / 2
        bars.append({"x": round(i * w, 2), "y": round(y, 2), "w": round(max(w - 1, 1), 2), "h": round(h, 2),
                     "dim": i, "value": float(v), "up": v >= 0})
    order: list[int] = np.argsort(-np.abs(values))[:5].tolist() if len(values) else []
    return {"width": width, "height": height, "bars": bars, "max": top,
            "largest": [(int(i), float(values[i])) for i in order]}
