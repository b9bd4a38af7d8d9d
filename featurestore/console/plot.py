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

from featurestore.console.colors import NULL_COLOR, PALETTE, Coloring, color_columns, coloring
from featurestore.console.projection import MAX_POINTS, projection
from featurestore.errors import FeatureStoreError
from featurestore.store import FeatureStore

log = logging.getLogger("featurestore.console")


def plot_group(store: FeatureStore, name: str, version: int | None = None, commit: int | None = None, *,
               out: str | Path | None = None, color: str | None = None, method: str = "pca",
               points: int = MAX_POINTS, size: tuple[float, float] = (6.0, 6.0), dpi: int = 100) -> Path:
    """Write the projector's map of a feature group's commit (default: newest) as a PNG; returns its path
    (default ``<name>_v<version>_c<commit>.png`` in the working folder)."""
    fg = store.feature_group(name, version)
    view = store.online(name, fg.version, commit)
    p = projection(fg, view, method, size=points)
    if color is None:
        color = next((c for c in color_columns(view) if c != fg.spec.event_time), None)
    colors = coloring(view, color, p.rows) if color else None
    path = Path(out) if out is not None else Path(f"{name}_v{fg.version}_c{view.commit}.png")
    title = f"{name} v{fg.version} commit {view.commit}: {len(p):,} of {view.rows:,} rows, {method.upper()}"
    _draw(p.coords, colors, title, path, size, dpi)
    return path


def _draw(coords: np.ndarray, colors: Coloring | None, title: str, path: Path, size: tuple[float, float],
          dpi: int) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg", force=True)
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise FeatureStoreError("featurestore plot needs matplotlib: pip install 'featurestore[plot]'") from exc
    fig, ax = plt.subplots(figsize=size, dpi=dpi)
    try:
        kw: dict[str, Any] = {"s": 3 if len(coords) > 2000 else 8, "linewidths": 0, "alpha": 0.8}
        if colors is not None and colors.kind == "categorical":
            _categories(ax, coords, colors, kw)
        elif colors is not None and np.isfinite(colors.values).any():
            _ramp(fig, ax, coords, colors, kw)
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


def _ramp(fig: Any, ax: Any, coords: np.ndarray, colors: Coloring, kw: dict[str, Any]) -> None:
    """A numeric column: viridis from its 2nd to 98th percentile, a log scale for heavy-tailed counts."""
    values, label = colors.values, colors.column
    lo, hi = np.nanpercentile(values, [2, 98])
    if colors.log:  # counts: a log scale shows more than one dark blob
        from matplotlib.colors import LogNorm

        kw["norm"] = LogNorm(vmin=max(lo, 1.0), vmax=max(hi, 2.0))
        label = f"{label} (log scale)"
    else:
        kw.update(vmin=lo, vmax=hi)
    sc = ax.scatter(coords[:, 0], coords[:, 1], c=values, cmap="viridis", **kw)
    fig.colorbar(sc, ax=ax, shrink=0.8, label=label)


def _categories(ax: Any, coords: np.ndarray, colors: Coloring, kw: dict[str, Any]) -> None:
    """A categorical column: one colour per category (the console's palette) and a legend."""
    groups = [(-1, "(none)", NULL_COLOR)] + [(i, f"{label} ({n:,})", PALETTE[i % len(PALETTE)])
                                            for i, (label, n) in enumerate(zip(colors.labels, colors.counts))]
    for code, label, colour in groups:
        at = colors.values == code
        if at.any():
            ax.scatter(coords[at, 0], coords[at, 1], color=colour, label=label, **kw)
    ax.legend(title=colors.column, fontsize=7, title_fontsize=8, markerscale=3, loc="best", framealpha=0.8)
