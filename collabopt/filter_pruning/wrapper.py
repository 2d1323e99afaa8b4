"""PruneFilters: the filter (structured) pruning stage of the weight pipeline."""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from collabopt.errors import InvalidArgumentError
from collabopt.filter_pruning.schedules import ConstantRatio, RatioSchedule
from collabopt.layers import (
    OptimizationWrapper,
    base_layer,
    from_channel_rows,
    get_variable,
    is_composite,
    layer_roles,
    spec_for,
    wrapper_chain,
)
from collabopt.layers.roles import activation_keeps_zero
from collabopt.layers.copy import copy_layer
from collabopt.technique.schedules import step_dtype
from collabopt.preserve import CHANNELS, SPARSITY, Constraint

# Per-output-channel weights zeroed with a pruned channel when the wrapper is
# stripped, so the plain full-size layer outputs exact zeros there too.
_CHANNEL_VECTORS = ("bias", "gamma", "beta")

#: Default of ``channel_multiple``: kept channel counts are rounded up to a
#: multiple of it (benchmarks/channel_multiple.py measured LiteRT's kernels).
DEFAULT_CHANNEL_MULTIPLE = 1


def pruned_channel_count(ratio: float, group_size: int, channel_multiple: int = DEFAULT_CHANNEL_MULTIPLE) -> int:
    """How many channels of a group of ``group_size`` a :class:`PruneFilters` masks at ``ratio``.

    ``floor(ratio * size)``, at least one channel kept, then the kept count
    rounded up to a multiple of ``channel_multiple`` (at most the group's size).

    >>> from collabopt.filter_pruning.wrapper import pruned_channel_count
    >>> pruned_channel_count(0.5, 24), pruned_channel_count(0.5, 24, channel_multiple=8), pruned_channel_count(0.99, 4)
    (12, 8, 3)
    """
    size = int(group_size)
    k = max(min(int(np.floor(float(ratio) * size + 1e-4)), size - 1), 0)
    if channel_multiple > 1:
        k = max(size - min(size, int(np.ceil((size - k) / channel_multiple)) * channel_multiple), 0)
    return k


@keras.saving.register_keras_serializable(package="collabopt")
class PruneFilters(OptimizationWrapper):
    """Masks whole output channels of a layer (Conv, Dense, DepthwiseConv, SeparableConv, BatchNormalization).

    Each output channel carries its rank within its dependency group (0: the
    least important, scored when :func:`prune_filters` wrapped the model) and
    the group's size. At every training call (``training=True``) the
    schedule gives the ratio ``r`` at the current step, the channels with
    ``rank < floor(r * group size)`` are masked (at least one channel of a
    group is kept) and the step advances, so every layer of a group masks the
    same channels without talking to the others, no callback is needed, and
    a ``.keras`` file saved mid-schedule resumes where it was. The mask is
    applied to the layer's kernel (so clustering and QAT stacked on top see
    the zero channels) and to its output (so biases and BatchNormalization
    offsets cannot leak into a pruned channel).

    Records a *channels* constraint (the mask) on its kernel in the preserve
    registry, and the same zeros as a *sparsity* constraint, so
    ``cluster_weights(..., preserve_sparsity=True)`` and QAT stacked on top
    keep them.

    Args:
        layer: The layer to wrap.
        pruning_schedule: A :class:`RatioSchedule` (default ``ConstantRatio(0.5)``).
        criterion: How the channels were scored (recorded for the report).
        channel_multiple: The channels a group keeps are rounded up to a
            multiple of this (never above the group's size), so the smaller
            layers keep channel counts LiteRT's kernels run at full speed.
        ranking: ``(rank, group size)`` arrays over the output channels, set
            when the wrapper is built (as :meth:`set_ranking`); the state
            then lives in the wrapper's variables.

    Example:

    >>> import keras, numpy as np
    >>> from collabopt.filter_pruning import PruneFilters, ConstantRatio
    >>> w = PruneFilters(keras.layers.Dense(4), ConstantRatio(0.5))
    >>> w.build((None, 3)); w.set_ranking(np.arange(4), np.full(4, 4))
    >>> w(np.ones((1, 3), "float32"), training=True).numpy()[0, :2].tolist()
    [0.0, 0.0]
    """

    def __init__(
        self, layer, pruning_schedule: RatioSchedule | None = None, criterion: str = "l2", ranking=None,
        channel_multiple: int = 1, **kwargs,
    ):
        kwargs.setdefault("name", f"prune_filters_{base_layer(layer).name}")
        super().__init__(layer, **kwargs)
        if pruning_schedule is None:
            pruning_schedule = ConstantRatio(0.5)
        if not isinstance(pruning_schedule, RatioSchedule):
            raise InvalidArgumentError(
                f"layer '{self.base_layer.name}': pruning_schedule must be a RatioSchedule "
                f"(ConstantRatio, PolynomialRatio); received {pruning_schedule!r}."
            )
        self.pruning_schedule = pruning_schedule
        self.criterion = criterion
        self.channel_multiple = check_channel_multiple(channel_multiple)
        self._ranking = ranking

    # --- state ---------------------------------------------------------------
    def _masked_spec(self):
        name = layer_roles(self.base_layer).output_weight
        return spec_for(self.base_layer, name) if name is not None else None

    def build_wrapper(self, input_shape):
        channels = int(self.base_layer.compute_output_shape(input_shape)[-1])
        self.channels = channels

        def state(name, dtype, initializer):
            return self.add_weight(
                name=name, shape=(channels,), dtype=dtype, initializer=initializer, trainable=False, aggregation="only_first_replica"
            )

        self.channel_mask = state("channel_mask", "float32", "ones")
        self.channel_rank = state("channel_rank", "int32", "zeros")
        self.group_size = state("group_size", "int32", "zeros")
        self.pruning_step = self.add_weight(
            name="pruning_step", shape=(), dtype=step_dtype(), initializer="zeros", trainable=False, aggregation="only_first_replica"
        )
        if self._ranking is not None:
            self.set_ranking(*self._ranking)

    def set_ranking(self, rank, group_size):
        """Sets each output channel's rank in its group and the group's size (0: never pruned), and the mask for step 0."""
        rank = np.asarray(rank, np.int32)
        group_size = np.asarray(group_size, np.int32)
        if rank.shape != (self.channels,) or group_size.shape != (self.channels,):
            raise InvalidArgumentError(
                f"layer '{self.base_layer.name}': rank and group_size need shape ({self.channels},); "
                f"received {rank.shape} and {group_size.shape}."
            )
        self.channel_rank.assign(rank)
        self.group_size.assign(group_size)
        self.channel_mask.assign(ops.convert_to_numpy(self._mask_at(self.pruning_step)))

    def _mask_at(self, step):
        # pruned_channel_count, per channel, in tensor ops.
        ratio = self.pruning_schedule(step)
        size = ops.cast(self.group_size, "float32")
        k = ops.maximum(ops.minimum(ops.floor(ratio * size + 1e-4), size - 1.0), 0.0)
        if self.channel_multiple > 1:
            # Round the kept count up to the multiple (at most the group's size).
            m = float(self.channel_multiple)
            k = ops.maximum(size - ops.minimum(size, ops.ceil((size - k) / m) * m), 0.0)
        return ops.cast(ops.greater_equal(ops.cast(self.channel_rank, "float32"), k), "float32")

    # --- the pipeline --------------------------------------------------------
    def _current_mask(self, training):
        if training:
            mask = self._mask_at(self.pruning_step)
            self.channel_mask.assign(mask)
            self.pruning_step.assign_add(1)
            return mask
        return ops.convert_to_tensor(self.channel_mask)

    def transform_weights(self, weights, training):
        mask = self._current_mask(training)
        spec = self._masked_spec()
        out = dict(weights)
        if spec is not None and spec.name in out:
            w = ops.convert_to_tensor(out[spec.name])
            # The mask broadcast along the channel axes (in to_channel_rows' order): no transpose of the weight.
            rank = len(w.shape)
            channel_axes = {a % rank for a in spec.channel_axes}
            shape = [int(w.shape[a]) if a in channel_axes else 1 for a in range(rank)]
            out[spec.name] = w * ops.reshape(ops.cast(mask, w.dtype), shape)
        return out

    def _channel_vectors(self):
        """The base layer's per-output-channel vectors (bias; gamma, beta) to mask, or None when masking them is not known to zero a pruned channel.

        Known for a Keras layer (its own ``call``) with ``channel_vectors`` in
        its roles, an activation that keeps 0, and no inner stage changing its
        outputs or variables: its masked output weight and vectors then make a
        pruned channel's output exact zeros, without a multiply of every
        output activation (one more pass over each activation, forward and
        backward: 1.25x of a MobileNetV2 step, benchmarks/RESULTS.md).
        """
        base = self.base_layer
        names = layer_roles(base).channel_vectors
        if names is None or is_composite(base) or not activation_keeps_zero(base):
            return None
        if not type(base).call.__module__.startswith("keras."):  # a subclass computing something else
            return None
        for inner in wrapper_chain(self.layer):
            if type(inner).transform_outputs is not OptimizationWrapper.transform_outputs or (
                type(inner).replaced_variables is not OptimizationWrapper.replaced_variables
            ):
                return None
        vectors = [v for v in (getattr(base, n, None) for n in names) if v is not None]
        if any(tuple(v.shape) != (self.channels,) for v in vectors):
            return None
        return vectors

    def replaced_variables(self, training):
        replaced = list(super().replaced_variables(training) or [])
        for vector in self._channel_vectors() or ():
            replaced.append((vector, ops.convert_to_tensor(vector) * ops.cast(self.channel_mask, vector.dtype)))
        return replaced or None

    def output_channel_mask(self):
        mask = ops.convert_to_tensor(self.channel_mask)
        inner = super().output_channel_mask()
        return mask if inner is None else mask * inner

    def transform_outputs(self, outputs, training):
        # After the inner chain's transform, and under any outer stage's (QAT's
        # output range; a folded BatchNormalization's correction is masked by
        # QAT itself, output_channel_mask): the pruned channels output exact
        # zeros whichever stage is outermost.
        outputs = super().transform_outputs(outputs, training)
        if self._channel_vectors() is not None:
            return outputs  # already zero there (see _channel_vectors)
        return outputs * ops.cast(self.channel_mask, outputs.dtype)

    def pruned_output_channels(self) -> np.ndarray:
        """Bool array over the output channels: True where the channel is pruned."""
        return ops.convert_to_numpy(self.channel_mask) == 0

    def recorded_constraints(self) -> dict:
        spec = self._masked_spec()
        if spec is None:
            return {}
        shape = tuple(get_variable(self.base_layer, spec).shape)
        rows = ops.ones((self.channels, int(np.prod(shape)) // self.channels)) * ops.cast(self.channel_mask, "float32")[:, None]
        elementwise = from_channel_rows(rows, spec, shape)  # the same mask per weight: what sparsity-preserving stages read
        return {
            spec.name: [
                Constraint(CHANNELS, {"mask": self.channel_mask}, spec),
                Constraint(SPARSITY, {"mask": elementwise}, spec),
            ]
        }

    # --- leaving the wrapper -------------------------------------------------
    def stripped(self) -> keras.layers.Layer:
        """A plain full-size copy of the base layer whose pruned channels output exact zeros."""
        plain = copy_layer(self.base_layer)
        for name, value in self.final_weights().items():
            get_variable(plain, spec_for(plain, name)).assign(value)
        keep = ops.convert_to_numpy(self.channel_mask)
        for variable in plain.weights:
            if variable.path.split("/")[-1] in _CHANNEL_VECTORS and tuple(variable.shape) == (self.channels,):
                variable.assign(ops.convert_to_numpy(variable) * keep)
        return plain

    # --- serialization -------------------------------------------------------
    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "pruning_schedule": keras.saving.serialize_keras_object(self.pruning_schedule),
                "criterion": self.criterion,
                "channel_multiple": self.channel_multiple,
            }
        )
        return config

    @classmethod
    def deserialize_config(cls, config):
        config["pruning_schedule"] = keras.saving.deserialize_keras_object(config["pruning_schedule"])
        return config


def check_channel_multiple(value) -> int:
    """``value`` if it is an integer >= 1, else an InvalidArgumentError naming ``channel_multiple``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise InvalidArgumentError(
            f"channel_multiple must be an integer >= 1 (e.g. 4 or 8: kept channel counts are rounded up to it); "
            f"received {value!r}."
        )
    return int(value)
