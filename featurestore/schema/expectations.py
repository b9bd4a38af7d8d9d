"""The ``expectations`` block of a spec: its schema, its defaults, and the parser that checks it.

A spec's ``expectations`` mapping is plain YAML; :func:`parse_expectations` turns it into frozen
dataclasses with every default filled in, raising :class:`~featurestore.errors.SpecError` that names
the spec file and the field (``expectations.vectors.embedding.drift.min_mean_cosine``). Any check can be
switched off with ``false``; within a check, fields left out keep their defaults and ``null`` switches
one threshold off. Example::

    expectations:
      row_count: {min: 1, max: 50000000}
      keys: {not_null: true, unique_per_event_time: true}
      columns:
        n_events: {min: 0, not_null: true}
        kind: {in_set: [a, b]}
      vectors:
        embedding:
          norm: {min: 0.999, max: 1.001}
          norm_distribution: {p01_min: 0.999, p99_max: 1.001, cv_max: 0.01}
          duplicates: {max_share: 0.001}
          collapse: {sample: 2000, min_effective_rank: 8, max_mean_cosine: 0.5}
          drift: {sample: 1000, k: 10, min_mean_cosine: 0.5, min_neighbor_overlap: 0.3}
          coverage: {expected: previous_commit, min_share: 0.9}

This module imports nothing heavy: specs are parsed on ``apply`` and when a store opens. It knows a spec
only as :class:`DeclaredColumns` (the spec module calls it, never the other way round).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, Protocol, get_args

from featurestore.errors import SpecError
from featurestore.schema.columns import Feature

CoverageOf = Literal["previous_commit", "table"]


class DeclaredColumns(Protocol):
    """What the expectations are checked against: the columns a spec declares (a ``FeatureGroupSpec``)."""

    @property
    def features(self) -> tuple[Feature, ...]: ...

    @property
    def vector_features(self) -> list[Feature]: ...

    @property
    def columns(self) -> list[str]: ...

    @property
    def expectations(self) -> Mapping[str, Any]: ...

    @property
    def source(self) -> str | None: ...


@dataclass(frozen=True)
class Bounds:
    """A closed range; ``mostly`` is the share of rows that must fall inside (GE's ``mostly``)."""

    min: float | None = None
    max: float | None = None
    mostly: float = 1.0


@dataclass(frozen=True)
class ColumnRule:
    """Checks on one scalar column: a range (numbers, or ISO times for timestamps), a set, not-null."""

    column: str
    type: str
    min: Any = None
    max: Any = None
    in_set: tuple[Any, ...] | None = None
    not_null: bool = False
    mostly: float = 1.0


@dataclass(frozen=True)
class NormDistribution:
    """Bounds on the distribution of vector norms: 1st and 99th percentile, coefficient of variation."""

    p01_min: float | None = None
    p99_max: float | None = None
    cv_max: float | None = None


@dataclass(frozen=True)
class Collapse:
    """On a sample: effective rank (exp of the entropy of singular values) and mean pairwise cosine."""

    sample: int = 2000
    min_effective_rank: float | None = None
    max_mean_cosine: float | None = 0.9
    min_rows: int = 50  # fewer vectors than this: too few to judge, skipped


@dataclass(frozen=True)
class Drift:
    """Against the previous commit, for shared keys: mean cosine, and neighbour overlap@k on a sample."""

    sample: int = 1000
    k: int = 10
    min_mean_cosine: float | None = 0.5
    min_neighbor_overlap: float | None = 0.2
    min_shared: int = 20  # fewer shared keys than this: too few to judge, skipped


@dataclass(frozen=True)
class Coverage:
    """Share of the expected entities (previous commit's keys, or every key in the table) present."""

    expected: CoverageOf = "previous_commit"
    min_share: float = 0.9


@dataclass(frozen=True)
class VectorRules:
    """Every check on one vector feature, defaults filled in (``None`` = switched off)."""

    feature: str
    dim: int
    metric: str
    finite: bool = True
    norm: Bounds | None = None
    norm_distribution: NormDistribution | None = None
    duplicates_max_share: float | None = 0.01
    collapse: Collapse | None = None
    drift: Drift | None = None
    coverage: Coverage | None = None


@dataclass(frozen=True)
class Expectations:
    """The parsed ``expectations`` block of one spec."""

    row_count: Bounds
    keys_not_null: bool
    keys_unique: bool
    columns: tuple[ColumnRule, ...]
    vectors: tuple[VectorRules, ...]


# ---- parsing --------------------------------------------------------------------------------------
_TOP = {"row_count", "keys", "columns", "vectors"}
_VECTOR = {"dim", "finite", "norm", "norm_distribution", "duplicates", "collapse", "drift", "coverage"}


class _Ctx:
    def __init__(self, path: str | None):
        self.path = path

    def fail(self, field: str, message: str) -> SpecError:
        return SpecError(message, path=self.path, field=field)

    def mapping(self, value: Any, field: str, allowed: set[str]) -> Mapping[str, Any]:
        if not isinstance(value, Mapping):
            raise self.fail(field, f"must be a mapping; got {value!r}")
        extra = sorted(set(value) - allowed)
        if extra:
            raise self.fail(field, f"unknown field(s) {', '.join(map(repr, extra))}; "
                                   f"allowed: {', '.join(sorted(allowed))}")
        return value

    def number(self, value: Any, field: str, *, lo: float | None = None, hi: float | None = None,
               integer: bool = False) -> Any:
        if value is None:
            return None
        ok = isinstance(value, int) if integer else isinstance(value, int | float)
        if isinstance(value, bool) or not ok or (isinstance(value, float) and math.isnan(value)):
            raise self.fail(field, f"must be {'an integer' if integer else 'a number'}; got {value!r}")
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            raise self.fail(field, f"must be in [{lo if lo is not None else '-inf'}, "
                                   f"{hi if hi is not None else 'inf'}]; got {value!r}")
        return value

    def flag(self, value: Any, field: str) -> bool:
        if not isinstance(value, bool):
            raise self.fail(field, f"must be true or false; got {value!r}")
        return value

    def off(self, value: Any) -> bool:
        """``false`` or ``null`` switch a check off."""
        return value is False or value is None


def _bounds(ctx: _Ctx, raw: Any, field: str, default: Bounds | None) -> Bounds | None:
    if raw is True:
        return default
    if ctx.off(raw):
        return None
    m = ctx.mapping(raw, field, {"min", "max", "mostly"})
    lo = ctx.number(m.get("min"), f"{field}.min")
    hi = ctx.number(m.get("max"), f"{field}.max")
    if lo is None and hi is None:
        raise ctx.fail(field, "needs min, max or both")
    if lo is not None and hi is not None and lo > hi:
        raise ctx.fail(field, f"min ({lo}) is greater than max ({hi})")
    mostly = ctx.number(m.get("mostly", 1.0), f"{field}.mostly", lo=0.0, hi=1.0)
    return Bounds(lo, hi, float(mostly))


def _column(ctx: _Ctx, name: str, raw: Any, spec: DeclaredColumns) -> ColumnRule:
    field = f"expectations.columns.{name}"
    scalar = {f.name: f.type for f in spec.features if not f.is_vector}
    if name not in scalar:
        vectors = [f.name for f in spec.vector_features]
        hint = (f" ({name} is a vector: put its checks under expectations.vectors)" if name in vectors else
                " (keys and event time are checked under expectations.keys)" if name in spec.columns else "")
        raise ctx.fail(field, f"names no scalar feature (have: {', '.join(scalar) or 'none'}){hint}")
    ftype = scalar[name]
    m = ctx.mapping(raw, field, {"min", "max", "in_set", "not_null", "mostly"})
    lo, hi = m.get("min"), m.get("max")
    if ftype == "timestamp":
        lo, hi = (_iso(ctx, v, f"{field}.{k}") for v, k in ((lo, "min"), (hi, "max")))
    elif lo is not None or hi is not None:
        if ftype in ("string", "bool"):
            raise ctx.fail(f"{field}.min" if lo is not None else f"{field}.max",
                           f"a {ftype} column takes in_set, not a range")
        lo = ctx.number(lo, f"{field}.min")
        hi = ctx.number(hi, f"{field}.max")
        if lo is not None and hi is not None and lo > hi:
            raise ctx.fail(field, f"min ({lo}) is greater than max ({hi})")
    in_set = m.get("in_set")
    if in_set is not None:
        if not isinstance(in_set, list | tuple) or not in_set:
            raise ctx.fail(f"{field}.in_set", f"must be a non-empty list; got {in_set!r}")
        types: dict[str, tuple[type, ...]] = {"string": (str,), "bool": (bool,), "int32": (int,), "int64": (int,),
                                              "float32": (int, float), "float64": (int, float)}
        want = types.get(ftype)
        if want is None:
            raise ctx.fail(f"{field}.in_set", f"is not supported for {ftype} columns")
        bad = [v for v in in_set if not isinstance(v, want) or (ftype != "bool" and isinstance(v, bool))]
        if bad:
            raise ctx.fail(f"{field}.in_set", f"values must be {ftype}; got {bad[0]!r}")
        in_set = tuple(in_set)
    not_null = ctx.flag(m.get("not_null", False), f"{field}.not_null")
    if lo is None and hi is None and in_set is None and not not_null:
        raise ctx.fail(field, "declares no check (use min, max, in_set or not_null)")
    mostly = ctx.number(m.get("mostly", 1.0), f"{field}.mostly", lo=0.0, hi=1.0)
    return ColumnRule(name, ftype, lo, hi, in_set, not_null, float(mostly))


def _iso(ctx: _Ctx, value: Any, field: str) -> str | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, str):
        try:
            datetime.fromisoformat(value)
        except ValueError:
            pass
        else:
            return value
    raise ctx.fail(field, f"must be an ISO-8601 time; got {value!r}")


def _vector(ctx: _Ctx, feature: Feature, raw: Any) -> VectorRules:
    field = f"expectations.vectors.{feature.name}"
    m = ctx.mapping(raw if raw is not None else {}, field, _VECTOR)
    assert feature.dim is not None
    if "dim" in m and m["dim"] != feature.dim:
        raise ctx.fail(f"{field}.dim", f"must equal the feature's dim ({feature.dim}); got {m['dim']!r}")
    finite = ctx.flag(m.get("finite", True), f"{field}.finite")
    default_norm = Bounds(0.999, 1.001) if feature.normalized else Bounds(1e-6, None)
    norm = _bounds(ctx, m.get("norm", True), f"{field}.norm", default_norm)
    return VectorRules(
        feature=feature.name, dim=feature.dim, metric=feature.metric, finite=finite, norm=norm,
        norm_distribution=_norm_distribution(ctx, m.get("norm_distribution", True), f"{field}.norm_distribution",
                                             normalized=feature.normalized),
        duplicates_max_share=_duplicates(ctx, m.get("duplicates", True), f"{field}.duplicates"),
        collapse=_collapse(ctx, m.get("collapse", True), f"{field}.collapse", dim=feature.dim),
        drift=_drift(ctx, m.get("drift", True), f"{field}.drift"),
        coverage=_coverage(ctx, m.get("coverage"), f"{field}.coverage"),
    )


# Each vector check below is ``true`` (its defaults), ``false``/``null`` (off) or a mapping of fields;
# fields left out keep their defaults.
def _norm_distribution(ctx: _Ctx, raw: Any, field: str, *, normalized: bool) -> NormDistribution | None:
    default = (NormDistribution(p01_min=0.999, p99_max=1.001, cv_max=0.01) if normalized
               else NormDistribution(p01_min=1e-6))
    if ctx.off(raw):
        return None
    if raw is True:
        return default
    d = ctx.mapping(raw, field, {"p01_min", "p99_max", "cv_max"})
    return NormDistribution(ctx.number(d.get("p01_min", default.p01_min), f"{field}.p01_min", lo=0.0),
                            ctx.number(d.get("p99_max", default.p99_max), f"{field}.p99_max", lo=0.0),
                            ctx.number(d.get("cv_max", default.cv_max), f"{field}.cv_max", lo=0.0))


def _duplicates(ctx: _Ctx, raw: Any, field: str) -> float | None:
    """The largest share of rows whose vector repeats another row's."""
    if ctx.off(raw):
        return None
    if raw is True:
        return 0.01
    d = ctx.mapping(raw, field, {"max_share"})
    return float(ctx.number(d.get("max_share", 0.01), f"{field}.max_share", lo=0.0, hi=1.0))


def _collapse(ctx: _Ctx, raw: Any, field: str, *, dim: int) -> Collapse | None:
    default = Collapse(min_effective_rank=max(2.0, dim / 16))
    if ctx.off(raw):
        return None
    if raw is True:
        return default
    d = ctx.mapping(raw, field, {"sample", "min_effective_rank", "max_mean_cosine", "min_rows"})
    return Collapse(
        sample=ctx.number(d.get("sample", 2000), f"{field}.sample", lo=10, integer=True),
        min_effective_rank=ctx.number(d.get("min_effective_rank", default.min_effective_rank),
                                      f"{field}.min_effective_rank", lo=1.0, hi=float(dim)),
        max_mean_cosine=ctx.number(d.get("max_mean_cosine", default.max_mean_cosine),
                                   f"{field}.max_mean_cosine", lo=-1.0, hi=1.0),
        min_rows=ctx.number(d.get("min_rows", 50), f"{field}.min_rows", lo=3, integer=True))


def _drift(ctx: _Ctx, raw: Any, field: str) -> Drift | None:
    if ctx.off(raw):
        return None
    if raw is True:
        return Drift()
    d = ctx.mapping(raw, field, {"sample", "k", "min_mean_cosine", "min_neighbor_overlap", "min_shared"})
    drift = Drift(
        sample=ctx.number(d.get("sample", 1000), f"{field}.sample", lo=10, integer=True),
        k=ctx.number(d.get("k", 10), f"{field}.k", lo=1, hi=1000, integer=True),
        min_mean_cosine=ctx.number(d.get("min_mean_cosine", Drift.min_mean_cosine), f"{field}.min_mean_cosine",
                                   lo=-1.0, hi=1.0),
        min_neighbor_overlap=ctx.number(d.get("min_neighbor_overlap", Drift.min_neighbor_overlap),
                                        f"{field}.min_neighbor_overlap", lo=0.0, hi=1.0),
        min_shared=ctx.number(d.get("min_shared", 20), f"{field}.min_shared", lo=1, integer=True))
    if drift.k >= drift.sample:
        raise ctx.fail(f"{field}.k", f"must be smaller than sample ({drift.sample}); got {drift.k}")
    return drift


def _coverage(ctx: _Ctx, raw: Any, field: str) -> Coverage | None:
    """Off unless declared: many groups write only changed keys."""
    if raw is True:
        return Coverage()
    if ctx.off(raw):
        return None
    d = ctx.mapping(raw, field, {"expected", "min_share"})
    expected = d.get("expected", "previous_commit")
    if expected not in get_args(CoverageOf):
        raise ctx.fail(f"{field}.expected", f"must be one of {', '.join(get_args(CoverageOf))}; got {expected!r}")
    return Coverage(expected, float(ctx.number(d.get("min_share", 0.9), f"{field}.min_share", lo=0.0, hi=1.0)))


def check_expectations(raw: Any, spec: DeclaredColumns, path: str | None = None) -> Expectations:
    """Parse and check ``raw`` (a spec's ``expectations`` block) against ``spec``'s columns."""
    ctx = _Ctx(path if path is not None else spec.source)
    m = ctx.mapping(raw if raw is not None else {}, "expectations", _TOP)
    row_count = _bounds(ctx, m.get("row_count", True), "expectations.row_count", Bounds(1, None)) or Bounds()

    keys = ctx.mapping(m.get("keys") or {}, "expectations.keys", {"not_null", "unique_per_event_time"})
    not_null = ctx.flag(keys.get("not_null", True), "expectations.keys.not_null")
    unique = ctx.flag(keys.get("unique_per_event_time", True), "expectations.keys.unique_per_event_time")

    cols = ctx.mapping(m.get("columns") or {}, "expectations.columns", {str(k) for k in (m.get("columns") or {})})
    # sorted: the registry stores specs with sorted keys, and the suite must not depend on that
    columns = tuple(_column(ctx, str(name), cols[name], spec) for name in sorted(cols, key=str))

    raw_vectors = m.get("vectors") or {}
    names = [f.name for f in spec.vector_features]
    vmap = ctx.mapping(raw_vectors, "expectations.vectors", set(names)) if raw_vectors else {}
    vectors = tuple(_vector(ctx, f, vmap.get(f.name)) for f in spec.vector_features)
    return Expectations(row_count, not_null, unique, columns, vectors)


def parse_expectations(spec: DeclaredColumns) -> Expectations:
    """The checked, defaults-filled expectations of a parsed spec."""
    return check_expectations(spec.expectations, spec)
