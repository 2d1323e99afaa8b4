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

import contextlib
import dataclasses
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


def leaf_sublayers(layer, is_leaf) -> list[tuple[str, keras.layers.Layer]]:
    """Every sublayer of ``layer`` for which ``is_leaf`` holds, found through the ones it does not hold for, with paths."""
    found = []
    for path, sub in sublayer_items(layer):
        if is_leaf(sub):
            found.append((path, sub))
        else:
            found.extend((f"{path}/{inner}", leaf) for inner, leaf in leaf_sublayers(sub, is_leaf))
    return found


@contextlib.contextmanager
def redirected_calls(redirects):
    """While inside, each ``(layer, wrap)`` of ``redirects`` runs ``wrap(call)`` in place of its current ``call``.

    The ``call`` is replaced on the instance (Keras' ``__call__`` runs
    ``self.call``; a composite calls its sublayers itself, so there is no
    graph edge to rewrite) and restored on exit, also after an error.
    """
    saved = []
    try:
        for layer, wrap in redirects:
            previous = layer.__dict__.get("call", _MISSING)
            current = previous if previous is not _MISSING else type(layer).call.__get__(layer)
            object.__setattr__(layer, "call", functools.wraps(current)(wrap(current)))
            saved.append((layer, previous))
        yield
    finally:
        for layer, previous in reversed(saved):
            if previous is _MISSING:
                object.__delattr__(layer, "call")
            else:
                object.__setattr__(layer, "call", previous)


_MISSING = object()


#: The suffix of a hook on a sublayer's first input rather than on its outputs (``"conv2:input"``).
INPUT = ":input"


def sublayer_output_hooks(layer, hooks: dict):
    """While inside, each sublayer of ``layer`` at path ``p`` (from :func:`leaf_sublayers`) returns ``hooks[p](outputs)``.

    A key ``p + ":input"`` transforms the sublayer's first input instead.
    """

    def then(fn):
        return lambda call: lambda *args, **kwargs: fn(call(*args, **kwargs))

    def before(fn):
        return lambda call: lambda first, *args, **kwargs: call(fn(first), *args, **kwargs)

    return redirected_calls(
        [
            (sublayer_at(layer, path.removesuffix(INPUT)), before(fn) if path.endswith(INPUT) else then(fn))
            for path, fn in hooks.items()
        ]
    )


def sublayer_at(layer, path: str):
    """The sublayer of ``layer`` at attribute path ``path`` (as :func:`leaf_sublayers` gives it); KeyError if none."""
    current, rest = layer, path
    while True:
        for prefix, sub in sublayer_items(current):
            if rest == prefix:
                return sub
            if rest.startswith(prefix + "/"):
                current, rest = sub, rest[len(prefix) + 1 :]
                break
        else:
            raise KeyError(f"layer '{layer.name}' has no sublayer at '{path}'")


@dataclasses.dataclass
class SublayerCall:
    """One call a composite layer made to a leaf sublayer in a traced call (tensors by ``id()``)."""

    path: str
    layer: keras.layers.Layer
    inputs: set
    first_input: set
    outputs: set


def trace_sublayer_calls(layer, args, kwargs, is_leaf):
    """The calls ``layer`` makes to its leaf sublayers when called on ``args``/``kwargs`` (symbolic inputs).

    Returns ``(calls, input_ids, output_ids)``: the :class:`SublayerCall` s in
    call order, and the ids of the tensors ``layer`` receives and returns; a
    sublayer whose output is another's input feeds it.
    """
    calls, inputs, outputs = [], set(), set()

    def ids(structure):
        return {id(t) for t in keras.tree.flatten(structure) if t is not None and hasattr(t, "shape")}

    def recording(path, sub):
        def wrap(call):
            def record(*args, **kwargs):
                out = call(*args, **kwargs)
                calls.append(SublayerCall(path, sub, ids((args, kwargs)), ids(args[:1]), ids(out)))
                return out

            return record

        return wrap

    def layer_boundary(call):
        def record(*args, **kwargs):
            inputs.update(ids((args, kwargs)))
            out = call(*args, **kwargs)
            outputs.update(ids(out))
            return out

        return record

    redirects = [(sub, recording(path, sub)) for path, sub in leaf_sublayers(layer, is_leaf)]
    with redirected_calls(redirects + [(layer, layer_boundary)]):
        layer(*args, **kwargs)
    return calls, inputs, outputs
