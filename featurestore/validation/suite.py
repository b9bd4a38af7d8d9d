"""Compile a spec's expectations to a great_expectations suite (as plain data), and the frame it runs on.

The suite is a JSON document in great_expectations 1.x's own format (``name``, ``expectations``: each
``type``, ``kwargs``, ``meta``), built here without importing great_expectations so ``apply`` can store
it beside the table as ``_suite.json``; the adapter (:mod:`featurestore.validation.gx`) loads it into an
``ExpectationSuite``. Vectors are never handed to great_expectations: each vector feature becomes
per-row scalars (``<name>__dim``, ``<name>__norm``, ``<name>__nonfinite``) computed with numpy, and
string keys become integer codes (``<key>__code``), so every expectation runs vectorised on numeric
columns (a row-wise expectation over a list column costs seconds per million rows).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from featurestore.keycodes import key_codes
from featurestore.validation.embedding import single_array
from featurestore.validation.expectations import Expectations

if TYPE_CHECKING:
    import pandas as pd

    from featurestore.schema import FeatureGroupSpec
    from featurestore.validation.embedding import Derived

SUITE_FILE = "_suite.json"
KEY_TIME = "keys_event_time__code"  # frame column: one integer per distinct (keys..., event_time)


def key_column(spec: FeatureGroupSpec, name: str) -> str:
    """The frame column holding key ``name`` (string keys are dictionary codes)."""
    key = next(k for k in spec.entity_keys if k.name == name)
    return f"{name}__code" if key.type == "string" else name


def _exp(kind: str, check: str, column: str | None = None, **kwargs: Any) -> dict[str, Any]:
    kw = {"column": column, **kwargs} if column is not None else kwargs
    return {"type": kind, "kwargs": {k: v for k, v in kw.items() if v is not None},
            "meta": {"check": check, "column": column.split("__")[0] if column else None}}


def suite_document(spec: FeatureGroupSpec, exp: Expectations) -> dict[str, Any]:
    """The great_expectations suite (JSON form) for ``spec``'s expectations."""
    items: list[dict[str, Any]] = []
    rc = exp.row_count
    if rc.min is not None or rc.max is not None:
        items.append(_exp("expect_table_row_count_to_be_between", "rows: row count",
                          min_value=rc.min, max_value=rc.max))
    if exp.keys_not_null:
        for k in spec.key_names:
            items.append(_exp("expect_column_values_to_not_be_null", f"{k}: not null", key_column(spec, k)))
        items.append(_exp("expect_column_values_to_not_be_null", f"{spec.event_time}: not null", spec.event_time))
    if exp.keys_unique:
        # one derived code per (keys..., event_time): a single-column uniqueness check is far cheaper
        # than a compound one over strings and timestamps
        items.append({"type": "expect_column_values_to_be_unique", "kwargs": {"column": KEY_TIME},
                      "meta": {"check": f"keys: ({', '.join(spec.key_names)}) unique per {spec.event_time}",
                               "column": ",".join([*spec.key_names, spec.event_time])}})
    for c in exp.columns:
        mostly = c.mostly if c.mostly < 1 else None
        if c.not_null:
            items.append(_exp("expect_column_values_to_not_be_null", f"{c.column}: not null", c.column))
        if c.min is not None or c.max is not None:
            items.append(_exp("expect_column_values_to_be_between", f"{c.column}: values between", c.column,
                              min_value=c.min, max_value=c.max, mostly=mostly))
        if c.in_set is not None:
            items.append(_exp("expect_column_values_to_be_in_set", f"{c.column}: values in set", c.column,
                              value_set=list(c.in_set), mostly=mostly))
    for v in exp.vectors:
        items.append(_exp("expect_column_values_to_be_between", f"{v.feature}: dimension = {v.dim}",
                          f"{v.feature}__dim", min_value=v.dim, max_value=v.dim))
        if v.finite:
            items.append(_exp("expect_column_values_to_be_between", f"{v.feature}: no NaN/inf",
                              f"{v.feature}__nonfinite", min_value=0, max_value=0))
        if v.norm is not None:
            items.append(_exp("expect_column_values_to_be_between", f"{v.feature}: norm between",
                              f"{v.feature}__norm", min_value=v.norm.min, max_value=v.norm.max,
                              mostly=v.norm.mostly if v.norm.mostly < 1 else None))
    return {"name": f"{spec.name}_v{spec.version}", "expectations": items,
            "meta": {"featurestore_spec": spec.fingerprint()}, "notes": None, "suite_parameters": {}}


def _numeric(col: pa.ChunkedArray) -> np.ndarray:
    """A numpy array GE checks vectorised: int64 or float64 (float64 with NaN when there are nulls)."""
    arr = single_array(col)
    if pa.types.is_integer(arr.type) and not arr.null_count:
        return arr.cast(pa.int64()).to_numpy()
    # integers with nulls: float64 with NaN (beyond 2**53 a range check is exact only to float precision)
    return np.asarray(arr.cast(pa.float64(), safe=False).to_numpy(zero_copy_only=False), dtype=np.float64)


def frame(spec: FeatureGroupSpec, exp: Expectations, table: pa.Table, derived: dict[str, Derived]
          ) -> pd.DataFrame:
    """The pandas frame the suite runs on: only the columns it checks, all numeric or datetime."""
    import pandas as pd  # pandas only here (0.3 s): great_expectations runs on a DataFrame

    cols: dict[str, Any] = {}
    key_time = [*spec.key_names, spec.event_time]
    codes = key_codes(table, key_time) if all(c in table.column_names for c in key_time) else None
    for k in spec.entity_keys:
        if k.name in table.column_names:
            if k.type != "string":
                cols[k.name] = _numeric(table[k.name])
            else:  # dictionary codes (shared with conform's duplicate check): equal strings, equal codes
                kc = codes if codes is not None and k.name in codes.columns else key_codes(table, [k.name])
                cols[key_column(spec, k.name)] = kc.as_float(kc.columns[k.name])
    if spec.event_time in table.column_names:
        cols[spec.event_time] = table[spec.event_time].to_pandas()
    if exp.keys_unique and codes is not None:
        # one code per distinct (keys..., event_time), NaN when any is null
        cols[KEY_TIME] = codes.as_float(codes.combined)
    for c in exp.columns:
        if c.column not in table.column_names:
            continue
        col = table[c.column]
        if c.type == "timestamp" or c.type in ("string", "bool"):
            cols[c.column] = col.to_pandas()
        else:
            cols[c.column] = _numeric(col)
    for name, d in derived.items():
        cols[f"{name}__dim"] = d.dims
        cols[f"{name}__nonfinite"] = d.nonfinite
        cols[f"{name}__norm"] = d.norms
    return pd.DataFrame(cols, copy=False)


def key_frame(spec: FeatureGroupSpec, exp: Expectations, table: pa.Table) -> pd.DataFrame:
    """The smallest frame the table-level expectations (row count, keys unique) run on: one row per row of
    ``table``, holding only the (keys..., event_time) code when uniqueness is checked."""
    import pandas as pd

    key_time = [*spec.key_names, spec.event_time]
    if exp.keys_unique and all(c in table.column_names for c in key_time):
        codes = key_codes(table, key_time)
        return pd.DataFrame({KEY_TIME: codes.as_float(codes.combined)}, copy=False)
    return pd.DataFrame(index=pd.RangeIndex(table.num_rows))
