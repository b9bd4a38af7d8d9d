"""The web console: its data (verdicts, comparisons, projections, training sets), its pages over a real
HTTP server (auth, errors, tables without JavaScript, offline API docs), ``featurestore plot``, and the
pages in a real browser.

Browser tests: headless Chromium (Debian's chromium and chromium-driver) driven by Selenium against
``featurestore serve``'s app on 127.0.0.1, behind a token. Every page loads with no console error and no
request to any host but 127.0.0.1 (read from the browser's performance log, i.e. its DevTools network
events); the projector draws points and lists a searched key's neighbours; a warned commit is visibly
flagged; bad paths give a 404 page. One browser serves the module; screenshots are kept under pytest's
temporary folder.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from featurestore import FeatureStore
from featurestore.cli import main
from featurestore.console import commits, insights
from featurestore.console import projection as pj
from featurestore.errors import CorruptData
from featurestore.online.build import views_dir
from featurestore.server.app import create_app
from featurestore.server.docs import REDOC_REMOTE
from featurestore.server.reload import ReloadPolicy
from tests.conftest import T0, run_python
from tests.console_helpers import BATCHES, DIM, SEGMENTS, TOKEN, items_batch, make_store, pages, report_of
from tests.online_helpers import ServerThread


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> FeatureStore:
    s = make_store(tmp_path_factory.mktemp("console") / "store")
    for commit in (1, 2, 3):  # the console opens views, never builds them
        s.online("items", 1, commit)
    s.online("users", 1)
    yield s
    s.close()


@pytest.fixture(scope="module")
def server(store: FeatureStore) -> Any:
    app = create_app(store, token=TOKEN, policy=ReloadPolicy(interval=0))
    with ServerThread(app) as srv:
        yield srv


def latest_by_key(batches: list[Any]) -> dict[str, tuple[Any, list[float]]]:
    """The newest (event time, vector) per key after each batch in order (a later batch wins a tie)."""
    out: dict[str, tuple[Any, list[float]]] = {}
    for b in batches:
        for row in b.to_pylist():
            old = out.get(row["id"])
            if old is None or row["event_time"] >= old[0]:
                out[row["id"]] = (row["event_time"], row["embedding"])
    return out


# ---- data -------------------------------------------------------------------------------------------------
@settings(max_examples=60, deadline=None)
@given(st.sets(st.integers(0, 60)), st.sets(st.integers(0, 60)), st.booleans())
def test_matching_keys_agree_with_sets(a: set[int], b: set[int], strings: bool) -> None:
    ka = np.array(sorted(f"k{x:03d}" if strings else x for x in a))
    kb = np.array(sorted(f"k{x:03d}" if strings else x for x in b))
    ia, ib = insights.matching(ka, kb)
    assert ka[ia].tolist() == kb[ib].tolist() == sorted(set(ka.tolist()) & set(kb.tolist()))


def test_compare_counts_rows_as_a_plain_reference_does(store: FeatureStore) -> None:
    fg = store.feature_group("items")
    batches = [make() for make in BATCHES]
    for a, b in [(1, 2), (2, 3), (1, 3), (3, 1)]:
        old, new = latest_by_key(batches[:a]), latest_by_key(batches[:b])
        cmp = insights.compare(fg, store.online("items", 1, a), store.online("items", 1, b))
        shared = old.keys() & new.keys()
        changed = sum(old[k] != new[k] for k in shared)
        assert (cmp.added, cmp.removed, cmp.changed, cmp.unchanged) == \
            (len(new.keys() - old.keys()), len(old.keys() - new.keys()), changed, len(shared) - changed)
        want = np.array([v for _, (_, v) in sorted(new.items())], np.float64)
        np.testing.assert_allclose(cmp.mean_b, want.mean(axis=0), atol=1e-5)
        np.testing.assert_allclose(cmp.std_b, want.std(axis=0), atol=1e-5)
        assert 0.0 <= cmp.overlap_at_10 <= 1.0 and len(cmp.moved) == 20
        assert [m.overlap for m in cmp.moved] == sorted(m.overlap for m in cmp.moved)
    same = insights.compare(fg, store.online("items", 1, 2), store.online("items", 1, 2))
    assert (same.added, same.removed, same.changed, same.overlap_at_10) == (0, 0, 0, 1.0)
    assert same.drift["mean_cosine"] == pytest.approx(1.0)


def test_a_comparison_reads_and_checks_only_what_it_uses(store: FeatureStore, tmp_path: Path) -> None:
    shutil.copytree(store.root.uri, tmp_path / "store")
    copy = FeatureStore(tmp_path / "store")
    fg = copy.feature_group("items")
    full, first = commits.CommitData.of_view(copy.online("items", 1, 2)), copy.online("items", 1, 1)
    light = commits.read_commit(fg, 2)
    assert light is not None and light.view is None and light.rows == full.rows == 450
    assert light.keys.tolist() == full.keys.tolist() and np.array_equal(light.matrix, full.matrix)
    assert commits.read_commit(fg, 9) is None  # no view: the console reads the table (read_table_commit)
    want = insights.compare(fg, first, full)
    got = insights.compare(fg, commits.read_commit(fg, 1), light)
    assert (got.added, got.changed, got.overlap_at_10, got.moved) == (want.added, want.changed, want.overlap_at_10,
                                                                      want.moved)
    vectors = pj.projection_dir(fg, 2, "pca").parent.parent / "c2" / "vectors.npy"
    data = bytearray(vectors.read_bytes())
    data[-1] ^= 0xFF
    vectors.write_bytes(bytes(data))
    with pytest.raises(CorruptData, match="vectors.npy"):
        commits.read_commit(fg, 2)
    copy.close()


def figures(cmp: insights.Comparison) -> dict[str, Any]:
    return dataclasses.asdict(cmp)


def listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_a_commit_without_a_view_is_compared_from_the_table(store: FeatureStore, tmp_path: Path) -> None:
    """Only the newest commit has a view: the compare page reads the others from the table, with the
    figures of two views compared, and neither builds a view nor writes anything (nor does the projector,
    which answers that the commit has no view)."""
    shutil.copytree(store.root.uri, tmp_path / "store")
    copy = FeatureStore(tmp_path / "store")
    fg = copy.feature_group("items")
    want = {(a, b): insights.compare(fg, copy.online("items", 1, a), copy.online("items", 1, b))
            for a, b in [(2, 3), (1, 2)]}
    views = views_dir(fg)
    for c in (1, 2):
        shutil.rmtree(views / f"c{c}")
    app = create_app(copy, token=TOKEN, policy=ReloadPolicy(interval=0))
    console = app.app.state.console
    with ServerThread(app) as srv, httpx.Client(base_url=srv.url, headers={"Authorization": f"Bearer {TOKEN}"}) as http:
        before = listing(views)  # the served view of commit 3 (and the server's lease)
        assert [p for p in before if "/" not in p and p.startswith("c")] == ["c3"]
        for a, b in want:
            r = http.get("/ui/groups/items/v1/compare", params={"a": a, "b": b})
            assert r.status_code == 200, r.text[:300]
            assert re.search(rf'id="changed">{want[a, b].changed}<', r.text)
        r = http.get("/ui/groups/items/v1/projector", params={"commit": 2})
        assert r.status_code == 404 and "commit 2 has no online view" in r.text and "featurestore materialize" in r.text
        group = http.get("/ui/groups/items/v1").text  # maps are linked for commits with a view only
        assert re.findall(r'projector\?commit=(\d+)">map<', group) == ["3"] and group.count(">no view<") == 2
        assert listing(views) == before
    for a, b in want:
        got, _ = console.comparison(fg, a, b)  # kept from the page
        np.testing.assert_equal(figures(got), figures(want[a, b]))
    copy.close()


def composite_spec() -> Any:
    from featurestore import FeatureGroupSpec

    return FeatureGroupSpec.from_dict({
        "name": "visits", "version": 1,
        "entity_keys": [{"name": "user", "type": "int64"}, {"name": "region", "type": "string"}],
        "features": [{"name": "embedding", "type": "vector", "dim": DIM, "metric": "l2"},
                     {"name": "n", "type": "int64"}],
        "expectations": {"vectors": {"embedding": {"drift": False}}},
    })


def test_composite_keys_compare_alike_from_the_table_and_from_views(tmp_path: Path) -> None:
    import pyarrow as pa

    from tests.console_helpers import vectors

    store = FeatureStore(tmp_path / "store")
    store.apply([composite_spec()])
    fg = store.feature_group("visits")
    for seed, users in [(1, range(0, 60)), (2, range(30, 80))]:
        keys = [(u, r) for u in users for r in ("eu", "us")]
        fg.insert(pa.table({
            "user": pa.array([u for u, _ in keys], pa.int64()), "region": [r for _, r in keys],
            "event_time": pa.array([T0 + timedelta(hours=seed)] * len(keys), pa.timestamp("us", tz="UTC")),
            "embedding": pa.FixedSizeListArray.from_arrays(pa.array(vectors(len(keys), seed).ravel()), DIM),
            "n": pa.array([seed] * len(keys), pa.int64())}))
    from_table = [commits.read_table_commit(fg, c) for c in (1, 2)]
    assert not views_dir(fg).exists()  # reading built nothing
    got = insights.compare(fg, *from_table)
    want = insights.compare(fg, store.online("visits", 1, 1), store.online("visits", 1, 2))
    np.testing.assert_equal(figures(got), figures(want))
    assert (got.added, got.removed, got.changed, got.unchanged) == (40, 0, 60, 60)
    assert got.added_examples[0] == (60, "eu")
    assert all(isinstance(m.key, tuple) for m in got.moved)
    from_views = [commits.read_commit(fg, c) for c in (1, 2)]
    np.testing.assert_equal(figures(insights.compare(fg, *from_views)), figures(want))
    store.close()


def test_keys_numpy_cannot_hold_compare_alike_from_the_table_and_from_views(tmp_path: Path) -> None:
    from tests.console_helpers import items_spec

    store = FeatureStore(tmp_path / "store")
    store.apply([items_spec()])
    fg = store.feature_group("items")
    keys = [f"k{i}" for i in range(40)] + ["a\x00"]  # numpy's strings drop a trailing NUL
    fg.insert(items_batch(keys, 1, 0))
    fg.insert(items_batch([*keys[:10], "a\x00"], 2, 1))
    from_table = [commits.read_table_commit(fg, c) for c in (1, 2)]
    assert from_table[0].raw_keys and from_table[0].keys_at(np.arange(2)) == ["a\x00", "k0"]
    want = insights.compare(fg, store.online("items", 1, 1), store.online("items", 1, 2))
    np.testing.assert_equal(figures(insights.compare(fg, *from_table)), figures(want))
    store.close()


def test_verdicts_warned_and_refused(store: FeatureStore) -> None:
    rows = insights.history(store, store.feature_group("items"))
    kinds = {r.commit.commit: r.verdict.kind for r in rows}
    assert kinds == {3: "warned", 2: "passed", 1: "passed", 0: "none"}
    warned = rows[0].verdict
    assert warned.report_id and any("n_events" in c for c in warned.failed_checks)
    groups = {s.spec.name: s for s in insights.summaries(store)}
    assert groups["items"].status == "warned" and groups["items"].refused is None
    assert groups["users"].status == "refused" and groups["users"].verdict.kind == "passed"
    assert groups["items"].stats.rows == 400 + 150 + 20 and groups["items"].stats.disk_bytes > 0
    (ts,) = insights.training_sets(store)
    assert (ts.name, ts.version, ts.rows, ts.pins, ts.spine_rows) == ("clicks", 1, 3, {"items:1": 3}, 3)
    assert len(ts.spine_sha256) == 64


def test_projection_is_pca_cached_and_checksummed(store: FeatureStore) -> None:
    fg = store.feature_group("items")
    view = store.online("items", 1, 2)
    p = pj.projection(fg, view)
    x = np.asarray(view.matrix, np.float64)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    _, _, vt = np.linalg.svd(x - x.mean(axis=0), full_matrices=False)
    want = (x - x.mean(axis=0)) @ vt[:2].T
    for i in range(2):  # the same axes up to sign
        assert abs(np.corrcoef(p.coords[:, i], want[:, i])[0, 1]) > 0.9999
    folder = pj.projection_dir(fg, 2, "pca")
    manifest = json.loads((folder / "manifest.json").read_text())
    assert set(manifest["files"]) == {"coords.npy", "rows.npy", "basis.npy"}
    again = pj.load_projection(fg, 2, "pca")
    np.testing.assert_array_equal(again.coords, p.coords)
    raw = bytearray((folder / "coords.npy").read_bytes())
    raw[-1] ^= 0xFF
    (folder / "coords.npy").write_bytes(bytes(raw))
    with pytest.raises(CorruptData, match="coords.npy"):
        pj.load_projection(fg, 2, "pca")
    fixed = pj.projection(fg, view)  # recomputed, never the damaged coordinates
    np.testing.assert_array_equal(fixed.coords, p.coords)
    pj.load_projection(fg, 2, "pca")
    small = pj.compute(view, size=50, seed=3)
    assert len(small) == 50 and small.rows.tolist() == sorted(set(small.rows.tolist()))


def test_two_commits_on_one_plane_undo_a_rotation(tmp_path: Path) -> None:
    store = FeatureStore(tmp_path / "store")
    from tests.console_helpers import items_spec

    store.apply([items_spec()])
    fg = store.feature_group("items")
    first = items_batch([f"k{i}" for i in range(300)], 1, 0)
    fg.insert(first)
    q, _ = np.linalg.qr(np.random.default_rng(7).standard_normal((DIM, DIM)))
    v = np.stack(first["embedding"].to_numpy(zero_copy_only=False)).astype(np.float64) @ q
    rotated = items_batch([f"k{i}" for i in range(300)], 1, 1)
    import pyarrow as pa

    rotated = rotated.set_column(2, "embedding",
                                 pa.FixedSizeListArray.from_arrays(pa.array(v.astype(np.float32).ravel()), DIM))
    fg.insert(rotated)
    a, b = store.online("items", 1, 1), store.online("items", 1, 2)
    pair = pj.pair(a, pj.projection(fg, a), b)
    assert pair.shared == 300 and pair.cosine_after == pytest.approx(1.0, abs=1e-5) and pair.cosine_before < 0.9
    np.testing.assert_allclose(pair.right, pair.left, atol=1e-3)
    store.close()


def test_plot_writes_a_png(store: FeatureStore, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "map.png"
    assert main(["plot", "items", "--root", store.root.uri, "--out", str(out), "--color", "score"]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["plot", "items", "--root", store.root.uri, "--color", "nope", "--out", str(out)]) == 2
    assert "no scalar column 'nope'" in capsys.readouterr().err
    assert main(["plot", "items", "--root", store.root.uri, "--out", str(out), "--color", "segment"]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@settings(max_examples=60, deadline=None)
@given(st.lists(st.one_of(st.none(), st.integers(0, 20)), max_size=80), st.booleans())
def test_categories_fold_the_rarest_into_other(values: list[int | None], strings: bool) -> None:
    import pyarrow as pa

    from featurestore.console import colors

    data = [None if v is None else (f"c{v}" if strings else v) for v in values]
    got = colors._categories("c", pa.array(data, pa.string() if strings else pa.int64()))
    tally = Counter(v for v in data if v is not None)
    ranked = sorted(tally.items(), key=lambda kv: (-kv[1], str(kv[0])))
    shown = ranked if len(ranked) <= colors.MAX_CATEGORIES else ranked[: colors.MAX_CATEGORIES - 1]
    want = [str(v) for v, _ in shown] + ([colors.OTHER] if len(shown) < len(ranked) else [])
    assert list(got.labels) == want and sum(got.counts) == len(data) - data.count(None)
    decoded = [None if c < 0 else got.labels[c] for c in got.values]
    assert decoded == [None if v is None else (str(v) if str(v) in want else colors.OTHER) for v in data]


def test_core_modules_import_no_web_framework() -> None:
    code = ("import sys, featurestore.console.insights, featurestore.console.projection, featurestore.console.plot, "
            "featurestore.demo; print(sorted(m for m in ('fastapi', 'starlette', 'jinja2', 'matplotlib') "
            "if m in sys.modules))")
    done = run_python(code)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


# ---- pages over HTTP ---------------------------------------------------------------------------------------
def test_pages_need_the_token_and_accept_it_once(server: Any, store: FeatureStore) -> None:
    with httpx.Client(base_url=server.url) as http:
        r = http.get("/ui/")
        assert r.status_code == 401 and "?token=" in r.text
        assert http.get("/ui/", params={"token": "wrong"}).status_code == 401
        r = http.get("/ui/groups/items/v1", params={"token": TOKEN, "x": "1"}, follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == "/ui/groups/items/v1?x=1"
        assert TOKEN not in r.headers["set-cookie"] and "HttpOnly" in r.headers["set-cookie"]
        for path in pages(report_of(store, 3)):
            r = http.get(path)
            assert r.status_code == 200, (path, r.text[:300])
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {TOKEN}"}) as http:
        assert http.get("/ui/training-sets").status_code == 200


def test_tables_are_server_rendered(server: Any, store: FeatureStore) -> None:
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {TOKEN}"}) as http:
        home = http.get("/ui/").text
        assert re.search(r'<tr class="verdict-warned">\s*<td><a href="/ui/groups/items/v1">items</a>', home)
        assert 'class="badge refused"' in home
        group = http.get("/ui/groups/items/v1").text
        row = re.search(r'<tr id="commit-3" class="verdict-warned">(.*?)</tr>', group, re.S)
        assert row and "WARNED" in row.group(1) and "n_events" in row.group(1)
        assert f"/ui/groups/items/v1/reports/{report_of(store, 3)}" in row.group(1)
        cmp = http.get("/ui/groups/items/v1/compare", params={"a": 1, "b": 2}).text
        assert re.search(r'id="added">50<', cmp) and re.search(r'id="changed">100<', cmp)
        assert re.search(r'id="removed">0<', cmp)
        view = store.online("items", 1, 3)
        found = http.get("/ui/groups/items/v1/projector", params={"commit": 3, "key": "k5", "k": 4}).text
        want = view.nearest(key="k5", k=4, exclude=["k5"]).keys
        assert re.findall(r"<tr><td>\d+</td><td>(k\d+)</td>", found) == want
        ts = http.get("/ui/training-sets").text
        assert "clicks" in ts and "items:1</a> commit 3" in ts


def test_json_endpoints(server: Any, store: FeatureStore) -> None:
    view = store.online("users", 1)
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {TOKEN}"}) as http:
        doc = http.get("/ui/groups/users/v1/neighbours.json", params={"key": "3", "k": 5}).json()
        assert [n["key"] for n in doc["neighbours"]] == view.nearest(key=3, k=5, exclude=[3]).keys
        assert http.get("/ui/groups/users/v1/neighbours.json", params={"key": "4"}).json()["found"] is False
        r = http.get("/ui/groups/users/v1/neighbours.json", params={"key": "x"})
        assert r.status_code == 400 and "integer keys" in r.json()["detail"]
        p = http.get("/ui/groups/items/v1/projection.json", params={"commit": 2, "with": 1}).json()
        assert p["sample"] == 450 == len(p["keys"]) == len(p["x"])
        kinds = {c: v["kind"] for c, v in p["colors"].items()}
        assert kinds == {"event_time": "numeric", "n_events": "numeric", "score": "numeric",
                         "segment": "categorical"}
        seg = p["colors"]["segment"]
        want = dict(zip(store.online("items", 1, 2).columns["id"].to_pylist(),
                        store.online("items", 1, 2).columns["segment"].to_pylist()))
        assert [None if c < 0 else seg["labels"][c] for c in seg["codes"]] == [want[k] for k in p["keys"]]
        assert sorted(seg["labels"]) == sorted(SEGMENTS) and len(seg["palette"]) == len(SEGMENTS)
        assert seg["counts"] == sorted(seg["counts"], reverse=True)
        users = http.get("/ui/groups/users/v1/projection.json").json()["colors"]
        assert users["n_events"]["kind"] == "categorical" and users["n_events"]["labels"] == ["3"]
        assert p["with"]["shared"] == 400 and sum(x is None for x in p["with"]["x"]) == 50


def test_errors_are_pages_not_tracebacks(server: Any) -> None:
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {TOKEN}"}) as http:
        g = "/ui/groups/items/v1"
        for path, status in [("/ui/groups/nope", 404), ("/ui/nope/at/all", 404), ("/ui/groups/items/v7", 404),
                             (f"{g}/reports/nope", 404), (f"{g}/projector?commit=9", 404), (f"{g}/compare?a=x", 400),
                             (f"{g}/projector?method=tsne", 400), ("/ui/groups/items/vx", 404),
                             (f"{g}/projector?commit=0", 400), (f"{g}/projector?color=nope", 400)]:
            r = http.get(path)
            assert r.status_code == status, (path, r.text[:200])
            assert r.headers["content-type"].startswith("text/html") and "Traceback" not in r.text
            assert f'<span class="code">{status}</span>' in r.text
        assert http.get("/nope").json()["error"] == "HTTPError"  # the API keeps its JSON errors


def test_api_docs_use_local_assets(server: Any) -> None:
    with httpx.Client(base_url=server.url) as http:
        for page in ("/docs", "/redoc"):
            html = http.get(page).text
            urls = re.findall(r'(?:src|href|url)\s*[=:]\s*["\']([^"\']+)["\']', html)
            assert urls and all(u.startswith(("/", "data:")) for u in urls), urls
            assert "googleapis" not in html and "cdn." not in html
            for u in urls:
                if u.startswith("/docs-assets/"):
                    assert http.get(u).status_code == 200
        assert REDOC_REMOTE not in http.get("/docs-assets/redoc.js").content


# ---- in a real browser -------------------------------------------------------------------------------------
CHROMIUM, DRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
in_browser = pytest.mark.skipif(not (os.path.exists(CHROMIUM) and os.path.exists(DRIVER)),
                                reason="needs Debian's chromium and chromium-driver (.ci/run installs them)")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--window-size=1400,1000"]
WAIT = 20


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("console-screenshots")


@pytest.fixture(scope="module")
def browser(server: ServerThread) -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="fs-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in [*FLAGS, f"--user-data-dir={profile}"]:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    driver.set_page_load_timeout(WAIT)
    try:
        driver.get(f"{server.url}/ui/?token={TOKEN}")  # sets the console's cookie
        assert "Feature groups" in driver.title
        drain(driver)
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def drain(driver: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The console messages and network events logged since the last call."""
    console = driver.get_log("browser")
    network = [json.loads(e["message"])["message"] for e in driver.get_log("performance")]
    return console, [m for m in network if m["method"].startswith("Network.")]


def visit(driver: Any, url: str, shots: Path, name: str, ready: str | None = None) -> list[dict[str, Any]]:
    """Load ``url``; wait for ``ready`` (a CSS selector) if given; check the console and the hosts asked;
    keep a screenshot; return the network events."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(url)
    wait = WebDriverWait(driver, WAIT)
    wait.until(lambda d: d.execute_script("return document.readyState") == "complete")
    if ready:
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, ready))
    console, network = drain(driver)
    errors = [m for m in console if m["level"] == "SEVERE"]
    assert not errors, f"{url}: console errors {errors}"
    urls = [m["params"]["request"]["url"] for m in network if m["method"] == "Network.requestWillBeSent"]
    assert urls, url
    remote = [u for u in urls if urlsplit(u).scheme not in ("data", "blob")
              and urlsplit(u).hostname != "127.0.0.1"]
    assert not remote, f"{url} asked other hosts: {remote}"
    driver.save_screenshot(str(shots / f"{name}.png"))
    return network


def statuses(network: list[dict[str, Any]]) -> dict[str, int]:
    return {m["params"]["response"]["url"]: m["params"]["response"]["status"]
            for m in network if m["method"] == "Network.responseReceived"}


@pytest.mark.slow
@in_browser
def test_every_page_loads_clean_and_local(browser: Any, server: ServerThread, store: FeatureStore, shots: Path
                                          ) -> None:
    for i, path in enumerate(pages(report_of(store, 3))):
        ready = "#projector[data-points]" if "/projector" in path else None
        network = visit(browser, server.url + path, shots, f"page-{i}", ready)
        bad = {u: s for u, s in statuses(network).items() if s >= 400}
        assert not bad, (path, bad)
    for path, ready in [("/docs", ".swagger-ui .opblock"), ("/redoc", "redoc, [role=navigation], .api-content")]:
        network = visit(browser, server.url + path, shots, path.strip("/"), ready)
        assert all(s < 400 for s in statuses(network).values()), path
    assert "/feature-groups/{name}/lookup" in browser.page_source or "lookup" in browser.page_source


@pytest.mark.slow
@in_browser
def test_projector_draws_points_and_lists_neighbours(browser: Any, server: ServerThread, store: FeatureStore,
                                                     shots: Path) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    from featurestore.console.colors import PALETTE

    visit(browser, f"{server.url}/ui/groups/items/v1/projector?commit=2&with=1", shots, "projector",
          "#projector[data-points]")
    assert browser.find_element(By.ID, "projector").get_attribute("data-points") == "450"
    painted = """const c = document.getElementById(arguments[0]), d = c.getContext('2d')
                 .getImageData(0, 0, c.width, c.height).data; let n = 0;
                 for (let i = 3; i < d.length; i += 4) { if (d[i] > 0) n++; } return n;"""
    assert browser.execute_script(painted, "map") > 400
    assert browser.execute_script(painted, "map2") > 300
    Select(browser.find_element(By.ID, "color")).select_by_value("segment")  # a categorical column
    legend = browser.find_element(By.ID, "legend")
    assert legend.get_attribute("data-kind") == "categorical"
    entries = [li.text for li in legend.find_elements(By.CSS_SELECTOR, "li")]
    assert sorted(e.split(" (")[0] for e in entries[:-1]) == sorted(SEGMENTS) and entries[-1] == "(none)"
    swatches = {s.value_of_css_property("background-color") for s in legend.find_elements(By.CSS_SELECTOR, ".swatch")}
    assert len(swatches) == len(SEGMENTS) + 1
    colours = """const c = document.getElementById('map'),
                   d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data, seen = new Set();
                 for (let i = 0; i < d.length; i += 4) {
                   if (d[i + 3] > 200) { seen.add(d[i] + ',' + d[i + 1] + ',' + d[i + 2]); } }
                 return Array.from(seen);"""
    drawn = {tuple(int(v) for v in c.split(",")) for c in browser.execute_script(colours)}
    for hexa in PALETTE[: len(SEGMENTS)]:
        rgb = tuple(int(hexa[i:i + 2], 16) for i in (1, 3, 5))
        assert any(max(abs(p - q) for p, q in zip(rgb, c)) <= 2 for c in drawn), hexa
    browser.save_screenshot(str(shots / "projector-categories.png"))
    spot = """const c = document.getElementById('map'), r = c.getBoundingClientRect(),
                d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
              for (let i = 3; i < d.length; i += 4) { if (d[i] > 200) { const p = (i - 3) / 4;
                return [(p % c.width) * r.width / c.width - r.width / 2, Math.floor(p / c.width) * r.height / c.height
                        - r.height / 2]; } }"""
    dx, dy = browser.execute_script(spot)  # a painted pixel, from the canvas's centre in CSS pixels
    ActionChains(browser).move_to_element_with_offset(browser.find_element(By.ID, "map"), int(dx) + 1,
                                                      int(dy) + 1).perform()
    tip = browser.find_element(By.ID, "tooltip")
    WebDriverWait(browser, WAIT).until(lambda d: tip.is_displayed())
    assert tip.text.split()[0] in {f"k{i}" for i in range(450)} and "segment" in tip.text
    field = browser.find_element(By.ID, "key")
    field.clear()
    field.send_keys("k7")
    k = browser.find_element(By.ID, "k")
    k.clear()
    k.send_keys("6")
    browser.find_element(By.CSS_SELECTOR, "#search button").click()
    WebDriverWait(browser, WAIT).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#neighbours tbody tr")) == 6)
    got = [r.find_elements(By.TAG_NAME, "td")[1].text
           for r in browser.find_elements(By.CSS_SELECTOR, "#neighbours tbody tr")]
    assert got == store.online("items", 1, 2).nearest(key="k7", k=6, exclude=["k7"]).keys
    assert browser.find_element(By.ID, "neighbours").is_displayed()
    browser.save_screenshot(str(shots / "projector-search.png"))
    field.clear()
    field.send_keys("no-such-key")
    browser.find_element(By.CSS_SELECTOR, "#search button").click()
    WebDriverWait(browser, WAIT).until(lambda d: d.find_elements(By.ID, "not-found"))
    console, _ = drain(browser)
    assert not [m for m in console if m["level"] == "SEVERE"]


@pytest.mark.slow
@in_browser
def test_a_warned_commit_stands_out(browser: Any, server: ServerThread, shots: Path) -> None:
    from selenium.webdriver.common.by import By

    visit(browser, f"{server.url}/ui/groups/items/v1", shots, "group-warned")
    warned = browser.find_element(By.ID, "commit-3")
    passed = browser.find_element(By.ID, "commit-2")
    badge = warned.find_element(By.CSS_SELECTOR, ".badge.warned")
    assert badge.is_displayed() and "WARNED" in badge.text
    colour = "return getComputedStyle(arguments[0].querySelector('td')).backgroundColor"
    assert browser.execute_script(colour, warned) != browser.execute_script(colour, passed)
    assert "n_events" in warned.find_element(By.CSS_SELECTOR, ".failed-checks").text
    warned.find_element(By.CSS_SELECTOR, "a.report-link").click()
    assert browser.find_element(By.CSS_SELECTOR, "h1 .badge").text == "failed"
    assert browser.find_elements(By.CSS_SELECTOR, "#checks tr.fail")


@pytest.mark.slow
@in_browser
def test_bad_paths_are_404_pages(browser: Any, server: ServerThread, shots: Path) -> None:
    from selenium.webdriver.common.by import By

    for i, path in enumerate(["/ui/groups/nope", "/ui/no/such/page", "/ui/groups/items/v9/compare"]):
        browser.get(server.url + path)
        _, network = drain(browser)
        assert statuses(network)[server.url + path] == 404
        assert browser.find_element(By.CSS_SELECTOR, "h1 .code").text == "404"
        assert "Traceback" not in browser.page_source
        browser.save_screenshot(str(shots / f"404-{i}.png"))


def test_umap_maps_are_seeded_and_served(server: Any, store: FeatureStore, tmp_path: Path) -> None:
    """UMAP for real (the umap extra, installed by make venv): seeded, faithful to neighbourhoods, drawn
    by the page's method switch and by featurestore plot --method umap."""
    if not pj.umap_available():
        pytest.skip("umap-learn is not installed (the umap extra: pip install 'featurestore[umap]')")
    from sklearn.manifold import trustworthiness

    view, items = store.online("items", 1, 3), store.feature_group("items")
    first, again = pj.projection(items, view, "umap"), pj.compute(view, "umap")  # cached, then computed again
    assert first.coords.shape == (450, 2) and first.basis is None and np.isfinite(first.coords).all()
    np.testing.assert_array_equal(first.coords, again.coords)
    x = pj.searched(view, first.rows)
    shuffled = np.random.default_rng(0).permutation(first.coords)
    assert trustworthiness(x, first.coords, n_neighbors=5) > 0.9 > trustworthiness(x, shuffled, n_neighbors=5)
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {TOKEN}"}) as http:
        page = http.get("/ui/groups/items/v1/projector", params={"commit": 3, "method": "umap"}).text
        assert re.search(r'<option value="umap" selected>UMAP</option>', page)
        doc = http.get("/ui/groups/items/v1/projection.json", params={"commit": 3, "method": "umap"}).json()
    assert doc["method"] == "umap" and doc["sample"] == 450 == len(doc["x"])
    np.testing.assert_allclose(np.array([doc["x"], doc["y"]]).T, first.coords, atol=1e-4)  # the cached map
    cached = pj.load_projection(items, 3, "umap")
    assert cached is not None and cached.manifest["seed"] == 0
    out = tmp_path / "umap.png"
    assert main(["plot", "items", "--root", store.root.uri, "--method", "umap", "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_umap_without_the_extra_is_a_clear_error(store: FeatureStore) -> None:
    if pj.umap_available():
        pytest.skip("umap-learn is installed")
    from featurestore.errors import InvalidQuery

    with pytest.raises(InvalidQuery, match=r"featurestore\[umap\]"):
        pj.compute(store.online("items", 1, 1), "umap")


def test_warm_up_computes_the_newest_maps_and_comparisons(store: FeatureStore) -> None:
    import shutil as sh

    from featurestore.console.web import Console

    items = store.feature_group("items")
    sh.rmtree(pj.projection_dir(items, 3, "pca"), ignore_errors=True)
    assert pj.load_projection(items, 3, "pca") is None
    console = Console(store)
    console.warm()
    assert pj.load_projection(items, 3, "pca") is not None
    assert pj.load_projection(store.feature_group("users"), 1, "pca") is not None
    assert console.recall(console._compared, ("items", 1, 2, 3)) is not None


def test_serve_warms_the_console_in_the_background(store: FeatureStore) -> None:
    items = store.feature_group("items")
    for folder in pj.projection_dir(items, 3, "pca").parent.glob("*"):
        shutil.rmtree(folder)
    app = create_app(store, token=TOKEN, policy=ReloadPolicy(interval=0), warm_console=True)
    console = app.app.state.console
    with ServerThread(app):
        console._warming.join(120)  # started by the server's start-up, not before
        assert not console._warming.is_alive()
    assert pj.load_projection(items, 3, "pca") is not None
    assert console.recall(console._compared, ("items", 1, 2, 3)) is not None
    quiet = create_app(store, token=TOKEN, policy=ReloadPolicy(interval=0))
    with ServerThread(quiet):
        assert quiet.app.state.console._warming is None


def test_a_reload_warms_the_new_commit_in_the_background(store: FeatureStore, tmp_path: Path) -> None:
    """Under ``serve``, a reload that swaps in a new commit has its map computed and its comparison with
    the commit before made by the console's warm-up, without any page being asked for."""
    import time

    shutil.copytree(store.root.uri, tmp_path / "store")
    copy = FeatureStore(tmp_path / "store")
    fg = copy.feature_group("items")
    app = create_app(copy, groups=[("items", 1)], token=TOKEN, policy=ReloadPolicy(interval=0.05),
                     warm_console=True)
    console = app.app.state.console
    with ServerThread(app):
        assert console.warmed(120)  # the warm-up at start
        fg.insert(items_batch([f"k{i}" for i in range(30, 60)], 7, 3))
        deadline = time.monotonic() + 120
        while pj.load_projection(fg, 4, "pca") is None or console.recall(console._compared, ("items", 1, 3, 4)) is None:
            assert time.monotonic() < deadline, "the new commit was not warmed"
            time.sleep(0.05)
        assert app.state.registry.get("items").view.commit == 4
        assert console.warmed(120)
    p = pj.load_projection(fg, 4, "pca")
    assert p is not None and p.manifest["view_rows"] == 450
    copy.close()
