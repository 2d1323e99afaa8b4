"""The *clusters* constraint kind: centroids (trainable) and per-weight indices."""

from __future__ import annotations

import numpy as np
from keras import ops

from collabopt.layers import from_channel_rows, num_channels, to_channel_rows
from collabopt.preserve.kinds import ConstraintKind, StateVariable, register_kind

MAX_DERIVED_CLUSTERS = 256


def gather_clustered(centroids, indices, spec, per_channel: bool):
    """The weight whose entries are ``centroids[indices]`` (per channel if ``per_channel``)."""
    if not per_channel:
        return ops.take(centroids, indices)
    shape = tuple(indices.shape)
    rows = to_channel_rows(indices, spec)  # (C, N)
    values = ops.take_along_axis(ops.convert_to_tensor(centroids), rows, axis=-1)  # centroids: (C, K)
    return from_channel_rows(values, spec, shape)


class ClustersKind(ConstraintKind):
    """Clustered weights: at most K distinct values per tensor (or per output channel).

    State: ``centroids`` of shape ``(K,)`` or ``(channels, K)`` (trainable: CQAT
    trains them) and ``indices``, int32 of the weight's shape. Projection
    gathers the centroids. Derivation from a stripped weight takes its distinct
    values as centroids; it warns when there are more than 256 (the weight
    does not look clustered).

    Options: ``number_of_clusters`` (K; when absent, derivation sets it, and
    the owner records it so a saved model rebuilds the same shapes) and
    ``per_channel``.
    """

    name = "clusters"
    replaces_weight = True

    def state_spec(self, weight_shape, spec, options):
        k = int(options["number_of_clusters"])
        centroid_shape = (num_channels(spec, weight_shape), k) if options.get("per_channel") else (k,)
        return {
            "centroids": StateVariable(centroid_shape, "float32", True),
            "indices": StateVariable(tuple(weight_shape), "int32", False),
        }

    def derive(self, value, spec, options):
        per_channel = bool(options.get("per_channel"))
        rows = to_channel_rows(value, spec) if per_channel else value.reshape(1, -1)
        uniques = [np.unique(r) for r in rows]
        k = max(len(u) for u in uniques)
        centroids = np.zeros((len(rows), k), np.float32)
        indices = np.zeros(rows.shape, np.int32)
        for c, (row, u) in enumerate(zip(rows, uniques)):
            centroids[c, : len(u)] = u
            centroids[c, len(u) :] = u[-1]  # pad with a repeated value (never indexed)
            indices[c] = np.searchsorted(u, row)
        warning = None
        if k > MAX_DERIVED_CLUSTERS:
            warning = f"has {k} distinct values{' in one channel' if per_channel else ''}; it does not look clustered"
        indices = from_channel_rows(indices, spec, value.shape) if per_channel else indices.reshape(value.shape)
        return {"centroids": centroids if per_channel else centroids[0], "indices": indices}, warning

    def detect(self, value, spec):
        # Clustered: few distinct values, per tensor or per channel. "Few" is
        # at most 256 and at most a quarter of the values, so a small
        # unclustered kernel (all values distinct) is not mistaken for one.
        def few(rows):
            return all(len(np.unique(r)) <= min(MAX_DERIVED_CLUSTERS, r.size // 4) for r in rows)

        if value.size >= 8 and few([value.reshape(-1)]):
            return {"per_channel": False}
        if spec is not None and few(to_channel_rows(value, spec)):
            return {"per_channel": True}
        return None

    def record_options(self, values, options):
        return {"number_of_clusters": int(values["centroids"].shape[-1]), **options}

    def project(self, state, weight, spec=None):
        per_channel = len(state["centroids"].shape) == 2
        return ops.cast(gather_clustered(state["centroids"], state["indices"], spec, per_channel), weight.dtype)

    def without_channels(self, state, weight_shape, cut, kept_channels):
        # Indices are cut like the weight; per-channel centroids keep the rows of the channels left.
        centroids = state["centroids"]
        return {
            "centroids": centroids[kept_channels] if np.ndim(centroids) == 2 else centroids,
            "indices": super().without_channels({"indices": state["indices"]}, weight_shape, cut, kept_channels)["indices"],
        }

    def expected(self, state):
        return float(state["centroids"].shape[-1])

    def check(self, state, tensor, *, channels_rescaled=False):
        # At most K distinct values: per tensor for per-tensor clusters in a
        # per-tensor-quantized tensor whose channels export did not rescale,
        # per channel otherwise.
        if tensor is None:
            return False, None
        per_tensor = len(state["centroids"].shape) == 1 and not tensor.per_channel and not channels_rescaled
        found = tensor.unique_values if per_tensor else tensor.max_unique_per_channel
        if found is None:
            return False, None
        return float(found) <= self.expected(state), float(found)

    def describe(self, value, *, bound=False):
        if value is None:
            return "no tensor"
        return f"<= {int(value)} values" if bound else f"{int(value)} values"


CLUSTERS = register_kind(ClustersKind())
