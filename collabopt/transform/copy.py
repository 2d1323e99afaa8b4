"""Copying a single layer with its weights."""

from __future__ import annotations

import keras


def copy_layer(layer: keras.layers.Layer) -> keras.layers.Layer:
    """A new layer of the same class, config, name and weight values.

    Uses only public serialization hooks: ``get_config``/``from_config`` for
    the structure, ``get_build_config``/``build_from_config`` to create the
    variables, and ``get_weights``/``set_weights`` for their values.
    """
    # safe_mode=False: the config comes from a live, in-memory layer the caller
    # already runs (e.g. a Lambda), not from an untrusted file.
    new = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(layer), safe_mode=False
    )
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
