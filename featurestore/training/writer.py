"""The training caches' writer: one background, non-daemon thread that writes cache files (vector
copies, join caches) behind the work that produced them, so no caller waits for those disk writes. The
interpreter waits for it at exit; :func:`flush_cache_writes` waits explicitly."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

_writer: ThreadPoolExecutor | None = None
_pending: list[Future[None]] = []
_writer_lock = threading.Lock()


def write_behind(save: Callable[..., None], *args: Any) -> None:
    """Queue ``save(*args)`` (writing a cache file) for the single, non-daemon cache writer thread."""
    global _writer
    with _writer_lock:
        if _writer is None:
            _writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="featurestore-cache-writer")
        _pending[:] = [f for f in _pending if not f.done()]
        _pending.append(_writer.submit(save, *args))


def flush_cache_writes() -> None:
    """Wait until every queued cache file (vector copies, join caches) is on disk."""
    with _writer_lock:
        pending = list(_pending)
    for f in pending:
        f.result()
