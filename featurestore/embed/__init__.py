"""Embedders: item models from event sequences, entity aggregation and alignment across runs.

Example::

    from featurestore.embed import CooccurrenceEmbedder, Aggregation, aggregate, align
    model = CooccurrenceEmbedder(dim=64, seed=0).fit(events)
    model, figures = align(model, previous_model)
    users = aggregate(events, model, Aggregation(half_life=10))
"""

from featurestore.embed.aggregate import Aggregation, EntityVectors, aggregate, event_weights
from featurestore.embed.align import Alignment, align, neighbour_overlap, procrustes
from featurestore.embed.base import Embedder, ItemModel, l2_normalize
from featurestore.embed.cooccurrence import CooccurrenceEmbedder, normalized_counts, ppmi_matrix, svd_embed

__all__ = [
    "Aggregation",
    "Alignment",
    "CooccurrenceEmbedder",
    "Embedder",
    "EntityVectors",
    "ItemModel",
    "aggregate",
    "align",
    "event_weights",
    "l2_normalize",
    "neighbour_overlap",
    "normalized_counts",
    "ppmi_matrix",
    "procrustes",
    "svd_embed",
]
