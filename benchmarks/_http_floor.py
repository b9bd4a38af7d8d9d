"""The floor of an HTTP lookup on this machine: an ASGI app that does nothing but answer a fixed body of a
one-key lookup's size, under uvicorn with the settings ``featurestore serve`` uses (uvloop, httptools, no
access log). Timed by ``bench_serving.py`` with the same client as the real servers, it shows what is left to
win: the gap between our lookup and this floor is all our code can remove.

    python benchmarks/_http_floor.py PORT
"""

from __future__ import annotations

import sys
from typing import Any

import orjson

# a one-key answer of the benchmark's shape: 64 floats and the head fields
BODY = orjson.dumps({"feature_group": "item_embeddings", "version": 1, "commit": 1, "keys": ["i0000000"],
                     "found": [True], "vectors": [[0.123456789] * 64], "missing": 0})
HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    more = True
    while more:  # read the body, as any server must
        more = (await receive()).get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": BODY})


def main(port: int) -> None:
    import uvicorn

    uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False,
                                  lifespan="off", server_header=False)).run()


if __name__ == "__main__":
    main(int(sys.argv[1]))
