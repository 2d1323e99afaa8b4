"""One record per layer class: everything a technique or the exporter needs to know about it.

A :class:`LayerSupport` holds a class's facts: its optimizable weights, its
roles (pass-through, same-scale, BN-fold target, channel behaviour), how to
count its multiply-accumulates, the bit widths its weights may take, and its
export form (how quantization and int8 export run it as the ops TFLite
executes). Every consumer reads the record (:func:`support_fact`); no
other module keeps a list of layer classes by role. The built-in classes'
records are all in :mod:`collabopt.layers.builtin`; a custom layer joins with
one :func:`register_layer_support` (or :func:`collabopt.layers.register_layer`)
call.

Facts are looked up along the class's MRO (a Conv2D subclass has Conv2D's
weights and roles), except the export form, which runs the layer's
computation again op by op and so holds only for the exact class it was
registered for (a subclass may change ``call``).

Example:

>>> import keras
>>> from collabopt.layers import LayerRoles, WeightSpec, layer_support, register_layer_support
>>> class Scale(keras.layers.Layer):
...     def build(self, shape):
...         self.w = self.add_weight(shape=(shape[-1], shape[-1]), name="w")
...     def call(self, x):
...         return x @ self.w
>>> register_layer_support(
...     Scale, weights=[WeightSpec("w", (-1,), 0)], roles=LayerRoles(output_weight="w"),
...     macs=lambda layer, input_shape, output_shape: input_shape[-1] * output_shape[-1],
... )
>>> layer_support(Scale).roles.output_weight
'w'
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Callable

import keras

from collabopt.errors import InvalidArgumentError
from collabopt.scoped import restored_entry


@dataclasses.dataclass(frozen=True)
class ExportForm:
    """How quantization and int8 export run a layer class as the ops TFLite executes.

    Attributes:
        run: ``run(layer, inputs, weights, between) -> outputs``: what the
            layer's ``call`` computes up to its activation, op by op;
            ``between(tensor, index)`` sees each internal tensor.
        expanded: Weights whose execution form has rank 4 (a 1-D conv's kernel).
        always: Run in this form under quantization always (otherwise only
            when the layer's activation is split off, or a Dense runs over a sequence).
        internal: ``layer -> names`` of the tensors TFLite computes inside it,
            between the ops it becomes (each gets a range).
        identity_after: ``layer -> names`` of internal tensors the next op
            leaves unchanged given the current weights (``* 1``, ``+ 0``).
        post_training: Post-training integer export runs the layer in this
            form too (Keras' LayerNormalization goes through a NEG op that
            TFLite keeps in float).
    """

    run: Callable
    expanded: tuple[str, ...] = ()
    always: bool = False
    internal: Callable | None = None
    identity_after: Callable | None = None
    post_training: bool = False


@dataclasses.dataclass(frozen=True)
class LayerSupport:
    """Every fact collabopt keeps about one layer class (None: not declared here; looked up on its bases).

    Attributes:
        weights: Its optimizable weights (a tuple of
            :class:`~collabopt.layers.WeightSpec`), or a function of the layer
            giving them (when they depend on its configuration).
        roles: Its :class:`~collabopt.layers.LayerRoles`.
        macs: ``macs(layer, input_shape, output_shape) -> int``:
            multiply-accumulates of one call on one example (shapes with the
            batch axis).
        weight_bits: ``(fewest, most)`` bits its weights may be quantized to
            (an Embedding's table stays 8-bit: TFLite's int8 GATHER has no
            narrower form).
        export: Its :class:`ExportForm` (exact class only).
    """

    weights: tuple | Callable | None = None
    roles: object | None = None
    macs: Callable | None = None
    weight_bits: tuple[int, int] | None = None
    export: ExportForm | None = None


_SUPPORT: dict[type, LayerSupport] = {}


def register_layer_support(layer_class: type, **facts) -> None:
    """Declares facts of ``layer_class`` (and its subclasses): any :class:`LayerSupport` field, by name.

    Facts given replace the class's own; the others stay as they were.
    """
    if not (isinstance(layer_class, type) and issubclass(layer_class, keras.layers.Layer)):
        raise InvalidArgumentError(f"register_layer_support expects a keras.layers.Layer subclass; received {layer_class!r}.")
    fields = {f.name for f in dataclasses.fields(LayerSupport)}
    unknown = sorted(set(facts) - fields)
    if unknown:
        raise InvalidArgumentError(
            f"register_layer_support({layer_class.__name__}): unknown facts {unknown}; accepted: {sorted(fields)}."
        )
    if "weights" in facts and facts["weights"] is not None and not callable(facts["weights"]):
        facts["weights"] = tuple(facts["weights"])
    if facts.get("export") is not None and not isinstance(facts["export"], ExportForm):
        raise InvalidArgumentError(
            f"register_layer_support({layer_class.__name__}): export must be an ExportForm; received {facts['export']!r}."
        )
    _SUPPORT[layer_class] = dataclasses.replace(_SUPPORT.get(layer_class, LayerSupport()), **facts)


@contextlib.contextmanager
def layer_support_registered(layer_class: type, **facts):
    """:func:`register_layer_support` for the duration of a ``with`` block; the class's record is restored after.

    For tests and experiments: nothing leaks into code that runs later.

    >>> import keras
    >>> from collabopt.layers import LayerRoles, layer_roles
    >>> class Twice(keras.layers.Layer):
    ...     def call(self, x):
    ...         return 2 * x
    >>> with layer_support_registered(Twice, roles=LayerRoles(passthrough=True)):
    ...     layer_roles(Twice).passthrough
    True
    >>> layer_roles(Twice).passthrough
    False
    """
    with restored_entry(_SUPPORT, layer_class):
        register_layer_support(layer_class, **facts)
        yield


def support_fact(layer, name: str):
    """Fact ``name`` of ``layer`` (a layer or class): its class's, else its nearest base's that declares it; None if none.

    ``export`` is its exact class's only.
    """
    cls = layer if isinstance(layer, type) else type(layer)
    if name == "export":
        record = _SUPPORT.get(cls)
        return record.export if record is not None else None
    for klass in cls.__mro__:
        record = _SUPPORT.get(klass)
        if record is not None and getattr(record, name) is not None:
            return getattr(record, name)
    return None


def layer_support(layer) -> LayerSupport:
    """The facts that hold for ``layer`` (a layer or class), each looked up as :func:`support_fact` does."""
    return LayerSupport(**{f.name: support_fact(layer, f.name) for f in dataclasses.fields(LayerSupport)})


def supported_classes(**wanted) -> tuple[type, ...]:
    """Registered classes whose own record has the given facts, e.g. ``supported_classes(roles=...)``; for tests and docs."""
    return tuple(c for c, r in _SUPPORT.items() if all(getattr(r, k) == v for k, v in wanted.items()))


def optimizable_layer_names() -> list[str]:
    """Names of the registered classes with optimizable weights of their own (for messages)."""
    return sorted(c.__name__ for c, record in _SUPPORT.items() if record.weights)


def registered_records() -> dict[type, LayerSupport]:
    """A copy of every class's own record."""
    return dict(_SUPPORT)
