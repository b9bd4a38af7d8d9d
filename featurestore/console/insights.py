"""What the console shows, computed without a web framework: feature-group summaries, commit histories
with their validation verdicts and alignment figures, comparisons of two commits, saved training sets.

Everything here reads metadata (the Delta log, report and manifest files) or memory-mapped online views,
and samples where a figure would otherwise scan every vector: a page over a 1M-row group stays fast.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from featurestore.console.projection import one_thread
from featurestore.errors import FeatureStoreError, InvalidQuery
from featurestore.feature_group import Commit, FeatureGroup
from featurestore.online.build import list_views, read_manifest, view_path
from featurestore.online.view import OnlineView
from featurestore.schema import FeatureGroupSpec
from featurestore.store import FeatureStore
from featurestore.training import list_training_sets
from featurestore.validation.report import REPORTS_DIR, ValidationReport
from featurestore.validation.report import load as load_report

VerdictKind = Literal["passed", "warned", "failed", "refused", "none"]
#: a function giving the view a server serves for a feature group (None when it serves none)
Served = Callable[[str], OnlineView | None]


@dataclass(frozen=True)
class Verdict:
    """A commit's validation outcome: passed; warned (failed checks, committed under ``policy: warn``);
    failed (committed by another policy); refused (the newest attempt was rejected, nothing committed);
    none (the table's creation, or written without validation)."""

    kind: VerdictKind
    report_id: str | None = None
    failed_checks: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        return {"none": "-"}.get(self.kind, self.kind)


def verdict(commit: Commit) -> Verdict:
    """The verdict recorded in a commit's metadata (no report is read)."""
    status = commit.extra.get("validation_status")
    report_id = commit.extra.get("validation_report")
    if status is None:
        return Verdict("none")
    if status == "passed":
        return Verdict("passed", report_id)
    policy = commit.extra.get("validation_policy", "warn")
    return Verdict("warned" if policy == "warn" else "failed", report_id)


def failed_checks(store: FeatureStore, commit: Commit, v: Verdict) -> Verdict:
    """``v`` with the names of the checks that failed (reads the report of a warned or failed commit)."""
    if v.kind not in ("warned", "failed") or not v.report_id:
        return v
    try:
        report = load_report(store.root, v.report_id, commit.feature_group, commit.version)
    except FeatureStoreError:
        return v
    return Verdict(v.kind, v.report_id, tuple(c.name for c in report.failed))


def last_refusal(store: FeatureStore, fg: FeatureGroup, newest: Commit) -> ValidationReport | None:
    """The newest report of ``fg`` when it is a refused insert made after its newest commit, else None."""
    folder = f"{REPORTS_DIR}/{fg.name}/v{fg.version}"
    ids = sorted(f[: -len(".json")] for f in store.root.listdir(folder) if f.endswith(".json"))
    if not ids or ids[-1] == newest.extra.get("validation_report"):
        return None
    try:
        report = load_report(store.root, ids[-1], fg.name, fg.version)
    except FeatureStoreError:
        return None
    if report.committed or report.success or report.created_at <= newest.timestamp:
        return None
    return report


# ---- the feature-group list ----------------------------------------------------------------------------
@dataclass(frozen=True)
class TableStats:
    rows: int  # rows of the newest commit (every key's history)
    data_bytes: int  # the newest commit's data files
    disk_bytes: int | None  # everything under the table's folder (old files, views), local stores


def table_stats(fg: FeatureGroup) -> TableStats:
    """Row count and sizes from the Delta log's file statistics: no data file is read."""
    actions = pa.table(fg._table().get_add_actions(flatten=True))
    rows = int(pc.sum(actions["num_records"]).as_py() or 0) if actions.num_rows else 0
    size = int(pc.sum(actions["size_bytes"]).as_py() or 0) if actions.num_rows else 0
    return TableStats(rows, size, folder_bytes(fg.uri) if fg.root.local else None)


def folder_bytes(path: str) -> int:
    total = 0
    for base, _, files in os.walk(path):
        for f in files:
            try:
                total += os.path.getsize(os.path.join(base, f))
            except OSError:
                continue
    return total


@dataclass(frozen=True)
class OnlineStatus:
    """The online view of a group: the commit served (or the newest materialised), its index, recall."""

    commit: int | None
    served: bool
    rows: int | None = None
    index: str | None = None
    recall_at_10: float | None = None


def online_status(fg: FeatureGroup, served: Served | None) -> OnlineStatus:
    view = served(fg.name) if served is not None else None
    if view is not None and view.version == fg.version:
        idx = view.manifest.get("index") or {}
        return OnlineStatus(view.commit, True, view.rows, idx.get("kind"), idx.get("recall_at_10"))
    views = list_views(fg)
    if not views:
        return OnlineStatus(None, False)
    try:
        m = read_manifest(view_path(fg, views[-1]))
    except FeatureStoreError:
        return OnlineStatus(views[-1], False)
    idx = m.get("index") or {}
    return OnlineStatus(views[-1], False, m.get("rows"), idx.get("kind"), idx.get("recall_at_10"))


@dataclass(frozen=True)
class GroupSummary:
    spec: FeatureGroupSpec
    versions: list[int]
    newest: Commit
    stats: TableStats
    verdict: Verdict
    refused: ValidationReport | None
    online: OnlineStatus

    @property
    def status(self) -> VerdictKind:
        return "refused" if self.refused is not None else self.verdict.kind


def summary(store: FeatureStore, name: str, version: int | None = None, served: Served | None = None
            ) -> GroupSummary:
    fg = store.feature_group(name, version)
    newest = fg.history()[-1]
    return GroupSummary(fg.spec, store.versions(name), newest, table_stats(fg), verdict(newest),
                        last_refusal(store, fg, newest), online_status(fg, served))


def summaries(store: FeatureStore, served: Served | None = None) -> list[GroupSummary]:
    """One summary per feature group, at its newest version."""
    newest: dict[str, int] = {}
    for spec in store.specs():
        newest[spec.name] = spec.version
    return [summary(store, n, v, served) for n, v in sorted(newest.items())]


# ---- one group's history ------------------------------------------------------------------------------
@dataclass(frozen=True)
class HistoryRow:
    commit: Commit
    verdict: Verdict
    alignment: dict[str, Any] | None
    view: bool  # whether the commit has a materialised view


def history(store: FeatureStore, fg: FeatureGroup) -> list[HistoryRow]:
    """Every commit, newest first, with its verdict (and the failed checks of a warned commit)."""
    views = set(list_views(fg))
    rows = []
    for c in reversed(fg.history()):
        align = c.metadata.get("alignment")
        rows.append(HistoryRow(c, failed_checks(store, c, verdict(c)), align if isinstance(align, dict) else None,
                               c.commit in views))
    return rows


# ---- comparing two commits ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Moved:
    key: Any
    overlap: float  # neighbour overlap@10, old vs new
    cosine: float  # cosine of the key's old and new vector


@dataclass(frozen=True)
class Comparison:
    """Commit ``a`` (older) against commit ``b``, over the newest row per key of each (what is served)."""

    a: int
    b: int
    rows_a: int
    rows_b: int
    added: int
    removed: int
    changed: int
    unchanged: int
    added_examples: list[Any]
    removed_examples: list[Any]
    sample: int  # rows per commit behind the per-dimension figures
    mean_a: np.ndarray
    mean_b: np.ndarray
    std_a: np.ndarray
    std_b: np.ndarray
    drift: dict[str, float | int | None]
    overlap_sample: int
    overlap_at_10: float | None
    moved: list[Moved] = field(default_factory=list)

    @property
    def mean_shift(self) -> np.ndarray:
        return self.mean_b - self.mean_a

    @property
    def std_shift(self) -> np.ndarray:
        return self.std_b - self.std_a


def shared_rows(a: OnlineView, b: OnlineView) -> tuple[np.ndarray, np.ndarray]:
    """Rows of ``a`` and of ``b`` holding the same keys (both views are sorted by key)."""
    if a.keys.keys.dtype.kind != b.keys.keys.dtype.kind:
        raise InvalidQuery(f"commits {a.commit} and {b.commit} have different key types")
    return matching(a.keys.keys, b.keys.keys)


def matching(ka: np.ndarray, kb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Positions in sorted unique ``ka`` and in sorted unique ``kb`` of the keys both hold, in key order."""
    if not len(ka) or not len(kb):
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    pos = np.searchsorted(ka, kb)
    pos[pos >= len(ka)] = 0
    hit = ka[pos] == kb
    return pos[hit].astype(np.int64), np.flatnonzero(hit).astype(np.int64)


def _changed(a: OnlineView, b: OnlineView, ra: np.ndarray, rb: np.ndarray, event_time: str) -> int:
    """Shared keys whose newest row differs: another event time, or another vector."""
    ta = a.columns[event_time].take(pa.array(ra)) if len(ra) else pa.array([], pa.int64())
    tb = b.columns[event_time].take(pa.array(rb)) if len(rb) else pa.array([], pa.int64())
    diff = ~np.asarray(pc.equal(ta, tb).fill_null(False).to_numpy(zero_copy_only=False), bool)
    same = np.flatnonzero(~diff)
    # same event time: compare the vectors' bits (a rewrite of the same (key, event time) by a later
    # commit), as 64-bit words: half the comparisons of float32 values, and NaN-safe
    ma, mb = _words(a.matrix), _words(b.matrix)
    step = 1 << 16
    for i in range(0, len(same), step):
        part = same[i:i + step]
        diff[part] |= np.any(ma[ra[part]] != mb[rb[part]], axis=1)
    return int(diff.sum())


def _words(matrix: np.ndarray) -> np.ndarray:
    """A float32 matrix's rows as 64-bit words (as 32-bit words when a row has an odd number of values)."""
    m = np.asarray(matrix)
    if m.ndim == 2 and m.shape[1] % 2 == 0 and m.flags.c_contiguous:
        return m.view(np.uint64)
    return m.view(np.uint32) if m.flags.c_contiguous else m


def _key_list(view: OnlineView, rows: np.ndarray) -> list[Any]:
    return view.keys_at(rows)


def compare(fg: FeatureGroup, a: OnlineView, b: OnlineView, *, sample: int = 20_000, overlap_sample: int = 100,
            k: int = 10, seed: int = 0, top: int = 20) -> Comparison:
    """Rows added, changed and removed between two commits' views; per-dimension mean/std of a sample of
    each; drift of the shared keys' vectors (sampled); neighbour overlap@k over a sample of shared keys,
    and the keys whose neighbourhoods changed most."""
    with one_thread():
        return _compare(fg, a, b, sample, overlap_sample, k, seed, top)


def _compare(fg: FeatureGroup, a: OnlineView, b: OnlineView, sample: int, overlap_sample: int, k: int, seed: int,
             top: int) -> Comparison:
    ra, rb = shared_rows(a, b)
    rng = np.random.default_rng(seed)
    only_b = np.setdiff1d(np.arange(b.rows), rb, assume_unique=True)
    only_a = np.setdiff1d(np.arange(a.rows), ra, assume_unique=True)
    changed = _changed(a, b, ra, rb, fg.spec.event_time)
    sa = _sample(a.rows, sample, rng)
    sb = _sample(b.rows, sample, rng)
    xa = np.asarray(a.matrix[sa], np.float64)
    xb = np.asarray(b.matrix[sb], np.float64)
    zero = np.zeros(a.dim)
    pick = _sample(len(ra), sample, rng)
    drift = _drift(np.asarray(a.matrix[ra[pick]], np.float64), np.asarray(b.matrix[rb[pick]], np.float64))
    q = _sample(len(ra), overlap_sample, rng)
    overlap, moved = _overlaps(a, b, ra[q], rb[q], k, top)
    return Comparison(
        a.commit, b.commit, a.rows, b.rows, len(only_b), len(only_a), changed, len(ra) - changed,
        _key_list(b, only_b[:10]), _key_list(a, only_a[:10]), int(max(len(sa), len(sb))),
        xa.mean(axis=0) if len(xa) else zero, xb.mean(axis=0) if len(xb) else zero,
        xa.std(axis=0) if len(xa) else zero, xb.std(axis=0) if len(xb) else zero,
        drift, len(q), overlap, moved)


def _sample(n: int, size: int, rng: np.random.Generator) -> np.ndarray:
    if n <= size:
        return np.arange(n, dtype=np.int64)
    return np.sort(rng.choice(n, size=size, replace=False)).astype(np.int64)


def _drift(x: np.ndarray, y: np.ndarray) -> dict[str, float | int | None]:
    """How the shared keys' vectors moved: cosine of old and new, norms."""
    if not len(x):
        return {"shared_sampled": 0, "mean_cosine": None, "p05_cosine": None, "median_cosine": None,
                "share_below_0_5": None, "mean_norm_a": None, "mean_norm_b": None, "mean_l2_shift": None}
    nx, ny = np.linalg.norm(x, axis=1), np.linalg.norm(y, axis=1)
    cos = np.sum(x * y, axis=1) / np.maximum(nx * ny, 1e-12)
    return {"shared_sampled": len(x), "mean_cosine": float(cos.mean()),
            "p05_cosine": float(np.quantile(cos, 0.05)), "median_cosine": float(np.median(cos)),
            "share_below_0_5": float((cos < 0.5).mean()), "mean_norm_a": float(nx.mean()),
            "mean_norm_b": float(ny.mean()), "mean_l2_shift": float(np.linalg.norm(x - y, axis=1).mean())}


def _overlaps(a: OnlineView, b: OnlineView, ra: np.ndarray, rb: np.ndarray, k: int, top: int
              ) -> tuple[float | None, list[Moved]]:
    """Mean neighbour overlap@k of the sampled shared keys (each against its own commit's rows, itself
    excluded) and the ``top`` keys whose neighbourhoods changed most."""
    if not len(ra) or min(a.rows, b.rows) <= k:
        return None, []
    keys = _key_list(a, ra)
    qa, qb = np.asarray(a.matrix[ra]), np.asarray(b.matrix[rb])
    na = a.nearest_many(qa, k=k + 1)
    nb = b.nearest_many(qb, k=k + 1)
    overlaps = np.zeros(len(ra))
    for i, key in enumerate(keys):
        sa = [x for x in na[i].keys if x != key][:k]
        sb = [x for x in nb[i].keys if x != key][:k]
        overlaps[i] = len(set(sa) & set(sb)) / k
    cos = np.sum(qa * qb, axis=1) / np.maximum(np.linalg.norm(qa, axis=1) * np.linalg.norm(qb, axis=1), 1e-12)
    order = np.lexsort((cos, overlaps))[:top]
    return float(overlaps.mean()), [Moved(keys[i], float(overlaps[i]), float(cos[i])) for i in order]


# ---- training sets -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TrainingSetRow:
    name: str
    version: int
    rows: int
    created: datetime | None
    pins: dict[str, int]
    spine_sha256: str
    spine_rows: int
    data_bytes: int | None
    description: str


def training_sets(store: FeatureStore) -> list[TrainingSetRow]:
    out = []
    for ts in list_training_sets(store.catalog):
        m = ts.manifest
        created = m.get("created")
        out.append(TrainingSetRow(ts.name, ts.version, int(m.get("rows") or 0),
                                  datetime.fromisoformat(created) if created else None, dict(m.get("pins") or {}),
                                  str((m.get("spine") or {}).get("sha256", "")),
                                  int((m.get("spine") or {}).get("rows") or 0),
                                  (m.get("data") or {}).get("bytes"), str(m.get("description") or "")))
    return out
