"""Feature references resolved against the catalog and the spine: one checked
:class:`~featurestore.engine.pit_sql.JoinGroup` per feature group (its columns, the spine columns it
joins on, the commit and files it reads, its ttl), and the join caches attached where they exist."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from featurestore.catalog import Catalog
from featurestore.engine.pit_sql import JoinGroup, _file_layout
from featurestore.errors import FeatureGroupNotFound, InvalidData, SpineError, StorageError
from featurestore.schema import FeatureGroupSpec
from featurestore.storage.checksums import verify_objects
from featurestore.storage.objectstore import is_object_store
from featurestore.training.join_cache import has_key32, load_join_cache
from featurestore.training.refs import FeatureRef
from featurestore.training.spine import SpineSource

if TYPE_CHECKING:
    from featurestore.engine.base import Engine
    from featurestore.feature_group import FeatureGroup

Ttl = timedelta | Mapping[str, timedelta | None] | None
_KEY_TYPES = {"string": ("VARCHAR",), "int64": ("BIGINT", "INTEGER", "SMALLINT", "TINYINT", "UBIGINT",
                                                 "UINTEGER", "USMALLINT", "UTINYINT")}


def check_entity_keys(entity_keys: Mapping[str, Any] | None, refs: Sequence[FeatureRef]) -> dict[str, Any]:
    """``entity_keys`` as a dict, naming only feature groups of ``refs`` (by name or name:version)."""
    entity_keys = dict(entity_keys or {})
    unknown_keys = set(entity_keys) - {r.name for r in refs} - {r.key for r in refs if r.version}
    if unknown_keys:
        raise InvalidData(f"entity_keys names feature group(s) not in features: {', '.join(sorted(unknown_keys))}")
    return entity_keys


def join_groups(store: Catalog, refs: Sequence[FeatureRef], source: SpineSource, *, entity_keys: Mapping[str, Any],
                ttl: Ttl, pins: Mapping[str, int], prefix: bool) -> list[JoinGroup]:
    """One join group per feature reference, in order, each checked against the spine and the others."""
    groups: list[JoinGroup] = []
    used = set(source.columns)  # result column names taken so far
    for ref in refs:
        fg = store.feature_group(ref.name, ref.version)
        ref = FeatureRef(ref.name, fg.version, ref.columns)
        spec = fg.spec
        if any(g.key == ref.key for g in groups):
            raise InvalidData(f"{ref.key} is listed twice in features")
        wanted = _selected_columns(spec, ref)
        keys = _join_keys(spec, entity_keys.get(ref.key, entity_keys.get(ref.name)), source)
        output = _output_columns(spec, ref, wanted, prefix, used)
        used.update(output)
        commit, files = _pinned_commit(fg, ref, pins, source.engine)
        try:
            offsets, disjoint = _file_layout(files, spec.event_time, None if fg.root.local else fg.root.fs)
        except StorageError:  # an unreadable footer: a damaged file is named as such (CorruptData)
            if files and is_object_store(files[0]):  # an engine's URIs: the objects themselves
                verify_objects(fg.root, fg.rel, files, fg.spec.key)
            else:
                fg.verify_files(files)
            raise
        groups.append(JoinGroup(ref.key, spec, commit, tuple(files), offsets, disjoint, keys, wanted, output,
                                _ttl_of(ttl, ref)))
    extra = set(pins) - {g.key for g in groups}
    if extra:
        raise FeatureGroupNotFound(f"pins name feature group(s) not in features: {', '.join(sorted(extra))}")
    return groups


def _selected_columns(spec: FeatureGroupSpec, ref: FeatureRef) -> tuple[str, ...]:
    """The columns the reference takes (default: every feature), each a feature or the event time."""
    selectable = [f.name for f in spec.features] + [spec.event_time]
    wanted = ref.columns or tuple(f.name for f in spec.features)
    bad = [c for c in wanted if c not in selectable]
    if bad:
        raise InvalidData(f"{spec.key} has no feature {bad[0]!r} (features: {', '.join(selectable)})")
    return wanted


def _join_keys(spec: FeatureGroupSpec, given: Any, source: SpineSource) -> tuple[str, ...]:
    """The spine columns joined to the group's entity keys, in key order, with types that can match."""
    keys = _spine_keys(spec, given, source.columns)
    for k, sk in zip(spec.entity_keys, keys):
        stype = source.schema[sk]
        if stype not in _KEY_TYPES[k.type] and stype != '"NULL"':  # an all-null column matches nothing
            raise SpineError(f"spine column {sk!r} ({stype}) cannot join {spec.key}'s key {k.name!r} "
                             f"({k.type}): cast it first")
    return keys


def _spine_keys(spec: FeatureGroupSpec, given: Any, spine_cols: Sequence[str]) -> tuple[str, ...]:
    names = spec.key_names
    if given is None:
        missing = [k for k in names if k not in spine_cols]
        if missing:
            raise SpineError(f"the spine has no column {missing[0]!r} to join {spec.key} on; pass "
                             f"entity_keys={{{spec.name!r}: <spine column>}}")
        return tuple(names)
    if isinstance(given, str):
        given = [given]
    if isinstance(given, Mapping):
        unknown = [k for k in given if k not in names]
        if unknown or set(given) != set(names):
            raise InvalidData(f"entity_keys for {spec.key} must map each of its keys {names} to a spine "
                              f"column; got {dict(given)}")
        cols = [given[k] for k in names]
    else:
        cols = list(given)
        if len(cols) != len(names):
            raise InvalidData(f"{spec.key} has {len(names)} entity key(s) {names}; entity_keys gave {cols}")
    for c in cols:
        if c not in spine_cols:
            raise SpineError(f"entity_keys for {spec.key}: the spine has no column {c!r} "
                             f"(columns: {', '.join(spine_cols)})")
    return tuple(cols)


def _output_columns(spec: FeatureGroupSpec, ref: FeatureRef, wanted: tuple[str, ...], prefix: bool,
                    used: set[str]) -> tuple[str, ...]:
    """The result's names of the selected columns (``<group>__<column>`` with ``prefix``), none taken."""
    output = tuple(f"{spec.name}__{c}" if prefix else c for c in wanted)
    clash = [o for o in output if o in used]
    if clash:
        raise InvalidData(f"column {clash[0]!r} from {ref.key} clashes with another column; "
                          "use prefix=True or select other columns")
    return output


def _pinned_commit(fg: FeatureGroup, ref: FeatureRef, pins: Mapping[str, int], engine: Engine
                   ) -> tuple[int, list[str]]:
    """The commit to read and its files (as ``engine`` reads them): the pinned one, or the newest when
    nothing is pinned."""
    if ref.key in pins:
        commit = pins[ref.key]
        if isinstance(commit, bool) or not isinstance(commit, int):
            raise InvalidData(f"pins[{ref.key!r}] must be a commit number (an int); got {commit!r}")
        return fg.engine_files(engine, commit)  # checked while the join runs (TrainingSet), or by the engine
    if pins:
        raise InvalidData(f"pins has no commit for {ref.key} (pins: {dict(pins)})")
    return fg.engine_files(engine, None)


def _ttl_of(ttl: Ttl, ref: FeatureRef) -> timedelta | None:
    value = ttl.get(ref.name, ttl.get(ref.key)) if isinstance(ttl, Mapping) else ttl
    if value is not None and (not isinstance(value, timedelta) or value < timedelta(0)):
        raise InvalidData(f"ttl for {ref.key} must be a non-negative timedelta; got {value!r}")
    return value


def attach_join_caches(store: Catalog, groups: list[JoinGroup]
                       ) -> tuple[list[JoinGroup], dict[str, pa.Table], list[JoinGroup]]:
    """The groups reading a join cache where one exists (local stores with join caches on), the caches by
    placeholder (``"{cache<i>}"``), and the groups with files but no cache yet (built once the set is out)."""
    groups = list(groups)
    caches: dict[str, pa.Table] = {}
    uncached: list[JoinGroup] = []
    if not store.join_caches:
        return groups, caches, uncached
    for i, g in enumerate(groups):
        table = load_join_cache(store, g)
        if table is not None:
            groups[i] = replace(g, cache=f"{{cache{i}}}", key32=has_key32(table))
            caches[f"{{cache{i}}}"] = table
        elif g.files:
            uncached.append(g)
    return groups, caches, uncached
