"""prune_low_magnitude, strip_pruning and the TFMOT-compatible pruning names."""

from __future__ import annotations

import contextlib
from typing import Protocol, runtime_checkable

import keras

from collabopt.layers import (
    base_layer,
    register_weights_protocol,
    remove_wrappers,
    wrapper_chain,
)
from collabopt.sparsity.schedules import ConstantSparsity
from collabopt.sparsity.wrapper import PruneLowMagnitude, validate_pruning_args
from collabopt.transform import (
    PASS,
    WRAP,
    apply_per_layer,
    is_channel_pruner,
    map_layers,
    pruned_channel_masks,
    shrink_model,
    support_status,
)


@runtime_checkable
class PrunableLayer(Protocol):
    """Protocol for custom layers: ``get_prunable_weights()`` returns the variables to prune.

    Example:

    >>> import keras
    >>> class MyLayer(keras.layers.Layer):
    ...     def build(self, shape):
    ...         self.w = self.add_weight(shape=(shape[-1], 4), name="w")
    ...     def call(self, x):
    ...         return x @ self.w
    ...     def get_prunable_weights(self):
    ...         return [self.w]
    """

    def get_prunable_weights(self) -> list: ...


register_weights_protocol("get_prunable_weights")


class PruneForLatencyOnXNNPack:
    """Pruning policy: prune only what XNNPack's sparse inference speeds up.

    XNNPack runs sparse 1x1 (pointwise) Conv2D layers with stride 1 and no
    dilation faster; every other layer is left dense.
    """

    def allow_pruning(self, layer) -> bool:
        return (
            isinstance(layer, keras.layers.Conv2D)
            and type(layer) is keras.layers.Conv2D
            and tuple(layer.kernel_size) == (1, 1)
            and tuple(layer.strides) == (1, 1)
            and tuple(layer.dilation_rate) == (1, 1)
        )


def _is_pruned(layer) -> bool:
    return any(isinstance(w, PruneLowMagnitude) for w in wrapper_chain(layer))


def prune_low_magnitude(
    to_prune,
    pruning_schedule=None,
    block_size=(1, 1),
    block_pooling_type="AVG",
    pruning_policy=None,
    sparsity_m_by_n=None,
    **kwargs,
):
    """Wraps layers so that their low-magnitude weights are pruned during training.

    Args:
        to_prune: A layer (returned wrapped, e.g. to build a subclassed model),
            a list of layers, or a Sequential / Functional / nested model
            (returned as a new model; the input is not modified). In a model,
            layers with no prunable weights pass through; layers with weights
            collabopt does not know pass through with a warning.
        pruning_schedule: A :class:`PruningSchedule`; default
            ``ConstantSparsity(0.5, begin_step=0, frequency=100)``.
        block_size: Blocks pruned together, for rank-2 weights (Dense, Embedding).
        block_pooling_type: ``"AVG"`` or ``"MAX"``.
        pruning_policy: Optional policy with ``allow_pruning(layer) -> bool``
            (e.g. :class:`PruneForLatencyOnXNNPack`); other layers stay dense.
        sparsity_m_by_n: ``(m, n)`` structured sparsity, e.g. ``(2, 4)``:
            keep ``m`` of every ``n`` consecutive weights along the
            input-channel axis.
        **kwargs: Passed to the wrapper (e.g. ``name`` for a single layer).

    Returns:
        The wrapped layer, list of wrapped layers, or new model.

    Raises:
        ValueError: bad arguments (named), a listed layer with nothing to
            prune, a layer that is already pruned, or settings that do not fit a
            layer's weights. Nothing is changed when an error is raised.

    Example:

    >>> import keras, collabopt.keras as co
    >>> model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4)])
    >>> pruned = co.prune_low_magnitude(model, co.ConstantSparsity(0.5, 0, frequency=1))
    >>> type(pruned.layers[0]).__name__
    'PruneLowMagnitude'
    """
    schedule = pruning_schedule if pruning_schedule is not None else ConstantSparsity(0.5, 0)
    validate_pruning_args(schedule, block_size, block_pooling_type, sparsity_m_by_n)
    if pruning_policy is not None and not callable(getattr(pruning_policy, "allow_pruning", None)):
        raise ValueError(
            f"pruning_policy must have an allow_pruning(layer) method (e.g. PruneForLatencyOnXNNPack); "
            f"received {pruning_policy!r}."
        )

    def classify(layer):
        if _is_pruned(layer):
            base = base_layer(layer)
            raise ValueError(
                f"prune_low_magnitude: layer '{base.name}' is already pruned (wrapper '{layer.name}'); "
                "prune each layer once (strip_pruning first to start over)."
            )
        status = support_status(layer)
        if status == WRAP and pruning_policy is not None and not pruning_policy.allow_pruning(base_layer(layer)):
            return PASS
        return status

    def wrap(layer):
        wrapper = PruneLowMagnitude(
            layer,
            pruning_schedule=schedule,
            block_size=block_size,
            block_pooling_type=block_pooling_type,
            sparsity_m_by_n=sparsity_m_by_n,
            **kwargs,
        )
        if layer.built:
            wrapper.build(_build_shape(layer))
        return wrapper

    return apply_per_layer(
        to_prune,
        classify=classify,
        wrap=wrap,
        what="prune_low_magnitude",
        accepted="layers with prunable weights (Dense, Conv*, DepthwiseConv*, SeparableConv*, "
        "Conv*Transpose, Embedding, or a PrunableLayer)",
    )


def _build_shape(layer):
    config = layer.get_build_config() or {}
    return config.get("input_shape")


def strip_pruning(model):
    """Removes pruning wrappers, leaving plain layers (same names) holding exact zeros.

    Filter-pruned models (:func:`prune_filters`) come back physically smaller:
    the pruned channels are removed (``collabopt.transform.shrink_model``).

    Works on a model or a single wrapped layer; where pruning sits under
    another technique (clustering over pruning), only the pruning wrapper is
    removed and its mask is baked into the weights. The input is not modified.

    Example:

    >>> import keras, collabopt.keras as co
    >>> m = co.prune_low_magnitude(keras.Sequential([keras.Input((8,)), keras.layers.Dense(4)]))
    >>> type(co.strip_pruning(m).layers[0]).__name__
    'Dense'
    """

    def fn(layer):
        return remove_wrappers(layer, lambda w: isinstance(w, PruneLowMagnitude) or is_channel_pruner(w))

    channels = pruned_channel_masks(model)  # filter pruning: the model also gets physically smaller
    stripped = map_layers(model, fn, what="strip_pruning")
    return shrink_model(stripped, channels) if channels and isinstance(stripped, keras.Model) else stripped


@contextlib.contextmanager
def prune_scope():
    """Accepted for TFMOT compatibility; loading collabopt models needs no scope."""
    yield


def pruning_step(model) -> int:
    """The pruning step of a model's pruning wrappers (they advance together)."""
    from collabopt.transform import iter_layers

    for layer in iter_layers(model):
        for wrapper in wrapper_chain(layer):
            if isinstance(wrapper, PruneLowMagnitude):
                return int(wrapper.pruning_step.numpy())
    raise ValueError(f"model '{model.name}' has no pruning wrappers.")
