"""Rewriting a model layer by layer without touching the original."""

from __future__ import annotations

import functools
from typing import Callable, Optional

import keras

from collabopt.errors import InvalidArgumentError
from collabopt.layers.copy import copy_layer, copy_layer_or_share
from collabopt.transform.plain_ops import merge_call, merge_layer_for

LayerFn = Callable[[keras.layers.Layer], Optional[keras.layers.Layer]]


def is_graph_model(model) -> bool:
    """True for Sequential and Functional models (whose layer graph is known)."""
    return isinstance(model, keras.Sequential) or _is_functional(model)


def _is_functional(model) -> bool:
    return isinstance(model, _functional_class()) and not isinstance(model, keras.Sequential)


@functools.cache
def _functional_class() -> type:
    # Keras exports no public name for the Functional class; `keras.Model`
    # called with inputs and outputs returns an instance of it, so its type
    # is the class to test against (without importing keras.src).
    inputs = keras.Input((1,))
    return type(keras.Model(inputs, inputs))


def is_opaque_model(layer) -> bool:
    """True for a subclassed model/layer whose inner layers cannot be rewritten."""
    return isinstance(layer, keras.Model) and not is_graph_model(layer)


def map_layers(
    model, fn: LayerFn, *, what: str = "rewrite", merge_ops_as_layers: bool = False, replaces=None, reuse_layers: bool = False
):
    """Returns a copy of ``model`` with ``fn`` applied to every layer.

    ``fn`` receives a *copy* of each layer (weights included) and returns its
    replacement, or ``None`` to keep the copy. With ``replaces``, a predicate
    on the original layer, ``fn`` receives the *original* of each layer for
    which it is true and must return a new layer built from it without
    changing it (copying such a layer first would be wasted); other layers
    are copied and kept. Sequential, Functional (any
    number of inputs and outputs, residual connections, layers shared between
    call sites — ``fn`` is called once per shared layer) and nested models (a
    Sequential or Functional used as a layer, rewritten recursively) are
    supported. Layer names and weights are kept; ``model`` itself is never
    modified.

    Args:
        model: A built ``keras.Sequential`` or Functional model, or a single
            layer.
        fn: ``layer -> replacement layer or None``.
        what: Name of the operation for error messages.
        merge_ops_as_layers: Rebuild plain two-tensor element-wise operations
            of a Functional graph (``a + b``, ``a * b``, ``keras.ops.maximum``)
            as the equivalent ``keras.layers`` merge layer (named as the
            operation), which ``fn`` then receives like any other layer.
        replaces: See above.
        reuse_layers: ``fn`` receives, and the result keeps, ``model``'s own
            layers instead of copies. Only for a model the caller built
            itself and then drops (an intermediate of a multi-pass rewrite):
            copying every layer, variables and all, is most of a pass.

    Returns:
        The rewritten model (or layer).

    Raises:
        ValueError: for a subclassed model, whose layer graph is unknown; the
            message explains the alternative (apply the wrapper to layers
            where the model builds them).

    Example:

    >>> import keras
    >>> from collabopt.transform import map_layers
    >>> m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    >>> m2 = map_layers(m, lambda layer: None)   # a copy with the same weights
    >>> [l.name for l in m2.layers] == [l.name for l in m.layers]
    True
    """
    if not isinstance(model, keras.Model):
        if isinstance(model, keras.layers.Layer):
            if replaces is not None:
                return fn(model) if replaces(model) else copy_layer(model)
            copy = copy_layer(model)
            result = fn(copy)
            return copy if result is None else result
        raise InvalidArgumentError(f"{what}: expected a keras.Model or keras.layers.Layer, got {model!r}.")
    if not is_graph_model(model):
        raise InvalidArgumentError(
            f"{what}: model '{model.name}' is a subclassed keras.Model "
            f"({type(model).__name__}); its layer graph is not known, so it cannot be "
            "rewritten. Apply the collabopt wrapper to individual layers where the model "
            "builds them (e.g. `self.conv = prune_low_magnitude(keras.layers.Conv2D(...))` "
            "in __init__), or rebuild it as a Sequential or Functional model."
        )
    if not model.built:
        raise InvalidArgumentError(
            f"{what}: model '{model.name}' is not built. Give it an Input (or call it on a "
            "batch) before rewriting it."
        )

    def clone_function(layer):
        if not isinstance(layer, keras.layers.Layer):
            # A plain operation in a Functional graph (``x + 3.0``, as in
            # MobileNetV3's hard-sigmoid): stateless, shared as it is.
            if merge_ops_as_layers and merge_layer_for(layer) is not None:
                return merge_call(layer, lambda merge: fn(merge) or merge)
            return layer
        if replaces is not None:
            return fn(layer) if replaces(layer) else (layer if reuse_layers else copy_layer_or_share(layer))
        copy = layer if reuse_layers else copy_layer_or_share(layer)
        result = fn(copy)
        return copy if result is None else result

    return keras.models.clone_model(model, clone_function=clone_function, recursive=True)


def iter_layers(model):
    """Every leaf layer of a model (no InputLayers), descending into nested Sequential/Functional models."""
    if not isinstance(model, keras.Model) or not is_graph_model(model):
        yield model
        return
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        if isinstance(layer, keras.Model) and is_graph_model(layer):
            yield from iter_layers(layer)
        else:
            yield layer
