"""Clustering as a technique: its config (the arguments of cluster_weights) and its registration."""

from __future__ import annotations

import dataclasses

import numpy as np
from keras import ops

from collabopt.clustering.init import CentroidInitialization, parse_init
from collabopt.clustering.wrapper import ClusterWeights, validate_clustering_args
from collabopt.layers import OptimizationWrapper, base_layer, optimizable_variables, transformable_weight_names
from collabopt.preserve import CLUSTERS, SPARSITY, PreserveWrapper, constraints_on
from collabopt.technique import CLUSTER_STAGE, Technique, TechniqueConfig, register_technique
from collabopt.transform import iter_layers


def _plain_values(layer) -> dict:
    """The clustered weights' values of a built plain ``layer`` by name ({} for a wrapper chain or an unbuilt layer).

    A wrapper chain tells its zeros through its recorded constraints instead;
    a weight that is not a variable (e.g. LoRA's computed kernel) is left to
    the wrapper, which names it.
    """
    if isinstance(layer, OptimizationWrapper) or not layer.built:
        return {}
    try:
        weights = optimizable_variables(layer)
    except ValueError:
        return {}
    names = transformable_weight_names(layer, ClusterWeights.protocol_method)
    return {name: ops.convert_to_numpy(weights[name]) for name in names if name in weights}


def _unpinned_weights(layer) -> list[str]:
    """The clustered weights of ``layer`` on which no constraint of its chain pins zeros."""
    names = transformable_weight_names(base_layer(layer), ClusterWeights.protocol_method)
    return [n for n in names if not any(c.zero_mask() is not None for c in constraints_on(layer, n).values())]


def _holds_pruned_weights(layer) -> bool:
    """Whether a weight of ``layer`` is pruned: its chain pins zeros, or (stripped) it has exact zeros."""
    names = transformable_weight_names(base_layer(layer), ClusterWeights.protocol_method)
    if len(_unpinned_weights(layer)) < len(names):
        return True
    return any(SPARSITY.detect(value, None) is not None for value in _plain_values(layer).values())


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

    def plan(self, model, what):
        """With ``preserve_sparsity``: whether the model holds pruned weights anywhere (see :meth:`inner`)."""
        if not self.preserve_sparsity:
            return None
        # ``left_dense`` memoizes :meth:`_left_dense` per layer (``id -> (layer, answer)``, the layer held so its
        # id stays its own): ``inner`` and ``handler_arguments`` both ask, and the answer reads the weights.
        return {"pruned_elsewhere": any(_holds_pruned_weights(layer) for layer in iter_layers(model)), "left_dense": {}}

    def inner(self, layer, plan):
        """``layer``, under a PreserveWrapper deriving the zeros that no constraint of its chain pins yet."""
        if not self.preserve_sparsity or self._left_dense(layer, plan):
            return layer
        missing = _unpinned_weights(layer)
        return PreserveWrapper(layer, {n: [SPARSITY.name] for n in missing}) if missing else layer

    def handler_arguments(self, layer, plan) -> dict:
        arguments = super().handler_arguments(layer, plan)
        if self.preserve_sparsity and self._left_dense(layer, plan):
            arguments["preserve_sparsity"] = False
        return arguments

    @staticmethod
    def _left_dense(layer, plan) -> bool:
        """Whether plain ``layer`` was left dense in a model whose other layers are pruned.

        Then none of its clustered weights has an exact zero (e.g. depthwise
        kernels, which TFMOT does not prune): there is nothing to keep, so it
        is clustered without a zero centroid and without the warning that it
        has no zeros. Where nothing in the model is pruned, each weight still
        warns: ``preserve_sparsity`` probably came before pruning.
        """
        if plan is None or not plan["pruned_elsewhere"]:
            return False
        known = plan["left_dense"].get(id(layer))
        if known is None:
            names = transformable_weight_names(base_layer(layer), ClusterWeights.protocol_method)
            values = _plain_values(layer)
            answer = bool(names) and all(n in values and not np.any(values[n] == 0) for n in names)
            known = plan["left_dense"][id(layer)] = (layer, answer)
        return known[1]


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
