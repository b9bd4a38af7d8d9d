"""``.npy`` files read from many threads at once through ``storage.npy``: every read gives the array written.
The module parses headers under one lock because CPython 3.11 can fail to parse numpy's headers in two
threads at the same moment (``SystemError: AST constructor recursion depth mismatch``), which once failed
a training set whose vector caches load in a thread pool; that race is too rare to provoke on demand here."""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from featurestore.storage import npy


def test_many_threads_read_npy_files_at_once(tmp_path):
    arrays = [np.arange(i * 64, dtype=np.float32).reshape(i, 64) for i in range(8)]
    paths = []
    for i, a in enumerate(arrays):
        np.save(tmp_path / f"a{i}.npy", a)
        paths.append(tmp_path / f"a{i}.npy")
    blobs = [io.BytesIO() for _ in arrays]
    for b, a in zip(blobs, arrays, strict=True):
        np.lib.format.write_array(b, a, allow_pickle=False)

    def read(n: int) -> bool:
        i = n % len(arrays)
        ok = np.array_equal(npy.mapped(paths[i]), arrays[i]) and np.array_equal(npy.load(paths[i]), arrays[i])
        return ok and np.array_equal(npy.read_array(io.BytesIO(blobs[i].getvalue())), arrays[i])

    with ThreadPoolExecutor(max_workers=8) as pool:
        assert all(pool.map(read, range(4000)))
    assert type(npy.load(paths[3])) is np.ndarray  # read into memory, not a map
