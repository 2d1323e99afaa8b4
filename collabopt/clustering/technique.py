"""Clustering as a technique: its config (the arguments of cluster_weights) and its registration."""

from __future__ import annotations

import dataclasses

from collabopt.clustering.init import CentroidInitialization, parse_init
from collabopt.clustering.wrapper import ClusterWeights, validate_clustering_args
from collabopt.layers import base_layer, transformable_weight_names
from collabopt.preserve import CLUSTERS, SPARSITY, PreserveWrapper, constraints_on
from collabopt.technique import CLUSTER_STAGE, Technique, TechniqueConfig, register_technique


@dataclasses.dataclass(frozen=True)
class ClusteringConfig(TechniqueConfig):
    """The arguments of :func:`cluster_weights`, as data.

    Attributes:
        number_of_clusters: K, >= 2 (>= 3 with ``preserve_sparsity``).
        cluster_centroids_init: A :class:`CentroidInitialization` or its name.
        preserve_sparsity: Keep every zero the chain inside pins (or, for a
            stripped model, its exact zeros).
        cluster_per_channel: K centroids per output channel.
        cluster_gradient_aggregation: ``"SUM"`` or ``"AVG"``.
    """

    number_of_clusters: int
    cluster_centroids_init: str = CentroidInitialization.KMEANS_PLUS_PLUS
    preserve_sparsity: bool = False
    cluster_per_channel: bool = False
    cluster_gradient_aggregation: str = "SUM"

    def validate(self):
        validate_clustering_args(self.number_of_clusters, self.preserve_sparsity, self.cluster_gradient_aggregation)
        parse_init(self.cluster_centroids_init)

    def inner(self, layer, plan):
        """``layer``, under a PreserveWrapper deriving the zeros that no constraint of its chain pins yet."""
        if not self.preserve_sparsity:
            return layer
        names = transformable_weight_names(base_layer(layer), ClusterWeights.protocol_method)
        missing = [n for n in names if not any(c.zero_mask() is not None for c in constraints_on(layer, n).values())]
        return PreserveWrapper(layer, {n: [SPARSITY.name] for n in missing}) if missing else layer


CLUSTERING = register_technique(
    Technique(
        name="cluster",
        config=ClusteringConfig,
        handler=ClusterWeights,
        stage=CLUSTER_STAGE,
        function="cluster_weights",
        strip="strip_clustering",
        done="clustered",
        records=(CLUSTERS,),
        keeps=(SPARSITY,),
        strip_under="strip_clustering_cqat",
        learning_rate=1e-4,
    )
)
