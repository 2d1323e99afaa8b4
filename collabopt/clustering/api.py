"""cluster_weights, strip_clustering and the TFMOT-compatible clustering names."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from collabopt.clustering.init import CentroidInitialization
from collabopt.clustering.technique import CLUSTERING, ClusteringConfig
from collabopt.layers import register_weights_protocol
from collabopt.technique import apply, strip, tfmot_scope


@runtime_checkable
class ClusterableLayer(Protocol):
    """Protocol for custom layers: ``get_clusterable_weights()`` returns ``[(name, variable), ...]``."""

    def get_clusterable_weights(self) -> list: ...


register_weights_protocol("get_clusterable_weights")


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
            warning if that is ambiguous). In a model whose other layers are
            pruned, a layer with no exact zero (left dense, e.g. by a
            ``pruning_policy``) is clustered as without it.
        cluster_per_channel: K centroids per output channel (convolutions).
        cluster_gradient_aggregation: ``"SUM"`` or ``"AVG"``.

    Returns:
        The wrapped layer, list, or new model.

    Raises:
        InvalidArgumentError: naming the layer and argument: K too small, K
            larger than a layer's weight count (per channel with
            ``cluster_per_channel``), unknown init, a layer already clustered.
        UnsupportedLayerError: an explicitly listed layer with nothing to cluster.
        OrderError: a layer already quantized (cluster first).

    Example:

    >>> import keras, collabopt.keras as co
    >>> m = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4)])
    >>> clustered = co.cluster_weights(m, number_of_clusters=4)
    >>> type(clustered.layers[0]).__name__
    'ClusterWeights'
    """
    config = ClusteringConfig(
        number_of_clusters, cluster_centroids_init, preserve_sparsity, cluster_per_channel, cluster_gradient_aggregation
    )
    return apply(to_cluster, config, **kwargs)


def strip_clustering(model):
    """Removes clustering wrappers: plain layers (same names) holding at most K values per tensor/channel.

    Pruning wrappers inside clustering are removed too (their zeros are baked
    in), as are the preserve wrappers clustering added. On a CQAT / PCQAT model
    (clustering under quantization) it raises an OrderError: use
    ``strip_clustering_cqat`` to bake the clusters and keep QAT, or
    ``strip_quantization`` first.
    """
    return strip(model, CLUSTERING.name)


cluster_scope = tfmot_scope
