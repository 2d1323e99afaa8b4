"""Copying a single layer with its weights."""

from __future__ import annotations

import keras
from collabopt.errors import InvalidArgumentError


def copy_layer(layer: keras.layers.Layer, dtype: str | None = None) -> keras.layers.Layer:
    """A new layer of the same class, config, name and weight values.

    ``dtype``: a dtype policy name for the copy (and any layer it wraps)
    instead of the layer's own, e.g. ``"float32"`` for a layer trained under
    ``mixed_float16``, whose variables are float32 already.

    Uses only public serialization hooks: ``get_config``/``from_config`` for
    the structure, ``get_build_config``/``build_from_config`` to create the
    variables, and ``get_weights``/``set_weights`` for their values. A
    collabopt wrapper is rebuilt around a copy of the layer it wraps
    (``from_config_with_layer``), so a Lambda inside is never deserialized.
    """
    if isinstance(layer, keras.layers.Wrapper) and hasattr(type(layer), "from_config_with_layer"):
        return _copy_wrapper(layer, dtype)
    # `from_config` of the live class (as keras.models.clone_model does), with
    # the classes of the layer and of any layers it wraps in scope, so custom
    # layers need not be registered to be copied in memory.
    classes, current = {}, layer
    while current is not None:
        classes[type(current).__name__] = type(current)
        current = getattr(current, "layer", None) if isinstance(current, keras.layers.Wrapper) else None
    config = layer.get_config()
    if dtype is not None:
        config = _with_dtype(config, dtype)
    with keras.saving.custom_object_scope(classes):
        new = type(layer).from_config(config)
    if layer.built:
        build_config = layer.get_build_config()
        if build_config and not new.built:
            new.build_from_config(build_config)
        if not new.built:
            raise InvalidArgumentError(
                f"layer '{layer.name}' ({type(layer).__name__}) could not be copied: it does "
                "not record its build shape (get_build_config). Build it by calling it on an input."
            )
        new.set_weights(layer.get_weights())
    return new


def _with_dtype(config: dict, dtype: str) -> dict:
    """``config`` (and the configs of layers nested in it, e.g. a Keras Wrapper's) with dtype policy ``dtype``."""
    config = dict(config)
    if "dtype" in config:
        config["dtype"] = dtype
    nested = config.get("layer")
    if isinstance(nested, dict) and isinstance(nested.get("config"), dict):
        config["layer"] = {**nested, "config": _with_dtype(nested["config"], dtype)}
    return config


def copy_layer_or_share(layer: keras.layers.Layer, dtype: str | None = None) -> keras.layers.Layer:
    """A copy of ``layer``, or ``layer`` itself when it holds no weights and cannot be rebuilt from its config.

    A ``Lambda`` (or a custom weightless layer whose config holds Python code)
    is not rebuilt from its config, since Keras refuses to deserialize code in
    safe mode, and a layer without weights has no state to copy: the new model
    shares it, and the original is left unchanged.
    """
    if not layer.weights and (isinstance(layer, keras.layers.Lambda) or not _rebuildable(layer)):
        return layer
    return copy_layer(layer, dtype)


def _rebuildable(layer) -> bool:
    try:
        copy_layer(layer)
    except Exception:  # any failure of a user layer's from_config: share it instead
        return False
    return True


def held_classes_in_scope(wrapper):
    """A custom-object scope with the classes of the configurable objects ``wrapper`` holds.

    A wrapper rebuilt in memory from its own config (a copy, or the same
    state around a new inner layer) deserializes the objects it holds, e.g.
    a user's QuantizeConfig subclass; their live classes are in scope, so
    they need not be registered (only loading a file needs that).
    """
    held = {
        type(v).__name__: type(v)
        for v in vars(wrapper).values()
        if hasattr(v, "get_config") and not isinstance(v, (keras.layers.Layer, keras.Variable))
    }
    return keras.saving.custom_object_scope(held)


def _copy_wrapper(wrapper, dtype=None):
    config = wrapper.get_config()
    config.pop("layer")
    if dtype is not None:
        config["dtype"] = dtype
    with held_classes_in_scope(wrapper):
        new = type(wrapper).from_config_with_layer(config, copy_layer_or_share(wrapper.layer, dtype))
    if wrapper.built:
        build_config = wrapper.get_build_config()
        if build_config and not new.built:
            new.build_from_config(build_config)
        new.set_weights(wrapper.get_weights())
    return new
