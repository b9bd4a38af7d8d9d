"""2-D maps of an online view: a seeded sample of up to 20,000 rows projected by PCA (or UMAP when
``umap-learn`` is installed), cached per commit beside the views and checksummed like them.

A projection lives in ``<views>/_projections/c<commit>-<method>/``: ``coords.npy`` (float32, n x 2),
``rows.npy`` (the sampled rows of the view, int64), ``basis.npy`` (PCA only: the mean and the two
components, so another commit can be drawn in the same plane) and ``manifest.json`` (parameters, the
view's key-file checksum it was computed from, the size and CRC-32 of each file). A file that does not
match its checksum raises :class:`~featurestore.errors.CorruptData` from :func:`load_projection`;
:func:`projection` then recomputes it (it is derived data) and logs why. Two commits are compared on one
plane by :func:`pair`: the second commit's vectors of the same keys are rotated onto the first's
(orthogonal Procrustes over the shared keys) and projected with the first commit's basis.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np

from featurestore.console.commits import CommitData, rows_of
from featurestore.embed.align import procrustes
from featurestore.errors import CorruptData, InvalidQuery
from featurestore.feature_group import FeatureGroup
from featurestore.online.build import views_dir
from featurestore.online.integrity import checksums, stored_manifest, verify
from featurestore.online.view import OnlineView
from featurestore.storage import npy

log = logging.getLogger("featurestore.console")

Method = Literal["pca", "umap"]
METHODS: tuple[str, ...] = ("pca", "umap")
MAX_POINTS = 20_000
FORMAT_VERSION = 1
PROJECTIONS_DIR = "_projections"


@dataclass(frozen=True)
class Projection:
    """A 2-D map of a sample of one view's rows."""

    commit: int
    method: str
    rows: np.ndarray  # (n,) int64 rows of the view, sorted
    coords: np.ndarray  # (n, 2) float32
    basis: np.ndarray | None  # (3, dim) float64: mean, first and second component (PCA)
    manifest: dict[str, Any]

    def __len__(self) -> int:
        return len(self.rows)


def umap_available() -> bool:
    """Whether ``umap-learn`` is installed (the ``umap`` extra)."""
    import importlib.util

    return importlib.util.find_spec("umap") is not None


def projection_dir(fg: FeatureGroup, commit: int, method: str) -> Path:
    return views_dir(fg) / PROJECTIONS_DIR / f"c{commit}-{method}"


def sample_rows(n: int, size: int = MAX_POINTS, seed: int = 0) -> np.ndarray:
    """A seeded sample of ``size`` of ``n`` rows (all when fewer), sorted."""
    if n <= size:
        return np.arange(n, dtype=np.int64)
    return np.sort(np.random.default_rng(seed).choice(n, size=size, replace=False)).astype(np.int64)


class Searchable(Protocol):
    """Vectors as a view searches them: an online view, or what a comparison reads of one."""

    @property
    def search_matrix(self) -> np.ndarray: ...

    @property
    def metric(self) -> str: ...


def searched(view: Searchable, rows: np.ndarray) -> np.ndarray:
    """The vectors of ``rows`` as the view compares them (unit length for cosine), float64."""
    x = np.asarray(view.search_matrix[rows], dtype=np.float64)
    if view.metric == "cosine":
        norms = np.linalg.norm(x, axis=1, keepdims=True)
        x = x / np.where(norms == 0, 1.0, norms)
    return x


def pca_basis(x: np.ndarray) -> np.ndarray:
    """Mean and the first two principal components of ``x`` (3, dim), signs fixed for stable pictures."""
    mean = x.mean(axis=0)
    if len(x) < 2:
        comp = np.eye(2, x.shape[1]) if x.shape[1] >= 2 else np.zeros((2, x.shape[1]))
        return np.vstack([mean, comp])
    _, _, vt = np.linalg.svd(x - mean, full_matrices=False)
    comp = np.zeros((2, x.shape[1]))
    comp[: min(2, len(vt))] = vt[:2]
    for c in comp:  # the largest coordinate of each component is positive
        if c[np.argmax(np.abs(c))] < 0:
            c *= -1
    return np.vstack([mean, comp])


def project(x: np.ndarray, basis: np.ndarray) -> np.ndarray:
    return ((x - basis[0]) @ basis[1:].T).astype(np.float32)


def _umap(x: np.ndarray, seed: int) -> np.ndarray:
    """UMAP of ``x`` (rows searched as the view compares them), seeded: the same sample and seed give
    the same map. Single-threaded (a seed makes umap-learn so anyway). The first call in a process
    compiles umap-learn's numba kernels (seconds); maps are cached per commit, so that is paid once."""
    import warnings

    try:
        with warnings.catch_warnings():  # umap-learn warns at import that TensorFlow is absent
            warnings.simplefilter("ignore", ImportWarning)
            import umap  # the ``umap`` extra, imported only here
    except ImportError as exc:
        raise InvalidQuery("method 'umap' needs umap-learn: pip install 'featurestore[umap]'") from exc
    if len(x) < 3:
        return np.zeros((len(x), 2), np.float32)
    reducer = umap.UMAP(n_components=2, n_neighbors=min(15, len(x) - 1), random_state=seed, n_jobs=1,
                        metric="euclidean", init="spectral" if len(x) > 16 else "random")
    try:
        return np.asarray(reducer.fit_transform(x), dtype=np.float32)
    except (ValueError, TypeError) as exc:  # umap-learn's own checks
        raise InvalidQuery(f"UMAP failed on {len(x)} rows: {exc}") from exc


def compute(view: OnlineView, method: str = "pca", *, size: int = MAX_POINTS, seed: int = 0) -> Projection:
    """Project a seeded sample of ``view`` (no cache)."""
    if method not in METHODS:
        raise InvalidQuery(f"unknown projection method {method!r}; use one of {', '.join(METHODS)}")
    t = time.perf_counter()
    rows = sample_rows(view.rows, size, seed)
    x = searched(view, rows)
    with one_thread():
        basis = pca_basis(x) if len(x) else np.zeros((3, view.dim))
        coords = project(x, basis) if method == "pca" else _umap(x, seed)
    manifest = {
        "format_version": FORMAT_VERSION, "feature_group": view.name, "version": view.version,
        "commit": view.commit, "method": method, "seed": seed, "sample": len(rows), "view_rows": view.rows,
        "view_keys_crc32": _keys_crc(view), "seconds": round(time.perf_counter() - t, 3),
        "explained_variance": _explained(x, basis),
    }
    return Projection(view.commit, method, rows, coords, basis if method == "pca" else None, manifest)


def _keys_crc(view: OnlineView) -> str | None:
    return ((view.manifest.get("files") or {}).get("keys.npy") or {}).get("crc32")


def _explained(x: np.ndarray, basis: np.ndarray) -> list[float]:
    if len(x) < 2:
        return [0.0, 0.0]
    total = float(((x - basis[0]) ** 2).sum())
    if total == 0:
        return [0.0, 0.0]
    return [round(float(((project(x, basis[[0, i]]).astype(np.float64)) ** 2).sum()) / total, 4) for i in (1, 2)]


def save_projection(fg: FeatureGroup, p: Projection) -> Path:
    """Write ``p`` with its checksums; published by one rename, so readers see all of it or nothing."""
    target = projection_dir(fg, p.commit, p.method)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".build-{os.getpid()}-", dir=target.parent))
    try:
        np.save(tmp / "coords.npy", p.coords)
        np.save(tmp / "rows.npy", p.rows)
        if p.basis is not None:
            np.save(tmp / "basis.npy", p.basis)
        manifest = {**p.manifest, "files": checksums(tmp)}
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1))
        if target.exists():  # a damaged or stale one: moved aside first, then removed
            old = target.parent / f".old-{uuid.uuid4().hex}"
            os.replace(target, old)
            shutil.rmtree(old, ignore_errors=True)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def load_projection(fg: FeatureGroup, commit: int, method: str) -> Projection | None:
    """The cached projection of ``commit`` (None when there is none); :class:`CorruptData` when a file
    does not match its checksum."""
    folder = projection_dir(fg, commit, method)
    manifest = stored_manifest(folder, "projection")
    if manifest is None:
        return None
    verify(folder, manifest)
    try:
        rows = npy.load(folder / "rows.npy")
        coords = npy.load(folder / "coords.npy")
        basis = npy.load(folder / "basis.npy") if (folder / "basis.npy").exists() else None
    except (OSError, ValueError) as exc:
        raise CorruptData(f"projection at {folder} is unreadable: {exc}") from exc
    if coords.shape != (len(rows), 2):
        raise CorruptData(f"projection at {folder}: {coords.shape} coordinates for {len(rows)} rows")
    return Projection(commit, method, rows, coords, basis, manifest)


def projection(fg: FeatureGroup, view: OnlineView, method: str = "pca", *, size: int = MAX_POINTS,
               seed: int = 0) -> Projection:
    """The projection of ``view``'s commit: from the cache when it matches the view and the parameters,
    else computed and cached."""
    if view.dim == 0:
        raise InvalidQuery(f"{fg.spec.key} has no vector feature to map (its features are scalars)")
    try:
        cached = load_projection(fg, view.commit, method)
    except CorruptData as exc:
        log.warning("recomputing the projection of %s commit %d: %s", fg.spec.key, view.commit, exc)
        cached = None
    if cached is not None and _matches(cached, view, size, seed):
        return cached
    p = compute(view, method, size=size, seed=seed)
    try:
        save_projection(fg, p)
    except OSError as exc:  # a read-only store still gets its map, only not cached
        log.warning("cannot cache the projection of %s commit %d: %s", fg.spec.key, view.commit, exc)
    return p


def _matches(p: Projection, view: OnlineView, size: int, seed: int) -> bool:
    m = p.manifest
    return (m.get("format_version") == FORMAT_VERSION and m.get("view_rows") == view.rows
            and m.get("view_keys_crc32") == _keys_crc(view) and m.get("seed") == seed
            and m.get("sample") == min(size, view.rows))


@dataclass(frozen=True)
class Pair:
    """Two commits on one plane: the first commit's sample, and the same keys in the second commit
    rotated onto the first (Procrustes over the shared keys) and projected with the first's basis."""

    keys: list[Any]
    left: np.ndarray  # (n, 2) the first commit's coordinates
    right: np.ndarray  # (n, 2) the second's, NaN where the key is not in the second commit
    shared: int
    cosine_before: float | None  # mean cosine of shared keys before / after the rotation
    cosine_after: float | None
    moved: np.ndarray  # (n,) distance each key moved on the plane (NaN where not shared)


def mean_cosine(x: np.ndarray, y: np.ndarray) -> float:
    """Mean cosine similarity of matching rows of ``x`` and ``y``."""
    nx, ny = np.linalg.norm(x, axis=1), np.linalg.norm(y, axis=1)
    ok = (nx > 0) & (ny > 0)
    if not ok.any():
        return float("nan")
    return float(np.mean(np.sum(x[ok] * y[ok], axis=1) / (nx[ok] * ny[ok])))


def pair(a: OnlineView, pa_: Projection, b: OnlineView | CommitData) -> Pair:
    """``b`` drawn on ``a``'s plane (see :class:`Pair`); ``pa_`` is ``a``'s PCA projection. ``b`` needs
    only its keys and vectors (:class:`~featurestore.console.commits.CommitData` reads no more)."""
    with one_thread():
        return _pair(a, pa_, b if isinstance(b, CommitData) else CommitData.of_view(b))


_CONTROLLER: list[Any] = []  # threadpoolctl's view of the loaded BLAS libraries, found once


def one_thread() -> Any:
    """Run BLAS single-threaded: these products are small, and a multi-threaded BLAS spins and stalls
    when the machine is busy (as a server's is). The libraries are looked up once (a lookup reads the
    process's memory map: tens of milliseconds in a server)."""
    if not _CONTROLLER:
        from threadpoolctl import ThreadpoolController

        _CONTROLLER.append(ThreadpoolController())
    return _CONTROLLER[0].limit(limits=1, user_api="blas")


def _pair(a: OnlineView, pa_: Projection, b: CommitData) -> Pair:
    if pa_.basis is None:
        raise InvalidQuery("two commits side by side need the PCA projection of the first")
    keys = a.keys_at(pa_.rows)
    if a.keys.keys.dtype.kind != b.keys.dtype.kind:
        raise InvalidQuery(f"commits {a.commit} and {b.commit} have different key types")
    rows_b = rows_of(b.keys, a.keys.keys[pa_.rows])
    found = rows_b >= 0
    right = np.full((len(keys), 2), np.nan, np.float32)
    moved = np.full(len(keys), np.nan, np.float32)
    before = after = None
    if found.any():
        xa = searched(a, pa_.rows[found])
        xb = searched(b, rows_b[found])
        r = procrustes(xb, xa) if found.sum() >= 2 else np.eye(a.dim)
        xr = xb @ r
        before, after = mean_cosine(xa, xb), mean_cosine(xa, xr)
        right[found] = project(xr, pa_.basis)
        moved[found] = np.linalg.norm(right[found] - pa_.coords[found], axis=1)
    return Pair(keys, pa_.coords, right, int(found.sum()), before, after, moved)
