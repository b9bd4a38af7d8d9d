"""Point-in-time-correct training sets: planning (:mod:`.plan`, over the spine (:mod:`.spine`) and the
feature references (:mod:`.refs`) resolved to join groups (:mod:`.groups`)), the vector cache
(:mod:`.vectors`), the join cache (:mod:`.join_cache`), saved training sets (:mod:`.saved`) and the
caches as a whole (:mod:`.caches`). The public entry is :meth:`featurestore.FeatureStore.training_set`.

Semantics: each spine row (entity keys, a label time, labels) gets, per feature group, the row of its
key with the greatest ``event_time <=`` the label time (within ``ttl`` when set). Nothing later ever
leaks in; keys with no such row get nulls; every spine row is kept, in order.
"""

from featurestore.training.caches import CacheUsage, cache_usage, install_training_hooks, prune_cache
from featurestore.training.plan import FeatureRef, TrainingSet, plan
from featurestore.training.saved import NAME as TRAINING_SET_NAME
from featurestore.training.saved import SavedTrainingSet, list_training_sets
from featurestore.training.saved import load as load_training_set
from featurestore.training.saved import save as save_training_set
from featurestore.training.writer import flush_cache_writes

__all__ = [
    "TRAINING_SET_NAME",
    "CacheUsage",
    "FeatureRef",
    "SavedTrainingSet",
    "TrainingSet",
    "cache_usage",
    "flush_cache_writes",
    "install_training_hooks",
    "list_training_sets",
    "load_training_set",
    "plan",
    "prune_cache",
    "save_training_set",
]
