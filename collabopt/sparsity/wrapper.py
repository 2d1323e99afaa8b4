"""PruneLowMagnitude: the pruning stage of the weight pipeline."""

from __future__ import annotations

import keras
from keras import ops

from collabopt.errors import InvalidArgumentError
from collabopt.layers import OptimizationWrapper, base_layer
from collabopt.preserve import SPARSITY, Constraint
from collabopt.sparsity import masks
from collabopt.sparsity.schedules import ConstantSparsity, PruningSchedule
from collabopt.technique.schedules import step_dtype


@keras.saving.register_keras_serializable(package="collabopt")
class PruneLowMagnitude(OptimizationWrapper):
    """Zeroes low-magnitude weights of a layer following a pruning schedule.

    The effective weight is ``mask * w``; the mask and the step counter are
    non-trainable variables, so a ``.keras`` file saved mid-schedule resumes at
    the same step with the same masks. Each training call (``training=True``)
    is one step: at steps where the schedule says so the masks are recomputed
    from the masked weights (pruned weights stay pruned), then the counter
    advances. No callback is needed, and a custom training loop works as is
    (call the model with ``training=True``). In a subclassed model, the
    model's ``call`` must accept ``training`` (Keras only passes
    ``training=True`` to models whose ``call`` takes it, as for Dropout).

    Records a *sparsity* constraint (its mask) in the preserve registry for
    every pruned weight, so clustering and QAT stacked on top keep every zero.

    Args:
        layer: The layer to prune.
        pruning_schedule: A :class:`PruningSchedule` (default
            ``ConstantSparsity(0.5, 0)``).
        block_size: ``(rows, cols)`` blocks pruned together (rank-2 weights only).
        block_pooling_type: ``"AVG"`` or ``"MAX"``: how a block is scored.
        sparsity_m_by_n: ``(m, n)``: keep ``m`` of every ``n`` consecutive
            weights along the input-channel axis at each pruning step (the
            schedule's sparsity is then not used).

    Example:

    >>> import keras
    >>> from collabopt.sparsity import PruneLowMagnitude, ConstantSparsity
    >>> layer = PruneLowMagnitude(keras.layers.Dense(4), ConstantSparsity(0.5, 0, frequency=1))
    >>> _ = layer(keras.ops.ones((1, 8)), training=True)
    >>> float(keras.ops.mean(layer.masks["kernel"]))
    0.5
    """

    def __init__(
        self,
        layer,
        pruning_schedule: PruningSchedule | None = None,
        block_size=(1, 1),
        block_pooling_type: str = "AVG",
        sparsity_m_by_n=None,
        **kwargs,
    ):
        kwargs.setdefault("name", f"prune_low_magnitude_{base_layer(layer).name}")
        super().__init__(layer, **kwargs)
        self.pruning_schedule = pruning_schedule if pruning_schedule is not None else ConstantSparsity(0.5, 0)
        validate_pruning_args(self.pruning_schedule, block_size, block_pooling_type, sparsity_m_by_n)
        self.block_size = tuple(int(b) for b in block_size)
        self.block_pooling_type = block_pooling_type
        self.sparsity_m_by_n = tuple(sparsity_m_by_n) if sparsity_m_by_n else None
        self.masks: dict = {}

    protocol_method = "get_prunable_weights"

    def build_wrapper(self, input_shape):
        inner = self.inner_weights()
        for name in self.weight_names():
            spec = self.spec(name)
            shape = tuple(inner[name].shape)
            check_weight(self.base_layer, name, shape, spec, self.block_size, self.sparsity_m_by_n)
            self.masks[name] = self.add_weight(
                name=f"{self.spec(name).variable_name}_mask",
                shape=shape,
                initializer="ones",
                trainable=False,
                aggregation="only_first_replica",
            )
        self.pruning_step = self.add_weight(
            name="pruning_step",
            shape=(),
            dtype=step_dtype(),
            initializer="zeros",
            trainable=False,
            aggregation="only_first_replica",
        )

    def pruning_mask(self, weight, sparsity, name):
        """The mask for ``weight`` at ``sparsity`` under this wrapper's settings."""
        if self.sparsity_m_by_n:
            m, n = self.sparsity_m_by_n
            return masks.m_by_n_mask(weight, m, n, self.spec(name).input_axis)
        if self.block_size != (1, 1):
            return masks.block_mask(weight, sparsity, self.block_size, self.block_pooling_type)
        return masks.magnitude_mask(weight, sparsity)

    def transform_weights(self, weights, training):
        out = dict(weights)
        if training:
            should_prune, sparsity = self.pruning_schedule(self.pruning_step)
            for name, mask in self.masks.items():
                w = ops.convert_to_tensor(weights[name])
                current = ops.convert_to_tensor(mask)
                # The mask is a step function of the weights (no gradient):
                # under stop_gradient, the conditional update is no part of
                # the backward pass. (Otherwise TensorFlow differentiates the
                # cond: a gradient cond per layer, and the forward one
                # rewritten to keep its intermediates (the sorted magnitudes)
                # for it: MobileNetV2 prune fit peak 805 -> 789 MiB.)
                new_mask = ops.stop_gradient(
                    ops.cond(
                        should_prune,
                        lambda w=w, current=current, name=name: self.pruning_mask(w * current, sparsity, name),
                        lambda current=current: current,
                    )
                )
                mask.assign(new_mask)
                out[name] = w * new_mask
            self.pruning_step.assign_add(1)
            return out
        for name, mask in self.masks.items():
            out[name] = weights[name] * ops.cast(mask, weights[name].dtype)
        return out

    def recorded_constraints(self) -> dict:
        return {name: [Constraint(SPARSITY, {"mask": mask}, self.spec(name))] for name, mask in self.masks.items()}

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "pruning_schedule": keras.saving.serialize_keras_object(self.pruning_schedule),
                "block_size": list(self.block_size),
                "block_pooling_type": self.block_pooling_type,
                "sparsity_m_by_n": list(self.sparsity_m_by_n) if self.sparsity_m_by_n else None,
            }
        )
        return config

    @classmethod
    def deserialize_config(cls, config):
        config["pruning_schedule"] = keras.saving.deserialize_keras_object(config["pruning_schedule"])
        return config


def validate_pruning_args(schedule, block_size, block_pooling_type, sparsity_m_by_n):
    """Checks the layer-independent pruning arguments (ValueError naming the argument)."""
    if not isinstance(schedule, PruningSchedule):
        raise InvalidArgumentError(
            f"pruning_schedule must be a PruningSchedule (e.g. ConstantSparsity, PolynomialDecay); "
            f"received {schedule!r}."
        )
    if (
        not isinstance(block_size, (tuple, list))
        or len(block_size) != 2
        or not all(isinstance(b, int) and b >= 1 for b in block_size)
    ):
        raise InvalidArgumentError(f"block_size must be a pair of integers >= 1; received {block_size!r}.")
    if block_pooling_type not in masks.POOLING_TYPES:
        raise InvalidArgumentError(f"block_pooling_type must be one of {masks.POOLING_TYPES}; received {block_pooling_type!r}.")
    if sparsity_m_by_n is not None:
        ok = (
            isinstance(sparsity_m_by_n, (tuple, list))
            and len(sparsity_m_by_n) == 2
            and all(isinstance(v, int) and v >= 1 for v in sparsity_m_by_n)
        )
        if not ok:
            raise InvalidArgumentError(f"sparsity_m_by_n must be a pair of integers (m, n) >= 1; received {sparsity_m_by_n!r}.")
        m, n = sparsity_m_by_n
        if m > n:
            raise InvalidArgumentError(f"sparsity_m_by_n=({m}, {n}): m must be <= n (keep m of every n weights).")
        if tuple(block_size) != (1, 1):
            raise InvalidArgumentError("sparsity_m_by_n and block_size cannot be combined; use one of them.")


def _dividing_block(shape, block_size):
    """The largest block no bigger than ``block_size`` whose sides divide ``shape``."""
    return tuple(max(d for d in range(1, b + 1) if n % d == 0) for n, b in zip(shape, block_size))


def check_weight(layer, name, shape, spec, block_size, m_by_n):
    """Checks that pruning settings fit one weight (InvalidArgumentError naming the layer and weight)."""
    where = f"layer '{layer.name}' ({type(layer).__name__}), weight '{name}' of shape {shape}"
    if tuple(block_size) != (1, 1) and len(shape) != 2:
        raise InvalidArgumentError(
            f"{where}: block_size={tuple(block_size)} needs a rank-2 weight (Dense, Embedding); "
            "use block_size=(1, 1) for this layer."
        )
    if tuple(block_size) != (1, 1) and (shape[0] % block_size[0] or shape[1] % block_size[1]):
        # Partial edge blocks would make the reached sparsity differ from the
        # schedule's target; a block that tiles the weight reaches it exactly
        # (to the nearest whole block).
        raise InvalidArgumentError(
            f"{where}: block_size={tuple(block_size)} does not tile it ({shape[0]} % {block_size[0]}, "
            f"{shape[1]} % {block_size[1]} must both be 0), so the target sparsity could not be met "
            f"exactly; use a block whose sides divide {shape[0]} and {shape[1]} (e.g. "
            f"{_dividing_block(shape, block_size)})."
        )
    if m_by_n:
        m, n = m_by_n
        if spec.input_axis is None:
            raise InvalidArgumentError(f"{where}: sparsity_m_by_n needs an input-channel axis, which this weight has not.")
        channels = shape[spec.input_axis]
        if channels % n:
            raise InvalidArgumentError(
                f"{where}: sparsity_m_by_n=({m}, {n}) needs n to divide the {channels} input channels."
            )
