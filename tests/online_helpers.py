"""Helpers for the online-serving tests: specs with chosen keys, metric and index, seeded batches and a
plain reference (latest row per key, brute-force top-k) to compare answers with."""

from __future__ import annotations

import socket
import threading
import time
from datetime import datetime
from typing import Any

import numpy as np
import pyarrow as pa

from featurestore import FeatureGroupSpec
from tests.conftest import T0


def spec(name: str = "items", *, key_type: str = "string", metric: str = "cosine", normalized: bool = False,
         index: str = "flat", params: dict[str, Any] | None = None, dim: int = 8) -> FeatureGroupSpec:
    return FeatureGroupSpec.from_dict({
        "name": name, "version": 1,
        "entity_keys": [{"name": "id", "type": key_type}],
        "features": [
            {"name": "embedding", "type": "vector", "dim": dim, "metric": metric, "normalized": normalized},
            {"name": "n_events", "type": "int64"},
            {"name": "category", "type": "string"},
        ],
        # successive commits here hold unrelated random vectors for the same keys: no drift check
        "expectations": {"vectors": {"embedding": {"drift": False}}},
        "online": {"index": index, "params": params or {}},
    })


def keys_for(n: int, key_type: str, start: int = 0) -> list[Any]:
    if key_type == "int64":
        return list(range(start * 7, (start + n) * 7, 7))
    return [f"k{i}" for i in range(start, start + n)]


def batch(keys: list[Any], *, dim: int = 8, seed: int = 0, event_time: datetime = T0,
          clustered: bool = False) -> pa.Table:
    rng = np.random.default_rng(seed)
    n = len(keys)
    if clustered:
        centres = rng.standard_normal((max(2, n // 100), dim))
        v = centres[rng.integers(0, len(centres), n)] + 0.35 * rng.standard_normal((n, dim))
    else:
        v = rng.standard_normal((n, dim))
    v = v.astype(np.float32)
    return pa.table({
        "id": keys,
        "event_time": pa.array([event_time] * n, pa.timestamp("us", tz="UTC")),
        "embedding": pa.FixedSizeListArray.from_arrays(pa.array(v.ravel()), dim),
        "n_events": pa.array(rng.integers(0, 100, n), pa.int64()),
        "category": pa.array(rng.choice(["a", "b", "c", "d"], n)),
    })


def reference_latest(tables: list[pa.Table]) -> dict[Any, dict[str, Any]]:
    """Newest row per key over commits in order (greatest event_time; a later commit wins a tie)."""
    out: dict[Any, dict[str, Any]] = {}
    for t in tables:
        for row in t.to_pylist():
            old = out.get(row["id"])
            if old is None or row["event_time"] >= old["event_time"]:
                out[row["id"]] = row
    return out


def brute_topk(rows: dict[Any, dict[str, Any]], q: np.ndarray, k: int, metric: str,
               keep: Any = lambda _r: True) -> list[tuple[Any, float]]:
    """Plain top-k by score (higher is better), as a list of (key, score)."""
    scored = []
    for key, r in rows.items():
        if not keep(r):
            continue
        x = np.asarray(r["embedding"], np.float64)
        qq = np.asarray(q, np.float64)
        if metric == "cosine":
            s = float(x @ qq / (np.linalg.norm(x) * np.linalg.norm(qq)))
        elif metric == "dot":
            s = float(x @ qq)
        else:
            s = -float(np.linalg.norm(x - qq))
        scored.append((key, s))
    scored.sort(key=lambda t: -t[1])
    return scored[:k]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerThread:
    """A real uvicorn server on 127.0.0.1 on a free port, in a thread of the test process; the service's app
    (``create_app``) runs as ``featurestore serve`` runs it (``server_config``: lookups answered in the
    HTTP protocol), any other app, or any app with ``plain=True``, under plain uvicorn."""

    def __init__(self, app: Any, *, plain: bool = False):
        import uvicorn

        from featurestore.server.app import LookupFastPath, server_config

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = server_config(app, port=self.port, limits=app.limits, log_level="warning") \
            if isinstance(app, LookupFastPath) and not plain else \
            uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", access_log=False)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(30)
