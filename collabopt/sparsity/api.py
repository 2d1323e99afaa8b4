"""prune_low_magnitude, strip_pruning and the TFMOT-compatible pruning names."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import keras

from collabopt.errors import InvalidArgumentError
from collabopt.layers import register_weights_protocol, wrapper_chain
from collabopt.sparsity.technique import PRUNING, PruningConfig
from collabopt.sparsity.wrapper import PruneLowMagnitude
from collabopt.technique import apply, strip, tfmot_scope
from collabopt.transform import iter_layers
from collabopt.layers import remove_wrappers
from collabopt.transform import is_channel_pruner, map_layers, pruned_channel_masks, shrink_model


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


@keras.saving.register_keras_serializable(package="collabopt")
class PruneForLatencyOnXNNPack:
    """Pruning policy: prune only what XNNPack's sparse inference speeds up.

    XNNPack runs sparse 1x1 (pointwise) Conv2D layers with stride 1 and no
    dilation faster; every other layer is left dense.
    """

    def get_config(self) -> dict:
        return {}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def allow_pruning(self, layer) -> bool:
        return (
            isinstance(layer, keras.layers.Conv2D)
            and type(layer) is keras.layers.Conv2D
            and tuple(layer.kernel_size) == (1, 1)
            and tuple(layer.strides) == (1, 1)
            and tuple(layer.dilation_rate) == (1, 1)
        )


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
        InvalidArgumentError: bad arguments (named), a layer that is already
            pruned, or settings that do not fit a layer's weights.
        UnsupportedLayerError: a listed layer with nothing to prune.
        OrderError: a layer already clustered or quantized (prune first).
        Nothing is changed when an error is raised.

    Example:

    >>> import keras, collabopt.keras as co
    >>> model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4)])
    >>> pruned = co.prune_low_magnitude(model, co.ConstantSparsity(0.5, 0, frequency=1))
    >>> type(pruned.layers[0]).__name__
    'PruneLowMagnitude'
    """
    config = PruningConfig(pruning_schedule, block_size, block_pooling_type, pruning_policy, sparsity_m_by_n)
    return apply(to_prune, config, **kwargs)


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
    channels = pruned_channel_masks(model) if isinstance(model, keras.Model) else None
    stripped = strip(model, PRUNING.name)  # removes the channels itself when it leaves no wrapper
    if not channels or not any(is_channel_pruner(w) for layer in iter_layers(stripped) for w in wrapper_chain(layer)):
        return stripped
    # Filter pruning: remove its wrappers, then make the model physically smaller.
    stripped = map_layers(stripped, lambda layer: remove_wrappers(layer, is_channel_pruner), what="strip_pruning")
    return shrink_model(stripped, channels)


prune_scope = tfmot_scope


def pruning_step(model) -> int:
    """The pruning step of a model's pruning wrappers (they advance together)."""
    for layer in iter_layers(model):
        for wrapper in wrapper_chain(layer):
            if isinstance(wrapper, PruneLowMagnitude):
                return int(keras.ops.convert_to_numpy(wrapper.pruning_step))
    raise InvalidArgumentError(f"pruning_step: model '{model.name}' has no pruning wrappers.")
