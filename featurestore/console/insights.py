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

from featurestore.console.commits import CommitData
from featurestore.console.projection import one_thread, searched
from featurestore.errors import FeatureStoreError, InvalidQuery
from featurestore.feature_group import Commit, FeatureGroup
from featurestore.online.build import list_views, read_manifest, view_path
from featurestore.online.index import exact_topk
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
    overlap_sample: int  # shared keys whose neighbourhoods are compared
    overlap_at_10: float | None
    moved: list[Moved] = field(default_factory=list)
    overlap_pool: int = 0  # the shared keys their neighbours are searched among (all of them when small)
    changed_sampled: int | None = None  # None: every shared key's vector compared; else the sample's size

    @property
    def mean_shift(self) -> np.ndarray:
        return self.mean_b - self.mean_a

    @property
    def std_shift(self) -> np.ndarray:
        return self.std_b - self.std_a


def shared_rows(a: CommitData, b: CommitData) -> tuple[np.ndarray, np.ndarray]:
    """Rows of ``a`` and of ``b`` holding the same keys (both are sorted by key)."""
    if a.keys.dtype.kind != b.keys.dtype.kind:
        raise InvalidQuery(f"commits {a.commit} and {b.commit} have different key types")
    return matching(a.keys, b.keys)


def matching(ka: np.ndarray, kb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Positions in sorted unique ``ka`` and in sorted unique ``kb`` of the keys both hold, in key order."""
    if not len(ka) or not len(kb):
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    pos = np.searchsorted(ka, kb)
    pos[pos >= len(ka)] = 0
    hit = ka[pos] == kb
    return pos[hit].astype(np.int64), np.flatnonzero(hit).astype(np.int64)


def _changed(a: CommitData, b: CommitData, ra: np.ndarray, rb: np.ndarray, event_time: str, limit: int,
             rng: np.random.Generator) -> tuple[int, int | None]:
    """Shared keys whose newest row differs: another event time (every key), or, at the same event time,
    other vector bits (a rewrite of the same (key, event time) by a later commit). The bits are compared
    for every such key up to ``limit`` of them, else for a seeded sample of ``limit`` and scaled up.
    Returns the count and the sample's size (None when every key was compared)."""
    ta = a.columns[event_time].take(pa.array(ra)) if len(ra) else pa.array([], pa.int64())
    tb = b.columns[event_time].take(pa.array(rb)) if len(rb) else pa.array([], pa.int64())
    diff = ~np.asarray(pc.equal(ta, tb).fill_null(False).to_numpy(zero_copy_only=False), bool)
    same = np.flatnonzero(~diff)
    sampled = None
    if len(same) > limit:
        sampled = limit
        same = same[_sample(len(same), limit, rng)]
    # as 64-bit words: half the comparisons of float32 values, and NaN-safe
    ma, mb = _words(a.matrix), _words(b.matrix)
    rewritten = 0
    step = 1 << 16
    for i in range(0, len(same), step):
        part = same[i:i + step]
        rewritten += int(np.any(ma[ra[part]] != mb[rb[part]], axis=1).sum())
    moved_time = int(diff.sum())
    if sampled is None:
        return moved_time + rewritten, None
    return moved_time + round(rewritten * (len(diff) - moved_time) / sampled), sampled


def _words(matrix: np.ndarray) -> np.ndarray:
    """A float32 matrix's rows as 64-bit words (as 32-bit words when a row has an odd number of values)."""
    m = np.asarray(matrix)
    if m.ndim == 2 and m.shape[1] % 2 == 0 and m.flags.c_contiguous:
        return m.view(np.uint64)
    return m.view(np.uint32) if m.flags.c_contiguous else m


def _key_list(view: CommitData, rows: np.ndarray) -> list[Any]:
    return view.keys_at(rows)


def compare(fg: FeatureGroup, a: OnlineView | CommitData, b: OnlineView | CommitData, *, sample: int = 20_000,
            overlap_sample: int = 200, pool: int = 20_000, changed_sample: int = 50_000, k: int = 10, seed: int = 0,
            top: int = 20) -> Comparison:
    """Rows added, changed and removed between two commits' views; per-dimension mean/std of a sample of
    each; drift of the shared keys' vectors (sampled); neighbour overlap@k of ``overlap_sample`` shared
    keys, their neighbours searched exactly among a seeded ``pool`` of shared keys in each commit; the
    keys whose neighbourhoods changed most. Reads the keys and event times of every row, vectors only of
    samples: a 1M-row comparison reads a few MB of vectors, not the whole matrices."""
    da = a if isinstance(a, CommitData) else CommitData.of_view(a)
    db = b if isinstance(b, CommitData) else CommitData.of_view(b)
    with one_thread():
        return _compare(fg, da, db, Sizes(sample, overlap_sample, pool, changed_sample, k, top), seed)


@dataclass(frozen=True)
class Sizes:
    sample: int
    overlap_sample: int
    pool: int
    changed_sample: int
    k: int
    top: int


def _compare(fg: FeatureGroup, a: CommitData, b: CommitData, n: Sizes, seed: int) -> Comparison:
    ra, rb = shared_rows(a, b)
    rng = np.random.default_rng(seed)
    kept = np.zeros(b.rows, bool)
    kept[rb] = True
    only_b = np.flatnonzero(~kept)
    kept = np.zeros(a.rows, bool)
    kept[ra] = True
    only_a = np.flatnonzero(~kept)
    changed, changed_sampled = _changed(a, b, ra, rb, fg.spec.event_time, n.changed_sample, rng)
    sa = _sample(a.rows, n.sample, rng)
    sb = _sample(b.rows, n.sample, rng)
    xa = np.asarray(a.matrix[sa], np.float64)
    xb = np.asarray(b.matrix[sb], np.float64)
    zero = np.zeros(a.dim)
    pick = _sample(len(ra), n.sample, rng)
    drift = _drift(np.asarray(a.matrix[ra[pick]], np.float64), np.asarray(b.matrix[rb[pick]], np.float64))
    pool = _sample(len(ra), n.pool, rng)
    overlap, moved, queries = _overlaps(a, b, ra[pool], rb[pool], n, rng)
    return Comparison(
        a.commit, b.commit, a.rows, b.rows, len(only_b), len(only_a), changed, len(ra) - changed,
        _key_list(b, only_b[:10]), _key_list(a, only_a[:10]), int(max(len(sa), len(sb))),
        xa.mean(axis=0) if len(xa) else zero, xb.mean(axis=0) if len(xb) else zero,
        xa.std(axis=0) if len(xa) else zero, xb.std(axis=0) if len(xb) else zero,
        drift, queries, overlap, moved, len(pool), changed_sampled)


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


def neighbours_within(x: np.ndarray, queries: np.ndarray, k: int, metric: str) -> np.ndarray:
    """The ``k`` nearest rows of ``x`` to each row ``queries`` of ``x`` (itself excluded), exact (faiss's
    brute-force kernels, as a view's exact search), in the view's metric (cosine: ``x`` unit length)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    ids, _ = exact_topk(x, x[queries], min(k + 1, len(x)), "l2" if metric == "l2" else "dot")
    out = np.empty((len(queries), k), np.int64)
    for i, q in enumerate(queries):
        row = ids[i][ids[i] != q]
        out[i] = row[:k]
    return out


def _overlaps(a: CommitData, b: CommitData, ra: np.ndarray, rb: np.ndarray, n: Sizes, rng: np.random.Generator
              ) -> tuple[float | None, list[Moved], int]:
    """Mean neighbour overlap@k of up to ``n.overlap_sample`` of the pooled shared keys ``ra``/``rb``
    (neighbours searched among the pool in each commit, itself excluded), the ``n.top`` keys whose
    neighbourhoods changed most, and how many keys were compared. Exact: no index is involved, so an
    unchanged space scores 1.0 and no approximate-search miss counts as a move."""
    k = n.k
    if len(ra) <= k:
        return None, [], 0
    queries = _sample(len(ra), n.overlap_sample, rng)
    na = neighbours_within(searched(a, ra), queries, k, a.metric)
    nb = neighbours_within(searched(b, rb), queries, k, b.metric)
    overlaps = np.array([len(np.intersect1d(x, y, assume_unique=True)) / k for x, y in zip(na, nb)])
    qa, qb = np.asarray(a.matrix[ra[queries]]), np.asarray(b.matrix[rb[queries]])
    cos = np.sum(qa * qb, axis=1) / np.maximum(np.linalg.norm(qa, axis=1) * np.linalg.norm(qb, axis=1), 1e-12)
    order = np.lexsort((cos, overlaps))[: n.top]
    keys = _key_list(a, ra[queries[order]])
    moved = [Moved(key, float(overlaps[i]), float(cos[i])) for key, i in zip(keys, order)]
    return float(overlaps.mean()), moved, len(queries)


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
