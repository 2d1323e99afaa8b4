"""Copying a single layer with its weights."""

from __future__ import annotations

import keras


def copy_layer(layer: keras.layers.Layer) -> keras.layers.Layer:
    """A new layer of the same class, config, name and weight values.

    Uses only public serialization hooks: ``get_config``/``from_config`` for
    the structure, ``get_build_config``/``build_from_config`` to create the
    variables, and ``get_weights``/``set_weights`` for their values.
    """
    # `from_config` of the live class (as keras.models.clone_model does), with
    # the classes of the layer and of any layers it wraps in scope, so custom
    # layers need not be registered to be copied in memory.
    classes, current = {}, layer
    while current is not None:
        classes[type(current).__name__] = type(current)
        current = getattr(current, "layer", None) if isinstance(current, keras.layers.Wrapper) else None
    with keras.saving.custom_object_scope(classes):
        new = type(layer).from_config(layer.get_config())
    if layer.built:
        build_config = layer.get_build_config()
        if build_config and not new.built:
            new.build_from_config(build_config)
        if not new.built:
            raise ValueError(
                f"layer '{layer.name}' ({type(layer).__name__}) could not be copied: it does "
                "not record its build shape (get_build_config). Build it by calling it on an input."
            )
        new.set_weights(layer.get_weights())
    return new
