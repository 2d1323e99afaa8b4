"""The *channels* constraint kind: whole output channels pruned (filter pruning)."""

from __future__ import annotations

import numpy as np
from keras import ops

from collabopt.layers import from_channel_rows, num_channels, to_channel_rows
from collabopt.preserve.kinds import ConstraintKind, StateVariable, register_kind


class ChannelsKind(ConstraintKind):
    """Pruned output channels: a 0/1 mask with one entry per output channel.

    Projection zeroes every value of a pruned channel. Derived from a stripped
    weight as "the channel has a non-zero value"; detected (automatic
    preservation) when at least one whole output channel is zero and the
    other channels hold almost no zeros (so magnitude-pruned weights are left
    to the sparsity kind). In the
    exported file the constraint holds when the pruned channels are all zero,
    or absent (the model was physically shrunk before export).
    """

    name = "channels"
    order = 90  # masks values, like sparsity; after clusters

    def state_spec(self, weight_shape, spec, options):
        return {"mask": StateVariable((num_channels(spec, weight_shape),), "float32", False)}

    def derive(self, value, spec, options):
        rows = to_channel_rows(np.asarray(value), spec)
        mask = np.any(rows != 0, axis=1).astype(np.float32)
        warning = None if mask.size and mask.min() == 0 else "has no all-zero output channel; the derived channel mask keeps every channel"
        return {"mask": mask}, warning

    def detect(self, value, spec):
        if spec is None or value.ndim < 2:
            return None
        rows = to_channel_rows(np.asarray(value), spec)
        if rows.shape[0] < 2 or rows.shape[1] < 2:
            return None
        zero = ~np.any(rows != 0, axis=1)
        if not zero.any() or zero.all():
            return None
        # Structured, not scattered: the channels left hold (almost) no zeros,
        # unlike a magnitude-pruned weight that happens to lose a whole channel.
        return {} if float(np.mean(rows[~zero] == 0)) < 0.05 else None

    def project(self, state, weight, spec=None):
        rows = to_channel_rows(weight, spec)
        return from_channel_rows(rows * ops.cast(state["mask"], weight.dtype)[:, None], spec, weight.shape)

    def zero_mask(self, state):
        # Per-channel mask; stages that keep zeros broadcast it through project().
        return None

    def without_channels(self, state, weight_shape, cut, kept_channels):
        # Export removes pruned channels, so what is left of the mask is the entries of the channels left.
        return {"mask": np.asarray(state["mask"])[kept_channels]}

    def expected(self, state):
        """The number of output channels kept."""
        return float(np.sum(np.asarray(ops.convert_to_numpy(state["mask"])) != 0))

    def check(self, state, tensor_stats, *, channels_rescaled=False):
        """Whether the file's tensor keeps the pruned channels at zero (or removed them).

        Args:
            state: This kind's state (``{"mask": array}``).
            tensor_stats: The flatbuffer tensor's statistics
                (:class:`collabopt.tflite.inspection.TensorStats`), or a
                parsed flatbuffer tensor; when it carries its stored values
                (``values`` or ``data``) each pruned channel is checked
                exactly, else through the zero fraction.

        Returns:
            ``(holds, found)``: ``found`` is the number of output channels in
            the file that are not all zero (or the file's channel count when
            only statistics are available).
        """
        mask = np.asarray(ops.convert_to_numpy(state["mask"])) != 0
        full, kept = mask.size, int(mask.sum())
        if tensor_stats is None:
            return False, None
        shape = tuple(tensor_stats.shape)
        values = getattr(tensor_stats, "values", None)
        if values is None:
            values = getattr(tensor_stats, "data", None)  # a parsed flatbuffer tensor
        if full not in shape:
            return kept in shape, kept if kept in shape else None
        scales = getattr(tensor_stats, "scales", None)
        per_channel = scales is not None and len(scales) > 1
        qdim = getattr(tensor_stats, "quantized_dimension", 0) or 0
        axis = qdim if per_channel and shape[qdim] == full else shape.index(full)
        if values is not None:
            zero_points = getattr(tensor_stats, "zero_points", None)
            zero_point = np.asarray(zero_points if zero_points is not None and len(zero_points) else [0])
            rows = np.moveaxis(np.asarray(values), axis, 0).reshape(full, -1).astype(np.float64)
            rows = rows - (zero_point[:, None] if zero_point.size == full else zero_point.reshape(-1)[0])
            nonzero = np.any(rows != 0, axis=1)
            return bool(not np.any(nonzero[~mask])), int(nonzero.sum())
        pruned_fraction = 1.0 - kept / full
        holds = tensor_stats.zeros_fraction is not None and tensor_stats.zeros_fraction >= pruned_fraction - 1e-9
        return holds, full

    def describe(self, value=..., *, bound=False) -> str:
        """Words for a channel count (recorded if ``bound``, else found in the file); no value: the kind itself."""
        if value is ...:
            return "pruned output channels (all zero or removed)"
        if value is None:
            return "no tensor"
        return f"{int(value)} channels {'kept' if bound else 'not all zero'}"


CHANNELS = register_kind(ChannelsKind())
