"""Feature-group specs: ``schemas/<name>.v<version>.yaml`` parsed into frozen dataclasses.

A spec is data. :func:`load_spec` reads one file, :func:`load_specs` a folder; both check every
field and raise :class:`~featurestore.errors.SpecError` naming the file and the field at fault.
:meth:`FeatureGroupSpec.arrow_schema` compiles a spec to the Arrow schema its rows have.

This package is the ground layer: it imports nothing of featurestore but :mod:`featurestore.errors`.
Its modules import one way only: ``load`` -> ``spec`` | ``service``; ``spec`` -> ``expectations`` -> ``columns``.

- :mod:`~featurestore.schema.columns`: entity keys and features, and their Arrow and DuckDB types
- :mod:`~featurestore.schema.expectations`: the ``expectations`` block, checked and defaults filled in
- :mod:`~featurestore.schema.spec`: :class:`FeatureGroupSpec`, parsed from plain data
- :mod:`~featurestore.schema.service`: :class:`ServiceSpec`, a feature service (``schemas/services/*.yaml``)
- :mod:`~featurestore.schema.load`: spec and service files and folders

Example::

    spec = load_spec("schemas/user_embeddings.v1.yaml")
    spec.vector_features[0].dim   # 64
"""

from featurestore.schema.columns import (
    SCALAR_TYPES,
    TIMESTAMP,
    EntityKey,
    Feature,
    FeatureType,
    KeyType,
    Metric,
    ScalarType,
)
from featurestore.schema.load import load_service, load_services, load_spec, load_specs
from featurestore.schema.service import NearestStep, ServicePart, ServiceSpec
from featurestore.schema.spec import FeatureGroupSpec, IndexKind, OnlineSpec, Policy

__all__ = [
    "SCALAR_TYPES",
    "TIMESTAMP",
    "EntityKey",
    "Feature",
    "FeatureGroupSpec",
    "FeatureType",
    "IndexKind",
    "KeyType",
    "Metric",
    "NearestStep",
    "OnlineSpec",
    "Policy",
    "ScalarType",
    "ServicePart",
    "ServiceSpec",
    "load_service",
    "load_services",
    "load_spec",
    "load_specs",
]
