"""Counting multiply-accumulates (MACs) of a model's layers."""

from __future__ import annotations

import keras

from collabopt.layers import base_layer, support_fact
from collabopt.layers.builtin import no_macs
from collabopt.transform import iter_layers


def _shape(layer):
    build = layer.get_build_config() or {}
    shape = build.get("input_shape")
    if shape is None or isinstance(shape, (list,)) and shape and isinstance(shape[0], (list, tuple)):
        return None
    return tuple(shape)


def layer_macs(layer) -> int:
    """Multiply-accumulates of one call of ``layer`` on one example (0 for layers without kernels).

    The formula is the layer class's record (``LayerSupport.macs``; Keras'
    layers in :mod:`collabopt.layers.builtin`): conv: output positions x
    kernel size x input channels / groups x filters; depthwise: output
    positions x kernel size x channels x multiplier; separable: its depthwise
    part plus a 1x1 conv; Dense: inputs x units per position; transposed
    conv: input positions x kernel size x in x out.
    Wrapped layers are counted by their base layer (a filter-pruned but not
    yet stripped layer counts its full size).
    """
    base = base_layer(layer)
    formula = support_fact(base, "macs")  # the layer's record (collabopt.layers.builtin for Keras' layers)
    shape = _shape(base)
    if formula is None or shape is None or None in shape[1:]:
        return 0
    try:
        out = tuple(base.compute_output_shape(shape))
    except NotImplementedError:  # a custom layer: trace its call
        out = tuple(base.compute_output_spec(keras.KerasTensor(shape)).shape)
    return int(formula(base, shape, out))


def count_macs(model) -> int:
    """Multiply-accumulates of one forward pass of ``model`` on one example (kernels of Conv, Dense, depthwise...).

    Nested models are counted through; a shared layer is counted once.

    Example:

    >>> import keras
    >>> from collabopt.filter_pruning import count_macs
    >>> m = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(4, 3), keras.layers.Flatten(), keras.layers.Dense(2)])
    >>> count_macs(m)   # 6*6*9*1*4 + 144*2
    1584
    """
    return int(sum(layer_macs(layer) for layer in iter_layers(model)))


def uncounted_layers(model) -> list[str]:
    """Names of the layers whose multiply-accumulates :func:`count_macs` cannot count (it counts them as 0).

    These are layers holding a kernel (a weight of rank >= 2) of a kind
    :func:`layer_macs` does not know (e.g. LSTM, MultiHeadAttention, a
    subclassed model), or of a known kind whose input shape is not fully
    known (a Conv2D on images of any size). Embedding lookups do no
    multiply-accumulates and are not listed. An empty list means
    :func:`count_macs` is exact for ``model``.

    Example:

    >>> import keras
    >>> from collabopt.filter_pruning.macs import uncounted_layers
    >>> m = keras.Sequential([keras.Input((5, 3)), keras.layers.LSTM(4, name="lstm"), keras.layers.Dense(2)])
    >>> uncounted_layers(m)
    ['lstm']
    """
    out = []
    for layer in iter_layers(model):
        base = base_layer(layer)
        if support_fact(base, "macs") is no_macs or layer_macs(layer):
            continue
        if any(len(w.shape) >= 2 for w in base.weights):
            out.append(base.name)
    return out
