"""The projector's map as a PNG (matplotlib, imported only here): ``featurestore plot NAME``.

Example::

    from featurestore.console.plot import plot_group
    path = plot_group(store, "item_embeddings", out="items.png", color="n_events")
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from featurestore.console.projection import MAX_POINTS, projection
from featurestore.errors import FeatureStoreError, InvalidQuery
from featurestore.online.view import OnlineView
from featurestore.store import FeatureStore

log = logging.getLogger("featurestore.console")


def numeric_columns(view: OnlineView) -> list[str]:
    """The view's scalar columns a map can be coloured by (numbers and times)."""
    import pyarrow as pa

    out = []
    for f in view.columns.schema:
        if f.name in view.key_names:
            continue
        if pa.types.is_integer(f.type) or pa.types.is_floating(f.type) or pa.types.is_timestamp(f.type):
            out.append(f.name)
    return out


def color_values(view: OnlineView, column: str, rows: np.ndarray) -> np.ndarray:
    """``column`` at ``rows`` as float64 (times as seconds since the epoch; NaN where null)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if column not in numeric_columns(view):
        raise InvalidQuery(f"{view.name} has no numeric column {column!r} to colour by; "
                           f"columns: {', '.join(numeric_columns(view)) or 'none'}")
    col = view.columns[column].take(pa.array(rows, pa.int64()))
    if pa.types.is_timestamp(col.type):
        col = pc.divide(col.cast(pa.int64()), 1_000_000 if col.type.unit == "us" else 1)
    return np.asarray(col.cast(pa.float64()).to_numpy(zero_copy_only=False), dtype=np.float64)


def heavy_tailed(values: np.ndarray) -> bool:
    """Non-negative values whose 98th percentile is over 10x their median (counts): coloured on a log
    scale (the console's map does the same)."""
    finite = values[np.isfinite(values)]
    if not len(finite) or finite.min() < 0:
        return False
    return bool(np.percentile(finite, 98) > 10 * max(float(np.median(finite)), 1.0))


def plot_group(store: FeatureStore, name: str, version: int | None = None, commit: int | None = None, *,
               out: str | Path | None = None, color: str | None = None, method: str = "pca",
               points: int = MAX_POINTS, size: tuple[float, float] = (6.0, 6.0), dpi: int = 100) -> Path:
    """Write the projector's map of a feature group's commit (default: newest) as a PNG; returns its path
    (default ``<name>_v<version>_c<commit>.png`` in the working folder)."""
    fg = store.feature_group(name, version)
    view = store.online(name, fg.version, commit)
    p = projection(fg, view, method, size=points)
    if color is None:
        color = next((c for c in numeric_columns(view) if c != fg.spec.event_time), None)
    values = color_values(view, color, p.rows) if color else None
    path = Path(out) if out is not None else Path(f"{name}_v{fg.version}_c{view.commit}.png")
    title = f"{name} v{fg.version} commit {view.commit}: {len(p):,} of {view.rows:,} rows, {method.upper()}"
    _draw(p.coords, values, color, title, path, size, dpi)
    return path


def _draw(coords: np.ndarray, values: np.ndarray | None, label: str | None, title: str, path: Path,
          size: tuple[float, float], dpi: int) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg", force=True)
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise FeatureStoreError("featurestore plot needs matplotlib: pip install 'featurestore[plot]'") from exc
    fig, ax = plt.subplots(figsize=size, dpi=dpi)
    try:
        kw: dict[str, Any] = {"s": 3 if len(coords) > 2000 else 8, "linewidths": 0, "alpha": 0.8}
        if values is not None and np.isfinite(values).any():
            lo, hi = np.nanpercentile(values, [2, 98])
            if heavy_tailed(values):  # counts: a log scale shows more than one dark blob
                from matplotlib.colors import LogNorm

                kw["norm"] = LogNorm(vmin=max(lo, 1.0), vmax=max(hi, 2.0))
                label = f"{label} (log scale)"
            else:
                kw.update(vmin=lo, vmax=hi)
            sc = ax.scatter(coords[:, 0], coords[:, 1], c=values, cmap="viridis", **kw)
            fig.colorbar(sc, ax=ax, shrink=0.8, label=label)
        else:
            ax.scatter(coords[:, 0], coords[:, 1], color="#3060c0", **kw)
        ax.set_title(title, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, format="png")
    except OSError as exc:
        raise FeatureStoreError(f"cannot write {path}: {exc}") from exc
    finally:
        plt.close(fig)
