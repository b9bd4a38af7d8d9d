"""Reading ``.npy`` files from several threads at once, safely on every supported Python.

numpy parses a ``.npy`` header with :func:`ast.literal_eval`, and CPython 3.11's AST constructor keeps
its recursion depth in state that threads share: two threads parsing at the same moment can fail with
``SystemError: AST constructor recursion depth mismatch`` (python/cpython#106905). The training caches,
online views and the console open ``.npy`` files from thread pools and reload threads, so every read goes
through here: the header is parsed under one process-wide lock, and for :func:`load` the data is then
read outside it (from a memory map), so the lock is held for microseconds.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import IO

import numpy as np

_header = threading.Lock()


def mapped(path: str | Path) -> np.ndarray:
    """A read-only memory map of the array in ``path`` (``np.load(path, mmap_mode="r")``)."""
    with _header:
        return np.load(path, mmap_mode="r")


def load(path: str | Path) -> np.ndarray:
    """The array in ``path``, read into memory (``np.load(path)`` for arrays without objects)."""
    return np.array(mapped(path))


def read_array(f: IO[bytes]) -> np.ndarray:
    """``np.lib.format.read_array(f, allow_pickle=False)`` (a small array in an open file)."""
    with _header:
        return np.lib.format.read_array(f, allow_pickle=False)
