"""great_expectations run batch by batch and merged (validation.gx.merged, what a batched insert uses)
gives exactly the CheckResults of one run on all the rows: counts, percentages, the mostly verdict, the
first unexpected values and row numbers. Random columns with nulls, bounds, mostly and splits."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from featurestore.validation import gx


def _item(kind: str, column: str, **kwargs) -> dict:
    return {"type": kind, "kwargs": {"column": column, **{k: v for k, v in kwargs.items() if v is not None}},
            "meta": {"check": f"{column}: {kind}", "column": column}}


@settings(max_examples=25, deadline=None)
@given(values=st.lists(st.one_of(st.none(), st.integers(-5, 5)), max_size=60),
       cuts=st.lists(st.integers(0, 60), max_size=4),
       low=st.integers(-5, 0), high=st.integers(0, 5),
       mostly=st.sampled_from([None, 0.5, 0.8, 0.95]))
def test_merged_batches_equal_one_run(values, cuts, low, high, mostly):
    gx.load()
    x = np.array([np.nan if v is None else float(v) for v in values], dtype=np.float64)
    document = {"name": "merge_test", "meta": {}, "notes": None, "suite_parameters": {}, "expectations": [
        _item("expect_column_values_to_not_be_null", "x", mostly=mostly),
        _item("expect_column_values_to_be_between", "x", min_value=low, max_value=high, mostly=mostly),
        _item("expect_column_values_to_be_in_set", "x", value_set=[-1, 0, 2, 3], mostly=mostly),
    ]}
    whole = gx.run(document, pd.DataFrame({"x": x}))
    edges = sorted({0, len(x), *[c for c in cuts if c <= len(x)]})
    starts = edges[:-1] or [0]
    pieces = [x[a:b] for a, b in itertools.pairwise(edges)] or [x]
    parts = [gx.outcomes(document, pd.DataFrame({"x": p})) for p in pieces]
    got = [gx.merged(item, [p[k] for p in parts], starts) for k, item in enumerate(document["expectations"])]
    assert [c.to_dict() for c in got] == [c.to_dict() for c in whole]
