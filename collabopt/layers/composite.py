"""Composite layers: a subclassed layer that holds other layers and calls them.

Keras 3 code is mostly written as composite layers (a ``ResidualBlock`` that
creates Conv2D and BatchNormalization sublayers in ``__init__`` and calls them
in ``call``), and KerasHub backbones are Functional models of such layers
(``TransformerEncoder``, ``InvertedResidualBlock``, ...). collabopt reaches
the weights *inside* them without any change to the user's class:

* a composite's optimizable weights are those of its sublayers (recursively,
  through lists and dicts of sublayers), each addressed by its **attribute
  path** from the composite: ``conv1/kernel``, ``convs/0/kernel``,
  ``inner/conv1/kernel``, ``attention/query/kernel``. Attribute paths are
  stable: a copy, or the layer re-created from a ``.keras`` file, has the
  same attributes even though Keras gives its sublayers new names.
* the wrapper of a composite runs the composite with those weights replaced
  (:func:`collabopt.layers.call_with_weights`), so the composite's own
  ``call`` runs unchanged.

Sublayers are found by walking the composite's attributes (public Python
attributes; Keras tracks sublayers assigned to attributes, also inside lists
and dicts), since Keras exposes no public list of a layer's sublayers.
"""

from __future__ import annotations

import functools

import keras


def sublayer_items(layer) -> list[tuple[str, keras.layers.Layer]]:
    """The direct sublayers of ``layer`` as ``(attribute path, sublayer)``, in attribute order.

    A list or tuple attribute gives ``name/0``, ``name/1``, ...; a dict gives
    ``name/key``. A sublayer reachable under two attributes is listed once
    (under the first).

    >>> import keras
    >>> class Block(keras.layers.Layer):
    ...     def __init__(self, **kwargs):
    ...         super().__init__(**kwargs)
    ...         self.convs = [keras.layers.Conv2D(4, 3), keras.layers.Conv2D(4, 3)]
    ...         self.norm = keras.layers.BatchNormalization()
    >>> [path for path, _ in sublayer_items(Block())]
    ['convs/0', 'convs/1', 'norm']
    """
    found, seen = [], {id(layer)}

    def visit(path, value, depth):
        if isinstance(value, keras.layers.Layer):
            if id(value) not in seen:
                seen.add(id(value))
                found.append((path, value))
        elif depth < 2 and isinstance(value, (list, tuple)):
            for i, item in enumerate(value):
                visit(f"{path}/{i}", item, depth + 1)
        elif depth < 2 and isinstance(value, dict):
            for key, item in value.items():
                if isinstance(key, str) and "/" not in key:
                    visit(f"{path}/{key}", item, depth + 1)

    internal = _base_layer_attributes()
    for name, value in vars(layer).items():
        if name not in internal:
            visit(name, value, 0)
    return found


@functools.cache
def _base_layer_attributes() -> frozenset:
    # What Keras (and the backend: TensorFlow's trackable bookkeeping, whose
    # ``_self_unconditional_dependency_names`` lists every sublayer again)
    # keeps on every layer: the attributes of a bare Layer are never a user's sublayers.
    # (created once something is tracked, hence the probe sublayer).
    probe = keras.layers.Layer()
    probe.collabopt_probe = keras.layers.Identity()
    return frozenset(vars(probe)) - {"collabopt_probe"}


def is_composite(layer) -> bool:
    """True for a layer that holds sublayers (and is not a Keras model, whose graph collabopt rewrites itself)."""
    # Keras' own Wrapper layers (and collabopt's wrappers) hold one layer by
    # design; the registry knows what each of them is.
    if not isinstance(layer, keras.layers.Layer) or isinstance(layer, (keras.Model, keras.layers.Wrapper)):
        return False
    return bool(sublayer_items(layer))


def resolve_sublayer(layer, path: str):
    """The sublayer at the start of ``path`` and the rest of the path, or ``(None, path)`` if none matches.

    ``path`` is an attribute path as :func:`sublayer_items` gives it
    (``"inner/conv1/kernel"`` -> the ``inner`` sublayer and ``"conv1/kernel"``).
    """
    for prefix, sub in sublayer_items(layer):
        if path.startswith(prefix + "/"):
            return sub, path[len(prefix) + 1 :]
    return None, path
