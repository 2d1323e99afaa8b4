"""cluster_weights, strip_clustering and the TFMOT-compatible clustering names."""

from __future__ import annotations

import contextlib
from typing import Protocol, runtime_checkable

from collabopt.clustering.init import CentroidInitialization, parse_init
from collabopt.clustering.wrapper import ClusterWeights, check_cluster_count, validate_clustering_args
from collabopt.layers import (
    base_layer,
    optimizable_variables,
    register_weights_protocol,
    remove_wrappers,
    spec_for,
    transformable_weight_names,
    wrapper_chain,
)
from collabopt.preserve import PreserveWrapper, constraints_on
from collabopt.transform import apply_per_layer, map_layers, support_status


@runtime_checkable
class ClusterableLayer(Protocol):
    """Protocol for custom layers: ``get_clusterable_weights()`` returns ``[(name, variable), ...]``."""

    def get_clusterable_weights(self) -> list: ...


register_weights_protocol("get_clusterable_weights")


def _is_clustered(layer) -> bool:
    return any(isinstance(w, ClusterWeights) for w in wrapper_chain(layer))


def cluster_weights(
    to_cluster,
    number_of_clusters,
    cluster_centroids_init=CentroidInitialization.KMEANS_PLUS_PLUS,
    preserve_sparsity=False,
    cluster_per_channel=False,
    cluster_gradient_aggregation="SUM",
    **kwargs,
):
    """Wraps layers so that their weights take at most ``number_of_clusters`` values.

    Works on a layer, a list of layers, or a Sequential / Functional / nested
    model (a new model is returned; the input is never modified — unlike
    TFMOT's, after which a following ``quantize_model`` fails). Layers may be
    plain or already wrapped by pruning (the chain).

    Args:
        to_cluster: Layer, list of layers or model.
        number_of_clusters: K, >= 2 (>= 3 with ``preserve_sparsity``).
        cluster_centroids_init: A :class:`CentroidInitialization` or its name.
        preserve_sparsity: Keep every zero: read from the pruning wrapper
            inside, or derived from the zeros of a stripped model (with a
            warning if that is ambiguous).
        cluster_per_channel: K centroids per output channel (convolutions).
        cluster_gradient_aggregation: ``"SUM"`` or ``"AVG"``.

    Returns:
        The wrapped layer, list, or new model.

    Raises:
        ValueError: naming the layer and argument: K too small, K larger than a
            layer's weight count (per channel with ``cluster_per_channel``),
            unknown init, an explicitly listed layer with nothing to cluster,
            a layer already clustered.

    Example:

    >>> import keras, collabopt.keras as co
    >>> m = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4)])
    >>> clustered = co.cluster_weights(m, number_of_clusters=4)
    >>> type(clustered.layers[0]).__name__
    'ClusterWeights'
    """
    validate_clustering_args(number_of_clusters, preserve_sparsity, cluster_gradient_aggregation)
    init = parse_init(cluster_centroids_init)

    def classify(layer):
        base = base_layer(layer)
        if _is_clustered(layer):
            raise ValueError(
                f"cluster_weights: layer '{base.name}' is already clustered (wrapper '{layer.name}'); "
                "cluster each layer once (strip_clustering first to start over)."
            )
        return support_status(layer)

    def wrap(layer):
        base = base_layer(layer)
        names = transformable_weight_names(base, ClusterWeights.protocol_method)
        if layer.built:
            for name in names:
                value = optimizable_variables(base)[name]
                check_cluster_count(base, name, tuple(value.shape), spec_for(base, name), number_of_clusters, cluster_per_channel, preserve_sparsity)
        inner = layer
        if preserve_sparsity:
            missing = [n for n in names if "sparsity" not in constraints_on(layer, n)]
            if missing:
                inner = PreserveWrapper(layer, {n: ["sparsity"] for n in missing})
        wrapper = ClusterWeights(
            inner,
            number_of_clusters=number_of_clusters,
            cluster_centroids_init=init,
            preserve_sparsity=preserve_sparsity,
            cluster_per_channel=cluster_per_channel,
            cluster_gradient_aggregation=cluster_gradient_aggregation,
            **kwargs,
        )
        build_config = layer.get_build_config() if layer.built else None
        if build_config:
            wrapper.build(build_config["input_shape"])
        return wrapper

    return apply_per_layer(
        to_cluster,
        classify=classify,
        wrap=wrap,
        what="cluster_weights",
        accepted="layers with clusterable weights (Dense, Conv*, DepthwiseConv*, SeparableConv*, "
        "Conv*Transpose, Embedding, or a ClusterableLayer)",
    )


def strip_clustering(model):
    """Removes clustering wrappers: plain layers (same names) holding at most K values per tensor/channel.

    Pruning wrappers inside clustering are removed too (their zeros are baked
    in), as are the preserve wrappers clustering added.
    """

    def fn(layer):
        if not _is_clustered(layer):
            return None
        return remove_wrappers(layer, lambda w: True)

    return map_layers(model, fn, what="strip_clustering")


@contextlib.contextmanager
def cluster_scope():
    """Accepted for TFMOT compatibility; loading collabopt models needs no scope."""
    yield
