"""ClusterWeights: the clustering stage of the weight pipeline."""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from collabopt.errors import InvalidArgumentError
from collabopt.clustering.fused import clustered_for_training
from collabopt.clustering.init import CentroidInitialization, init_centroids, parse_init
from collabopt.layers import OptimizationWrapper, base_layer, from_channel_rows, num_channels, to_channel_rows
from collabopt.layers.channels import channel_permutation
from collabopt import fused as fusing
from collabopt.preserve import CLUSTERS, Constraint, gather_clustered, zero_mask
from collabopt.layers.checks import check_finite

AGGREGATIONS = ("SUM", "AVG")


def nearest_centroid(values, centroids):
    """Index of the nearest centroid for each value, by binary search on sorted centroids.

    ``values``: (C, N); ``centroids``: (C, K). O(N log K) per channel, instead of
    the O(N K) distance matrix. keras.ops has no batched ``searchsorted``: on
    TensorFlow it is ``tf.searchsorted``; elsewhere one row is searched with
    ``ops.searchsorted`` and several rows count the midpoints below each value.
    """
    order = ops.argsort(centroids, axis=-1)
    sorted_c = ops.take_along_axis(centroids, order, axis=-1)
    midpoints = (sorted_c[:, 1:] + sorted_c[:, :-1]) / 2.0
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        position = tf.searchsorted(midpoints, values, side="left")
    elif values.shape[0] == 1:
        position = ops.expand_dims(ops.searchsorted(midpoints[0], values[0], side="left"), 0)
    else:
        position = ops.sum(ops.cast(ops.greater(values[:, :, None], midpoints[:, None, :]), "int32"), axis=-1)
    return ops.take_along_axis(order, ops.cast(position, order.dtype), axis=-1)


@keras.saving.register_keras_serializable(package="collabopt")
class ClusterWeights(OptimizationWrapper):
    """Constrains a layer's weights to K shared values (per tensor or per channel).

    The effective weight is ``centroids[indices]``. Centroids are trainable;
    the original weight keeps training through a straight-through gradient and
    its assignment to the nearest centroid is recomputed every training step
    (binary search over sorted centroids). Records a *clusters* constraint
    (centroids + indices) in the preserve registry.

    With ``preserve_sparsity=True`` the sparsity constraint of the chain
    inside (a pruning wrapper, or a PreserveWrapper derived from a stripped
    model) is kept exactly: a zero centroid that never moves, masked weights
    always assigned to it, other weights never.

    Args:
        layer: The layer (or wrapper chain) to cluster.
        number_of_clusters: K.
        cluster_centroids_init: A :class:`CentroidInitialization`.
        preserve_sparsity: Keep the inner chain's zeros.
        cluster_per_channel: K centroids per output channel.
        cluster_gradient_aggregation: ``"SUM"`` or ``"AVG"`` of the gradients
            of the weights assigned to a centroid.

    Example:

    >>> import keras
    >>> from collabopt.clustering import ClusterWeights
    >>> layer = ClusterWeights(keras.layers.Dense(8), number_of_clusters=4)
    >>> y = layer(keras.ops.ones((1, 16)))
    >>> len(set(layer.final_weights()["kernel"].ravel().tolist())) <= 4
    True
    """

    def __init__(
        self,
        layer,
        number_of_clusters: int,
        cluster_centroids_init=CentroidInitialization.KMEANS_PLUS_PLUS,
        preserve_sparsity: bool = False,
        cluster_per_channel: bool = False,
        cluster_gradient_aggregation: str = "SUM",
        **kwargs,
    ):
        kwargs.setdefault("name", f"cluster_{base_layer(layer).name}")
        super().__init__(layer, **kwargs)
        validate_clustering_args(number_of_clusters, preserve_sparsity, cluster_gradient_aggregation)
        self.number_of_clusters = int(number_of_clusters)
        self.cluster_centroids_init = parse_init(cluster_centroids_init)
        self.preserve_sparsity = bool(preserve_sparsity)
        self.cluster_per_channel = bool(cluster_per_channel)
        self.cluster_gradient_aggregation = cluster_gradient_aggregation
        self.centroids: dict = {}
        self.indices: dict = {}

    protocol_method = "get_clusterable_weights"

    def _sparsity_mask(self, name):
        if not self.preserve_sparsity:
            return None
        mask = zero_mask(self.layer, name)
        if mask is None:
            raise InvalidArgumentError(
                f"layer '{self.base_layer.name}': preserve_sparsity=True but nothing inside the "
                "clustering wrapper records a constraint that keeps zeros; use cluster_weights(), which "
                "derives one from a stripped model."
            )
        return mask

    def build_wrapper(self, input_shape):
        weights = self.inner_weights()
        for name in self.weight_names():
            spec = self.spec(name)
            value = ops.convert_to_numpy(weights[name])
            check_finite(self.base_layer, name, value)
            check_cluster_count(self.base_layer, name, value.shape, spec, self.number_of_clusters, self.cluster_per_channel, self.preserve_sparsity)
            mask = self._sparsity_mask(name)
            mask_np = None if mask is None else ops.convert_to_numpy(mask)
            rows = to_channel_rows(value, spec) if self.cluster_per_channel else value.reshape(1, -1)
            mask_rows = None
            if mask_np is not None:
                mask_rows = to_channel_rows(mask_np, spec) if self.cluster_per_channel else mask_np.reshape(1, -1)
            k = self.number_of_clusters
            centroids = np.zeros((rows.shape[0], k), np.float32)
            # A restored wrapper gets its centroids from the saved state next.
            for c, row in enumerate(rows if not self.restoring else ()):
                if mask_rows is None:
                    centroids[c] = init_centroids(row, k, self.cluster_centroids_init, seed=c)
                else:
                    kept = row[mask_rows[c] != 0]
                    # index 0 is the pinned zero centroid
                    centroids[c, 1:] = init_centroids(kept if kept.size else np.zeros(1), k - 1, self.cluster_centroids_init, seed=c)
            shape = (num_channels(spec, value.shape), k) if self.cluster_per_channel else (k,)
            self.centroids[name] = self.add_weight(
                name=f"{name.replace('/', '__')}_centroids", shape=shape, initializer="zeros", trainable=True
            )
            self.centroids[name].assign(centroids if self.cluster_per_channel else centroids[0])
            self.indices[name] = self.add_weight(
                name=f"{name.replace('/', '__')}_indices",
                shape=value.shape,
                dtype="int32",
                initializer="zeros",
                trainable=False,
                aggregation="only_first_replica",
            )
            self.indices[name].assign(self._assign(value, name, mask))

    def _centroid_rows(self, name):
        c = ops.convert_to_tensor(self.centroids[name])
        return c if self.cluster_per_channel else ops.expand_dims(c, 0)

    def _assign(self, weight, name, mask):
        """Nearest-centroid indices for ``weight`` (zeros of ``mask`` go to centroid 0)."""
        spec = self.spec(name)
        shape = tuple(weight.shape)
        weight = ops.convert_to_tensor(weight, "float32")
        rows = to_channel_rows(weight, spec) if self.cluster_per_channel else ops.reshape(weight, (1, -1))
        centroids = self._centroid_rows(name)
        if mask is None:
            idx = nearest_centroid(rows, centroids)
        else:
            idx = nearest_centroid(rows, centroids[:, 1:]) + 1
            m = ops.convert_to_tensor(mask, "float32")
            m_rows = to_channel_rows(m, spec) if self.cluster_per_channel else ops.reshape(m, (1, -1))
            idx = ops.where(ops.equal(m_rows, 0), ops.zeros_like(idx), idx)
        idx = ops.cast(idx, "int32")
        if self.cluster_per_channel:
            return from_channel_rows(idx, spec, shape)
        return ops.reshape(idx, shape)

    def _effective_centroids(self, name, indices):
        c = ops.convert_to_tensor(self.centroids[name])
        if self.preserve_sparsity:
            pin = np.ones(c.shape, np.float32)
            pin[..., 0] = 0.0
            c = c * ops.convert_to_tensor(pin, c.dtype)  # the zero centroid stays exactly zero and gets no gradient
        if self.cluster_gradient_aggregation == "AVG":
            flat_idx = to_channel_rows(indices, self.spec(name)) if self.cluster_per_channel else ops.reshape(indices, (1, -1))
            counts = ops.sum(ops.one_hot(flat_idx, self.number_of_clusters), axis=1)  # (C, K)
            counts = ops.maximum(counts, 1.0)
            counts = counts if self.cluster_per_channel else counts[0]
            c = c / counts + ops.stop_gradient(c - c / counts)  # same value, gradient averaged
        return c

    def _fused_training_step(self, name, w_in, mask):
        """``(clustered, indices)`` by :mod:`collabopt.clustering.fused`, or None where the op-by-op path runs.

        Fused: TensorFlow, a float32 weight of at least
        ``collabopt.fused.FUSED_MIN_ELEMENTS`` (in a traced step: any), SUM aggregation (AVG needs the indices
        before the centroids it divides).
        """
        if self.cluster_gradient_aggregation != "SUM" or w_in.dtype != "float32" or not fusing.fused_on_tensorflow(
            w_in, traced_min_elements=fusing.TRACED_WEIGHT_MIN_ELEMENTS
        ):
            return None
        spec = self.spec(name)
        rank = len(w_in.shape)
        perm = channel_permutation(spec, rank) if self.cluster_per_channel else None
        rows = num_channels(spec, w_in.shape) if self.cluster_per_channel else 1
        effective = self._effective_centroids(name, None)
        if not self.cluster_per_channel:
            effective = ops.expand_dims(effective, 0)
        clustered, indices = clustered_for_training(w_in, self._centroid_rows(name), effective, mask, perm, rows)
        return clustered, indices

    def transform_weights(self, weights, training):
        out = dict(weights)
        for name in self.centroids:
            w_in = ops.convert_to_tensor(weights[name])
            mask = self._sparsity_mask(name)
            fused = self._fused_training_step(name, w_in, mask) if training else None
            if fused is not None:
                clustered, indices = fused
                self.indices[name].assign(indices)
                out[name] = clustered * ops.cast(mask, clustered.dtype) if mask is not None else clustered
                continue
            if training:
                indices = self._assign(ops.stop_gradient(w_in), name, mask)
                self.indices[name].assign(indices)
            else:
                indices = ops.convert_to_tensor(self.indices[name])
            clustered = gather_clustered(self._effective_centroids(name, indices), indices, self.spec(name), self.cluster_per_channel)
            if training:
                # straight-through: the value is the clustered weight, the
                # original weight receives the same gradient.
                clustered = clustered + w_in - ops.stop_gradient(w_in)
            if mask is not None:
                clustered = clustered * ops.cast(mask, clustered.dtype)
            out[name] = clustered
        return out

    def recorded_constraints(self) -> dict:
        return {
            name: [Constraint(CLUSTERS, {"centroids": self.centroids[name], "indices": self.indices[name]}, self.spec(name))]
            for name in self.centroids
        }

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "number_of_clusters": self.number_of_clusters,
                "cluster_centroids_init": self.cluster_centroids_init.value,
                "preserve_sparsity": self.preserve_sparsity,
                "cluster_per_channel": self.cluster_per_channel,
                "cluster_gradient_aggregation": self.cluster_gradient_aggregation,
            }
        )
        return config


def validate_clustering_args(number_of_clusters, preserve_sparsity, aggregation):
    minimum = 3 if preserve_sparsity else 2
    if not isinstance(number_of_clusters, (int, np.integer)) or number_of_clusters < minimum:
        raise InvalidArgumentError(
            f"number_of_clusters must be an integer >= {minimum}"
            + (" with preserve_sparsity=True (one centroid is the pinned zero)" if preserve_sparsity else "")
            + f"; received {number_of_clusters!r}."
        )
    if aggregation not in AGGREGATIONS:
        raise InvalidArgumentError(f"cluster_gradient_aggregation must be one of {AGGREGATIONS}; received {aggregation!r}.")


def check_cluster_count(layer, name, shape, spec, k, per_channel, preserve_sparsity):
    size = int(np.prod(shape))
    per = size // num_channels(spec, shape) if per_channel else size
    if k > per:
        unit = "weights per output channel" if per_channel else "weights"
        raise InvalidArgumentError(
            f"layer '{layer.name}' ({type(layer).__name__}): number_of_clusters={k} exceeds its "
            f"{per} {unit} in '{name}'."
        )
