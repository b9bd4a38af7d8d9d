"""Online serving: materialised views of a commit's latest rows, point lookups and similarity search.

``FeatureStore.online(name, version)`` is the entry point; see :mod:`featurestore.online.view`.
faiss is imported only when an approximate index is built or opened.
"""

from featurestore.online.build import materialize, view_path
from featurestore.online.view import Lookup, Neighbors, OnlineView, open_view

__all__ = ["Lookup", "Neighbors", "OnlineView", "materialize", "open_view", "view_path"]
