"""Online serving benchmark: in-process lookups and similarity search on N x 64-d (default 1M), and HTTP
latency on loopback, side by side with Feast's online path (sqlite online store, ``feast serve``) on
the same keys and vectors, in the same run.

    python benchmarks/bench_serving.py            # 1M rows (about 5-8 minutes on 2 cores)
    python benchmarks/bench_serving.py --quick    # 50k rows

A feature service over three groups (users: embedding and n_events; user_stats: two scalars; items:
embedding and n_events) is timed for one entity per call, in-process and over HTTP, against Feast's
``get_online_features`` with a feature service over the same three feature views. Single-group lookups
ask both sides for the embedding only.

Prints a table and writes JSON to benchmarks/results/bench_serving.json. The Feast side runs with the
peers interpreter: $FEATURESTORE_PEERS_PYTHON, else .venv-peers/bin/python (``make peers``); without
one the Feast rows are skipped and say so. Data: clustered unit vectors (2,000 centres plus noise),
like item embeddings; approximate-search queries are rows plus noise, not rows themselves.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from featurestore import FeatureStore  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
T0 = datetime(2026, 11, 1, tzinfo=UTC)
GROUP = "item_embeddings"
USER_STATS = {"name": "user_stats", "version": 1, "entity_keys": [{"name": "user_id", "type": "string"}],
              "features": [{"name": "clicks_7d", "type": "int64"}, {"name": "ctr", "type": "float64"}]}
SERVICE = {"name": "ranking", "groups": [
    {"feature_group": "user_embeddings:1", "features": ["embedding", "n_events"]},
    {"feature_group": "user_stats:1"},
    {"feature_group": "item_embeddings:1", "features": ["embedding", "n_events"]}]}


def peers_python() -> str | None:
    env = os.environ.get("FEATURESTORE_PEERS_PYTHON")
    if env:
        if not Path(env).exists():
            sys.exit(f"FEATURESTORE_PEERS_PYTHON={env} does not exist")
        return env
    local = ROOT / ".venv-peers" / "bin" / "python"
    return str(local) if local.exists() else None


def make_data(n: int, dim: int, seed: int = 0) -> tuple[list[str], np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((2000, dim)).astype(np.float32)
    v = centres[rng.integers(0, len(centres), n)] + 0.6 * rng.standard_normal((n, dim)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    keys = [f"i{i:07d}" for i in range(n)]
    return keys, v, rng.integers(0, 1000, n)


def pct(times: list[float] | np.ndarray, q: float, scale: float = 1e6) -> float:
    return float(np.percentile(np.asarray(times), q) * scale)


def timed(fn: Any, args_list: list[Any], warmup: int = 50) -> list[float]:
    for a in args_list[:warmup]:
        fn(a)
    out = []
    for a in args_list:
        t = time.perf_counter()
        fn(a)
        out.append(time.perf_counter() - t)
    return out


# ---- HTTP ------------------------------------------------------------------------------------------
class Http:
    """A keep-alive HTTP/1.1 client (stdlib), the same for both servers: one request in flight."""

    def __init__(self, port: int, headers: dict[str, str] | None = None):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        self.headers = {"content-type": "application/json", **(headers or {})}

    def post(self, path: str, body: bytes) -> bytes:
        try:
            self.conn.request("POST", path, body=body, headers=self.headers)
            r = self.conn.getresponse()
        except (http.client.RemoteDisconnected, ConnectionError):  # idle past the server's keep-alive
            self.conn.close()
            self.conn.request("POST", path, body=body, headers=self.headers)
            r = self.conn.getresponse()
        data = r.read()
        if r.status != 200:
            raise RuntimeError(f"{path}: {r.status} {data[:200]!r}")
        return data


class Httpx(Http):
    """The same calls through httpx (what most Python users call a service with; its own cost, about
    0.1-0.3 ms a call, is added to both sides alike)."""

    def __init__(self, port: int, headers: dict[str, str] | None = None):
        import httpx

        self.client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)
        self.headers = {"content-type": "application/json", **(headers or {})}

    def post(self, path: str, body: bytes) -> bytes:
        r = self.client.post(path, content=body, headers=self.headers)
        if r.status_code != 200:
            raise RuntimeError(f"{path}: {r.status_code} {r.content[:200]!r}")
        return r.content


def wait_http(port: int, path: str, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            c.request("GET", path)
            if c.getresponse().status < 500:
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"no answer on port {port}")


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_servers(root: Path, peer: str | None, repo: Path | None, procs: list[subprocess.Popen]
                  ) -> tuple[Http, Http | None]:
    """Our server and, with a peers interpreter, ``feast serve`` over the same rows, both started and
    answering before any request is timed."""
    port = free_port()
    ours = subprocess.Popen([sys.executable, "-m", "featurestore", "serve", "--root", str(root), "--port", str(port),
                             "--reload-interval", "0", "--log-level", "warning"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    procs.append(ours)
    fclient = None
    if peer and repo:
        fport = free_port()
        fproc = subprocess.Popen([str(Path(peer).parent / "feast"), "-c", str(repo), "serve", "-p", str(fport),
                                  "--no-access-log", "--max-requests", "0", "--max-requests-jitter", "0"],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(fproc)
        wait_http(fport, "/health", fproc)
        fclient = Http(fport)
    wait_http(port, "/health", ours)
    return Http(port), fclient


Case = tuple[tuple[str, list[bytes]], tuple[str, list[bytes]] | None]  # (ours, Feast's): path and bodies


def http_cases(b1: list[list[str]], b100: list[list[str]], entities: list[dict[str, str]], queries: np.ndarray,
               reps: float) -> dict[str, Case]:
    """The requests of each HTTP figure, for both servers (Feast has no similarity search)."""
    def ours(ks: list[str]) -> bytes:
        return json.dumps({"keys": ks, "features": ["embedding"]}).encode()

    def theirs(ks: list[str]) -> bytes:
        return json.dumps({"features": ["items:embedding"], "entities": {"item_id": ks}}).encode()

    def service(e: dict[str, str]) -> bytes:
        return json.dumps({"feature_service": "ranking", "full_feature_names": True,
                           "entities": {k: [v] for k, v in e.items()}}).encode()

    look, feast = f"/feature-groups/{GROUP}/lookup", "/get-online-features"
    n1, n100, nq, ns = int(2000 * reps), int(300 * reps), int(1000 * reps), int(1000 * reps)
    return {
        "lookup 1 key": ((look, [ours(b) for b in b1[:n1]]), (feast, [theirs(b) for b in b1[:n1]])),
        "lookup 100 keys": ((look, [ours(b) for b in b100[:n100]]), (feast, [theirs(b) for b in b100[:n100]])),
        "nearest k=10": ((f"/feature-groups/{GROUP}/nearest",
                          [json.dumps({"vector": q.tolist(), "k": 10}).encode() for q in queries[:nq]]), None),
        "service 1 entity x 3 groups": (("/services/ranking/lookup",
                                         [json.dumps({"entities": [e]}).encode() for e in entities[:ns]]),
                                        (feast, [service(e) for e in entities[:ns]])),
    }


def http_rounds(ours: Http, feast: Http | None, cases: dict[str, Case], rounds: int) -> list[dict[str, Any]]:
    """Each case in ``rounds`` short rounds, both servers up at once, one request in flight. Within a round
    each server gets its block of requests in turn (which goes first alternates from round to round), so a
    noisy spell slows both alike across rounds; then the same requests again, the two servers called
    alternately request by request (``interleaved``). Blocks are the figure: interleaved, the work a server
    still does after answering (Feast's measurably) lands on the other's next request on 2 cores.
    Every round records the machine's 1-minute load average when it started."""
    out = []
    for r in range(rounds):
        rec: dict[str, Any] = {"load_1min": round(os.getloadavg()[0], 2), "cases": {}}
        for name, (mine, peer) in cases.items():
            index = list(range(len(mine[1])))

            def call(i: int, path: str = mine[0], bodies: list[bytes] = mine[1]) -> bytes:
                return ours.post(path, bodies[i])

            if peer is None or feast is None:
                rec["cases"][name] = {"ours": _http_stats(timed(call, index, warmup=100))}
                continue

            def fcall(i: int, path: str = peer[0], bodies: list[bytes] = peer[1]) -> bytes:
                assert feast is not None
                return feast.post(path, bodies[i])

            a, b = blocks(call, fcall, index, ours_first=r % 2 == 0)
            ia, ib, _, _ = paired(call, fcall, index, warmup=100)
            rec["cases"][name] = {"ours": _http_stats(a), "feast": _http_stats(b),
                                  "interleaved": {"ours": _http_stats(ia), "feast": _http_stats(ib)}}
        out.append(rec)
        print(f"HTTP round {r + 1}/{rounds} (load {rec['load_1min']}): " + "; ".join(
            f"{name} p99 {c['ours']['p99_ms']:.2f} ms" + (f" (Feast {c['feast']['p99_ms']:.2f})" if "feast" in c
                                                          else "")
            for name, c in rec["cases"].items()), flush=True)
    return out


def blocks(ours: Any, theirs: Any, args_list: list[Any], ours_first: bool) -> tuple[list[float], list[float]]:
    """Per-call wall times of two functions over the same arguments, each side's calls in one block
    (warmed up first), ``ours`` first or second."""
    if ours_first:
        return timed(ours, args_list, warmup=100), timed(theirs, args_list, warmup=100)
    b = timed(theirs, args_list, warmup=100)
    return timed(ours, args_list, warmup=100), b


def http_floor(ours: Http, case: Case, rounds: int, procs: list[subprocess.Popen]) -> dict[str, Any]:
    """Our one-key lookup beside the floor (``benchmarks/_http_floor.py``: uvicorn answering a fixed body of
    the same size, doing nothing else), called alternately with the same client: the median over rounds of
    each side's p50 and p99. What separates the two is all our code could remove."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(ROOT / "benchmarks" / "_http_floor.py"), str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    procs.append(proc)
    wait_http(port, "/", proc)
    floor = Http(port)
    (path, bodies), _ = case
    per = []
    for _ in range(rounds):
        a, b, _, _ = paired(lambda i: ours.post(path, bodies[i]), lambda i: floor.post(path, bodies[i]),
                            list(range(len(bodies))), warmup=100)
        per.append({"ours": _http_stats(a), "floor": _http_stats(b)})
    return _medians(per, ("ours", "floor"))


def http_with_httpx(ours: Http, feast: Http | None, case: Case, rounds: int) -> dict[str, Any] | None:
    """The one-key lookup again with httpx clients, in blocks as in :func:`http_rounds`: the median over
    rounds of each side's p50 and p99."""
    (path, bodies), peer = case
    if feast is None or peer is None:
        return None
    mine, theirs = Httpx(ours.conn.port), Httpx(feast.conn.port)
    index = list(range(len(bodies)))
    per = []
    for r in range(rounds):
        a, b = blocks(lambda i: mine.post(path, bodies[i]), lambda i: theirs.post(peer[0], peer[1][i]), index,
                      ours_first=r % 2 == 0)
        per.append({"ours": _http_stats(a), "feast": _http_stats(b)})
    return _medians(per, ("ours", "feast"))


def _medians(per: list[dict[str, Any]], sides: tuple[str, str]) -> dict[str, Any]:
    """Each side's p50 and p99, the median over the rounds ``per``."""
    return {side: {q: float(np.median([r[side][q] for r in per])) for q in ("p50_ms", "p99_ms")}
            for side in sides} | {"rounds": len(per)}


def _http_stats(ts: list[float]) -> dict[str, float]:
    return {"p50_ms": pct(ts, 50, 1e3), "p99_ms": pct(ts, 99, 1e3), "requests": len(ts)}


def http_summary(rounds: list[dict[str, Any]], cases: dict[str, Case]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Per case and side: the median over rounds of p50 and p99, and the round with our lowest p99 (with
    the peer's figures and the load of that same round)."""
    ours: dict[str, Any] = {}
    feast: dict[str, Any] = {}
    for name in cases:
        per = [r["cases"][name] for r in rounds]
        best = min(range(len(per)), key=lambda i: per[i]["ours"]["p99_ms"])
        for side, out in (("ours", ours), ("feast", feast)):
            if side not in per[0]:
                continue
            out[name] = {q: float(np.median([c[side][q] for c in per])) for q in ("p50_ms", "p99_ms")}
            out[name].update(requests=per[0][side]["requests"], rounds=len(per),
                             best_round={**per[best][side], "load_1min": rounds[best]["load_1min"]})
        if "interleaved" in per[0]:
            for side, out in (("ours", ours), ("feast", feast)):
                out[name]["interleaved"] = {q: float(np.median([c["interleaved"][side][q] for c in per]))
                                            for q in ("p50_ms", "p99_ms")}
        if "feast" in per[0]:
            out_ratios = [c["feast"]["p99_ms"] / c["ours"]["p99_ms"] for c in per]
            ours[name]["p99_ratio_median"] = float(np.median(out_ratios))
            ours[name]["p50_ratio_median"] = float(np.median([c["feast"]["p50_ms"] / c["ours"]["p50_ms"] for c in per]))
    return ours, feast


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def index_choice(matrix: np.ndarray, queries: np.ndarray) -> dict[str, Any]:
    """IVF against HNSW on the same rows: build time, tuned breadth, recall@10 and single-query p50."""
    from featurestore.online import index as ix

    q = np.ascontiguousarray(queries / np.linalg.norm(queries, axis=1, keepdims=True))
    exact, _ = ix.exact_topk(matrix, q, 10, "cosine")
    out = {}
    for cfg in (ix.resolve("ivf", {}, len(matrix)), ix.resolve("hnsw", {}, len(matrix))):
        t = time.perf_counter()
        index = ix.build(matrix, "cosine", cfg)
        breadth, _ = ix.tune(index, cfg, matrix, "cosine")
        build = time.perf_counter() - t
        ids, _ = ix.search(index, cfg, breadth, q, 10, "cosine")
        ts = timed(lambda v, index=index, cfg=cfg, breadth=breadth: ix.search(index, cfg, breadth, v[None, :], 10,
                                                                               "cosine"), list(q))
        out[cfg.kind] = {"rows": len(matrix), "build_s": build, "breadth": breadth,
                         "recall@10": ix.recall_at_k(ids, exact), "p50_us": pct(ts, 50)}
    return out


# ---- main ------------------------------------------------------------------------------------------
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="50k rows and fewer repetitions")
    ap.add_argument("--rows", type=int, default=None)
    ap.add_argument("--no-peers", action="store_true", help="skip Feast")
    ap.add_argument("--http-rounds", type=int, default=5,
                    help="short HTTP rounds (both servers alternately in each); the median and best are reported")
    args = ap.parse_args()
    n = args.rows or (50_000 if args.quick else 1_000_000)
    reps = 0.25 if args.quick else 1.0
    dim = 64
    work = Path(tempfile.mkdtemp(prefix="bench_serving_"))
    rng = np.random.default_rng(42)
    res: dict[str, Any] = {"rows": n, "dim": dim, "machine": platform.platform(), "cores": os.cpu_count(),
                           "date": datetime.now(UTC).isoformat(timespec="seconds")}
    procs: list[subprocess.Popen] = []
    try:
        keys, vectors, n_events = make_data(n, dim)
        store = FeatureStore(work / "store")
        store.apply(ROOT / "schemas" / "item_embeddings.v1.yaml")
        table = pa.table({
            "item_id": keys, "event_time": pa.array([T0] * n, pa.timestamp("us", tz="UTC")),
            "embedding": pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), dim),
            "n_events": pa.array(n_events, pa.int64()),
            "last_event_time": pa.array([T0] * n, pa.timestamp("us", tz="UTC")),
        })
        t = time.perf_counter()
        store.feature_group(GROUP).insert(table)
        res["insert_s"] = time.perf_counter() - t
        t = time.perf_counter()
        view = store.online(GROUP)
        res["materialize_s"] = time.perf_counter() - t
        res["index"] = view.info()["index"]
        t = time.perf_counter()
        view = store.online(GROUP)
        res["reopen_ms"] = (time.perf_counter() - t) * 1e3
        view.warm()
        print(f"{n:,} rows: insert {res['insert_s']:.1f}s, materialise {res['materialize_s']:.1f}s "
              f"({res['index']['kind']}, breadth {res['index']['breadth']}), reopen {res['reopen_ms']:.1f} ms",
              flush=True)

        # in-process lookups
        def batches(size: int, count: int) -> list[list[str]]:
            return [[keys[i] for i in rng.integers(0, n, size)] for _ in range(count)]

        b1, b100, b1000 = batches(1, int(20_000 * reps)), batches(100, int(2000 * reps)), batches(1000, int(500 * reps))
        inproc = {}
        for name, bs in (("get 1 key", b1), ("get 100 keys", b100), ("get 1,000 keys", b1000)):
            ts = timed(lambda b: view.get(b, features=["embedding"]), bs)
            inproc[name] = {"p50_us": pct(ts, 50), "p99_us": pct(ts, 99)}
        res["in_process"] = inproc
        users, entities, frames = service_groups(store, work, keys, n_events, min(n, 100_000), dim, rng,
                                                 int(4000 * reps))
        svc = store.service("ranking")
        ts = timed(lambda e: svc.get([e]), entities)
        res["service"] = {"in_process": {"p50_us": pct(ts, 50), "p99_us": pct(ts, 99), "entities": 1, "groups": 3,
                                         "users": users}}

        # similarity
        nq = int(2000 * reps)
        rows = rng.integers(0, n, nq)
        queries = vectors[rows] + 0.3 * rng.standard_normal((nq, dim)).astype(np.float32) / np.sqrt(dim)
        sim = similarity(view, vectors, queries, nq)
        res["similarity"] = sim
        res["index_choice"] = index_choice(vectors[: min(n, 100_000)], queries[:500])
        print(json.dumps({"in_process": inproc, "similarity": sim}, indent=1), flush=True)

        # Feast: load the same rows into its sqlite online store, time get_online_features
        peer = None if args.no_peers else peers_python()
        feast: dict[str, Any] = {}
        if peer:
            import pandas as pd

            parquet = work / "items.parquet"
            pd.DataFrame({"item_id": keys, "event_time": pd.Timestamp(T0), "embedding": list(vectors),
                          "n_events": n_events}).to_parquet(parquet)
            repo = work / "feast_repo"
            here = Path(__file__).resolve().parent / "_feast_peer.py"
            out = subprocess.run([peer, str(here), "setup", str(repo), str(parquet), *map(str, frames)],
                                 capture_output=True, text=True, check=True)
            feast["load"] = json.loads(out.stdout.strip().splitlines()[-1])
            keys_file = work / "feast_keys.json"
            keys_file.write_text(json.dumps({"get 1 key": b1[: int(4000 * reps)],
                                             "get 100 keys": b100[: int(400 * reps)],
                                             "get 1,000 keys": b1000[: int(60 * reps)]}))
            out = subprocess.run([peer, str(here), "lookup", str(repo), str(keys_file)], capture_output=True,
                                 text=True, check=True)
            feast["in_process"] = json.loads(out.stdout.strip().splitlines()[-1])
            ent_file = work / "feast_entities.json"
            ent_file.write_text(json.dumps(entities))
            out = subprocess.run([peer, str(here), "service", str(repo), str(ent_file)], capture_output=True,
                                 text=True, check=True)
            feast["service"] = {"in_process": json.loads(out.stdout.strip().splitlines()[-1])}
            print(f"feast: loaded {n:,} rows in {feast['load']['load_seconds']:.1f}s", flush=True)
        res["feast"] = feast or {"skipped": "no peers interpreter (set FEATURESTORE_PEERS_PYTHON or make peers)"}

        # HTTP on loopback: both servers up at once, one request in flight (blocks, then interleaved)
        clients = start_servers(work / "store", peer, repo if peer else None, procs)
        cases = http_cases(b1, b100, entities, queries, reps)
        rounds = http_rounds(*clients, cases, args.http_rounds)
        res["http"], fhttp = http_summary(rounds, cases)
        res["http_rounds"] = rounds
        res["http_httpx"] = http_with_httpx(*clients, cases["lookup 1 key"], args.http_rounds)
        res["http_floor"] = http_floor(clients[0], cases["lookup 1 key"], args.http_rounds, procs)
        if peer:
            feast["http"] = fhttp
        print_table(res)
        RESULTS.mkdir(parents=True, exist_ok=True)
        out_file = RESULTS / ("bench_serving_quick.json" if args.quick else "bench_serving.json")
        out_file.write_text(json.dumps(res, indent=2, default=str))
        print(f"\nwrote {out_file}")
    finally:
        for p in procs:
            stop(p)
        shutil.rmtree(work, ignore_errors=True)


def paired(ours: Any, theirs: Any, args_list: list[Any], warmup: int = 50
           ) -> tuple[list[float], list[float], list[float], list[float]]:
    """Per-call wall and CPU times of two functions over the same arguments, called alternately, each
    first on every other argument (a noisy machine slows both alike, and the second call of a pair,
    finding the first's data in the caches, is not always the same side's): (ours wall, theirs wall,
    ours CPU, theirs CPU)."""
    for a in args_list[:warmup]:
        ours(a)
        theirs(a)
    walls: tuple[list[float], list[float]] = ([], [])
    cpus: tuple[list[float], list[float]] = ([], [])
    clock, cpu = time.perf_counter, time.thread_time
    for i, a in enumerate(args_list):
        for side in ((0, 1) if i % 2 else (1, 0)):
            fn = ours if side == 0 else theirs
            c = cpu()
            t = clock()
            fn(a)
            walls[side].append(clock() - t)
            cpus[side].append(cpu() - c)
    return walls[0], walls[1], cpus[0], cpus[1]


def similarity(view: Any, vectors: np.ndarray, queries: np.ndarray, nq: int) -> dict[str, Any]:
    """nearest through the view beside faiss called directly: the view's own index with its breadth
    (approximate), and a flat index over the same matrix (exact); same normalised queries, one thread
    for single queries, faiss's default threads for batches, as the view does."""
    import faiss

    sim: dict[str, Any] = {}
    unit = np.ascontiguousarray(queries / np.linalg.norm(queries, axis=1, keepdims=True), dtype=np.float32)
    flat = faiss.IndexFlatIP(view.dim)
    flat.add(np.ascontiguousarray(view.search_matrix))
    faiss.omp_set_num_threads(1)
    ex, ex_f, ex_c, ex_fc = paired(lambda i: view.nearest(queries[i], k=10, exact=True),
                                   lambda i: flat.search(unit[i:i + 1], 10), list(range(30)), warmup=3)
    sim["exact single"] = {"p50_us": pct(ex, 50), "p99_us": pct(ex, 99), "cpu_p50_us": pct(ex_c, 50)}
    sim["faiss flat single"] = {"p50_us": pct(ex_f, 50), "p99_us": pct(ex_f, 99), "cpu_p50_us": pct(ex_fc, 50)}
    idx = view._index
    if idx is None:  # a small view is searched exactly: nothing approximate to compare
        return sim
    ap, ap_f, ap_c, ap_fc = paired(lambda i: view.nearest(queries[i], k=10), lambda i: idx.search(unit[i:i + 1], 10),
                                   list(range(nq)))
    sim["approx single"] = {"p50_us": pct(ap, 50), "p99_us": pct(ap, 99), "cpu_p50_us": pct(ap_c, 50)}
    sim["faiss direct single"] = {"p50_us": pct(ap_f, 50), "p99_us": pct(ap_f, 99), "cpu_p50_us": pct(ap_fc, 50)}
    ours, theirs = [], []
    for r in range(7):  # whole batches, alternated (each side first every other round)
        for side in ((0, 1) if r % 2 else (1, 0)):
            faiss.omp_set_num_threads(os.cpu_count() or 1)
            t = time.perf_counter()
            if side == 0:
                approx = view.nearest_many(queries, k=10)
            else:
                idx.search(unit, 10)
            (ours if side == 0 else theirs).append(time.perf_counter() - t)
    sim["approx batched qps"] = nq / float(np.median(ours))
    sim["faiss direct batched qps"] = nq / float(np.median(theirs))
    sim["approx batched best qps"] = nq / min(ours)
    sim["faiss direct batched best qps"] = nq / min(theirs)
    exact = []
    for s in range(0, min(nq, 500), 100):
        exact += view.nearest_many(queries[s:s + 100], k=10, exact=True)
    sim["recall@10"] = float(np.mean([len(set(a.keys) & set(e.keys)) / 10 for a, e in zip(approx, exact)]))
    sim["recall_queries"] = len(exact)
    flt = {"n_events": {"lt": 10}}  # about 1% of rows: answered by exact search over the matches
    f_ts = timed(lambda q: view.nearest(q, k=10, filter=flt), list(queries[:200]), warmup=10)
    sim["filtered 1% single"] = {"p50_us": pct(f_ts, 50), "p99_us": pct(f_ts, 99)}
    return sim


def service_groups(store: FeatureStore, work: Path, item_keys: list[str], n_events: np.ndarray, n_users: int,
                   dim: int, rng: np.random.Generator, calls: int) -> tuple[int, list[dict[str, str]], list[Path]]:
    """The two user groups of the feature service and the service itself; the entities to ask for (user
    and item keys drawn at random) and the same rows as Parquet for the Feast side."""
    import pandas as pd

    from featurestore import FeatureGroupSpec
    from featurestore.schema import ServiceSpec

    ukeys, uvec, _ = make_data(n_users, dim, seed=1)
    ukeys = [f"u{k[1:]}" for k in ukeys]
    clicks, ctr = rng.integers(0, 100, n_users), rng.random(n_users)
    ts = pa.array([T0] * n_users, pa.timestamp("us", tz="UTC"))
    store.apply([ROOT / "schemas" / "user_embeddings.v1.yaml", FeatureGroupSpec.from_dict(USER_STATS)])
    store.feature_group("user_embeddings").insert(pa.table({
        "user_id": ukeys, "event_time": ts, "embedding": pa.FixedSizeListArray.from_arrays(pa.array(uvec.ravel()), dim),
        "n_events": pa.array(n_events[:n_users], pa.int64()), "last_event_time": ts}))
    store.feature_group("user_stats").insert(pa.table({"user_id": ukeys, "event_time": ts,
                                                       "clicks_7d": pa.array(clicks, pa.int64()), "ctr": ctr}))
    store.apply([ServiceSpec.from_dict(SERVICE)])
    for name in ("user_embeddings", "user_stats"):
        store.online(name).warm()
    entities = [{"user_id": ukeys[int(u)], "item_id": item_keys[int(i)]}
                for u, i in zip(rng.integers(0, n_users, calls), rng.integers(0, len(item_keys), calls))]
    frames = [work / "users.parquet", work / "user_stats.parquet"]
    pd.DataFrame({"user_id": ukeys, "event_time": pd.Timestamp(T0), "embedding": list(uvec),
                  "n_events": n_events[:n_users]}).to_parquet(frames[0])
    pd.DataFrame({"user_id": ukeys, "event_time": pd.Timestamp(T0), "clicks_7d": clicks, "ctr": ctr}).to_parquet(
        frames[1])
    return n_users, entities, frames


def print_table(res: dict[str, Any]) -> None:
    feast = res.get("feast", {})
    rows: list[tuple[str, str, str, str]] = []

    def ratio(ours: float, theirs: float | None) -> str:
        return f"{theirs / ours:.1f}x" if theirs else "-"

    for name, v in res["in_process"].items():
        f = feast.get("in_process", {}).get(name)
        for q in ("p50", "p99"):
            theirs = f[f"{q}_ms"] * 1e3 if f else None
            rows.append((f"in-process {name} {q}", f"{v[f'{q}_us']:.1f} us",
                         f"{theirs:.1f} us" if theirs else "-", ratio(v[f"{q}_us"], theirs)))
    svc, fsvc = res["service"]["in_process"], feast.get("service", {}).get("in_process")
    for q in ("p50", "p99"):
        theirs = fsvc[f"{q}_ms"] * 1e3 if fsvc else None
        rows.append((f"in-process service 1 entity x 3 groups {q}", f"{svc[f'{q}_us']:.1f} us",
                     f"{theirs:.1f} us" if theirs else "-", ratio(svc[f"{q}_us"], theirs)))
    sim = res["similarity"]
    for name, peer in (("exact single", "faiss flat single"), ("approx single", "faiss direct single")):
        for q in ("p50", "p99", "cpu_p50") if name in sim else ():
            ours, theirs = sim[name][f"{q}_us"], sim[peer][f"{q}_us"]
            label = "CPU per call p50" if q == "cpu_p50" else q
            rows.append((f"nearest k=10 {name} {label} (vs {peer})", f"{ours:.1f} us", f"{theirs:.1f} us",
                         ratio(ours, theirs)))
    if "approx batched qps" in sim:
        rows.append(("nearest k=10 filtered 1% single p50", f"{sim['filtered 1% single']['p50_us']:.0f} us", "-",
                     "-"))
        for label, key in (("median of 7 rounds", "batched"), ("best of 7", "batched best")):
            ours, theirs = sim[f"approx {key} qps"], sim[f"faiss direct {key} qps"]
            rows.append((f"nearest k=10 approx batched, {label} (vs faiss direct)", f"{ours:,.0f} q/s",
                         f"{theirs:,.0f} q/s", f"{ours / theirs:.2f}x"))
    if "recall@10" in sim:
        rows.append(("nearest recall@10 vs exact", f"{sim['recall@10']:.3f}", "-", "-"))
    rows.append(("index build (materialise, incl. read)", f"{res['materialize_s']:.1f} s", "-", "-"))
    for kind, v in res.get("index_choice", {}).items():
        rows.append((f"{kind} on {v['rows']:,} rows: build / recall@10 / p50",
                     f"{v['build_s']:.1f} s / {v['recall@10']:.3f} / {v['p50_us']:.0f} us", "-", "-"))
    rows.append(("reopen a built view", f"{res['reopen_ms']:.1f} ms", "-", "-"))
    for name, v in res["http"].items():
        f = feast.get("http", {}).get(name)
        for q in ("p50", "p99"):
            theirs = f[f"{q}_ms"] if f else None
            r = f"{v[f'{q}_ratio_median']:.1f}x" if f else "-"
            rows.append((f"HTTP {name} {q}, median of {v['rounds']} rounds", f"{v[f'{q}_ms']:.2f} ms",
                         f"{theirs:.2f} ms" if theirs else "-", r))
        if f and "interleaved" in v:
            mine, theirs = v["interleaved"]["p99_ms"], f["interleaved"]["p99_ms"]
            rows.append((f"HTTP {name} p99, interleaved request by request, median of {v['rounds']} rounds",
                         f"{mine:.2f} ms", f"{theirs:.2f} ms", ratio(mine, theirs)))
        best, fbest = v["best_round"], f["best_round"] if f else None
        rows.append((f"HTTP {name} p99, best round (load {best['load_1min']:.1f})", f"{best['p99_ms']:.2f} ms",
                     f"{fbest['p99_ms']:.2f} ms" if fbest else "-", ratio(best["p99_ms"], fbest and fbest["p99_ms"])))
    hx = res.get("http_httpx")
    if hx:
        for q in ("p50", "p99"):
            mine, theirs = hx["ours"][f"{q}_ms"], hx["feast"][f"{q}_ms"]
            rows.append((f"HTTP lookup 1 key {q} with httpx clients, median of {hx['rounds']} rounds",
                         f"{mine:.2f} ms", f"{theirs:.2f} ms", ratio(mine, theirs)))
    fl = res.get("http_floor")
    if fl:
        for q in ("p50", "p99"):
            mine, base = fl["ours"][f"{q}_ms"], fl["floor"][f"{q}_ms"]
            rows.append((f"HTTP lookup 1 key {q} beside the floor (uvicorn answering a fixed body), median of "
                         f"{fl['rounds']} rounds", f"{mine:.2f} ms", f"floor {base:.2f} ms",
                         f"+{(mine - base) * 1e3:.0f} us"))
    print(f"\nserving on {res['rows']:,} x {res['dim']}-d ({res['cores']} cores); peer = Feast 0.67 "
          "(sqlite online store, feast serve); ratio = peer / ours")
    widths = [max(len(r[i]) for r in [*rows, ("figure", "ours", "peer", "ratio")]) for i in range(4)]
    for r in [("figure", "ours", "peer", "ratio"), tuple("-" * w for w in widths), *rows]:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)))
    print("notes: Feast's sqlite vector search does not work as shipped here; nearest is compared with faiss "
          "used directly instead (the view's own index and breadth; a flat index over the same matrix for "
          "exact search), called alternately with ours, each side first every other call; a nearest ratio "
          "under 1.0x means ours is slower. "
          "Service rows: a feature service over users (embedding, "
          f"n_events; {res['service']['in_process']['users']:,} users), user_stats (2 scalars) and items "
          "(embedding, n_events), one entity per call; Feast: get_online_features with a FeatureService over "
          "the same three feature views. HTTP: both servers up at once, one request in flight, the same keep-alive "
          "http.client connection type; in each round each server answers its block of requests in turn (who "
          "goes first alternates), then the same requests called alternately request by request "
          "('interleaved': each server's after-answer work lands on the other's next request); "
          f"{res['http']['lookup 1 key']['requests']:,} one-key requests a round; ratios are medians of the "
          "rounds' ratios; load = the 1-minute load average (2 cores) when the round started.")


if __name__ == "__main__":
    main()
