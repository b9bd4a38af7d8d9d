"""A local S3-compatible server for the object-storage tests: moto's server mode on 127.0.0.1, in its own
process, started and stopped by a fixture (``S3Server``); run ``python tests/s3_server.py PORT`` to
serve by hand.

moto 5.2.6 honours ``If-None-Match: *`` on PutObject (a second create of the same key is answered 412
Precondition Failed, which delta-rs turns into "version already exists, retry"), but it checks for the
key and then stores the object without holding a lock in between, so two racing requests on a threaded
server could in principle both pass the check. Real S3 makes that check-and-create atomic; so does this
server, by handling one request at a time (a lock around moto's WSGI app).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

ACCESS_KEY = "featurestore-test"
SECRET_KEY = "featurestore-test-secret"
REGION = "us-east-1"


def serve(port: int) -> None:
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
    from werkzeug.serving import make_server

    app = DomainDispatcherApplication(create_backend_app)
    lock = threading.Lock()

    def atomic(environ: dict[str, Any], start_response: Any) -> Any:
        with lock:  # each request whole: a conditional create is checked and stored atomically, as on S3
            return list(app(environ, start_response))

    server = make_server("127.0.0.1", port, atomic, threaded=True, request_handler=MotoRequestHandler)
    print(f"serving on 127.0.0.1:{port}", flush=True)
    server.serve_forever()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class S3Server:
    """moto's S3 on a free port of 127.0.0.1, in a child process; :meth:`env` gives the AWS variables."""

    def __init__(self, *, extra_env: dict[str, str] | None = None):
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, **(extra_env or {})}
        self.proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), str(self.port)], env=env,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{self.endpoint}/moto-api/", timeout=2):
                    return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"the S3 test server did not start on {self.endpoint}") from None
                time.sleep(0.1)

    def env(self) -> dict[str, str]:
        return {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY, "AWS_REGION": REGION,
                "AWS_ENDPOINT_URL": self.endpoint}

    def use_in(self, monkeypatch: Any, **extra: str) -> dict[str, str]:
        """Point this process's AWS variables at the server (the ones that would redirect it removed),
        with ``extra`` variables beside them; the values set."""
        for name in ("AWS_ENDPOINT_URL_S3", "AWS_DEFAULT_REGION", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
            monkeypatch.delenv(name, raising=False)
        values = {**self.env(), **extra}
        for k, v in values.items():
            monkeypatch.setenv(k, v)
        return values

    def create_bucket(self, name: str) -> None:
        import pyarrow.fs as pafs

        fs = pafs.S3FileSystem(access_key=ACCESS_KEY, secret_key=SECRET_KEY, region=REGION,
                               endpoint_override=f"127.0.0.1:{self.port}", scheme="http", allow_bucket_creation=True)
        fs.create_dir(name)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


if __name__ == "__main__":
    serve(int(sys.argv[1]))


def serving(bucket: str) -> Iterator[S3Server]:
    """A started server with ``bucket`` created, stopped after use (the body of a module fixture)."""
    server = S3Server()
    try:
        server.create_bucket(bucket)
        yield server
    finally:
        server.stop()
