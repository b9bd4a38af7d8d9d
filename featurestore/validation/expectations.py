"""The ``expectations`` block of a spec, as the validation package uses it.

The block is spec data, so it is parsed where specs are: :mod:`featurestore.schema.expectations`.
This module re-exports its names for the validation package.
"""

from featurestore.schema.expectations import (
    Bounds,
    Collapse,
    ColumnRule,
    Coverage,
    CoverageOf,
    DeclaredColumns,
    Drift,
    Expectations,
    NormDistribution,
    VectorRules,
    check_expectations,
    parse_expectations,
)

__all__ = [
    "Bounds",
    "Collapse",
    "ColumnRule",
    "Coverage",
    "CoverageOf",
    "DeclaredColumns",
    "Drift",
    "Expectations",
    "NormDistribution",
    "VectorRules",
    "check_expectations",
    "parse_expectations",
]
