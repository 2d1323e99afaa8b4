"""Weight clustering: k-means++ / linear / density / random, per-channel, sparsity-preserving."""

from collabopt.clustering.api import ClusterableLayer, cluster_scope, cluster_weights, strip_clustering
from collabopt.clustering.init import CentroidInitialization, init_centroids
from collabopt.clustering.technique import ClusteringConfig
from collabopt.clustering.wrapper import ClusterWeights, nearest_centroid

__all__ = [
    "CentroidInitialization",
    "ClusterWeights",
    "ClusterableLayer",
    "ClusteringConfig",
    "cluster_scope",
    "cluster_weights",
    "init_centroids",
    "nearest_centroid",
    "strip_clustering",
]
