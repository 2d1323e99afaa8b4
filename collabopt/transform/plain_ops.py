"""Plain element-wise operations of a Functional graph, as the merge layers that compute the same.

A Functional model written with operators (ConvNeXt's residual ``inputs + x``,
a gate ``x * g``) holds ``keras.ops`` operations, not layers. They compute the
same as ``keras.layers.Add``/``Multiply``/..., but a rewrite that works on
layers (a quantizer on each output, TFLite's ranges) does not see them; the
quantizing rewrite therefore turns the two-tensor ones into those layers.
"""

from __future__ import annotations

import functools

import keras


@functools.cache
def _merge_layer_by_op_type() -> dict:
    # Keras exports the operation classes under no public name; applying each
    # public op to two symbolic tensors yields an instance, whose type is the
    # class a Functional graph holds (without importing keras.src).
    a, b = keras.Input((1,)), keras.Input((1,))
    pairs = (
        (keras.ops.add, keras.layers.Add),
        (keras.ops.subtract, keras.layers.Subtract),
        (keras.ops.multiply, keras.layers.Multiply),
        (keras.ops.maximum, keras.layers.Maximum),
        (keras.ops.minimum, keras.layers.Minimum),
    )
    return {type(op(a, b)._keras_history.operation): layer for op, layer in pairs}


def merge_layer_for(operation) -> type | None:
    """The ``keras.layers`` merge class computing what a plain ``operation`` does, or None.

    Example:

    >>> import keras
    >>> from collabopt.transform.plain_ops import merge_layer_for
    >>> a, b = keras.Input((3,)), keras.Input((3,))
    >>> merge_layer_for((a + b)._keras_history.operation).__name__
    'Add'
    >>> merge_layer_for(keras.layers.Dense(2)) is None
    True
    """
    return _merge_layer_by_op_type().get(type(operation))


def _is_tensor(x) -> bool:
    return isinstance(x, keras.KerasTensor)


def merge_call(operation, make_layer):
    """A callable standing for ``operation`` in a graph being rebuilt.

    Called on two symbolic tensors of the same rank, it builds the merge layer
    (``make_layer(layer)`` may wrap it) and applies it to ``[x1, x2]``. A call
    with a constant operand (``x + 3.0``) or tensors of different ranks keeps
    the plain operation, which computes that directly.
    """
    layer_class = merge_layer_for(operation)

    def call(*args, **kwargs):
        if (
            layer_class is not None
            and not kwargs
            and len(args) == 2
            and all(_is_tensor(a) for a in args)
            and len(args[0].shape) == len(args[1].shape)
            and args[0].dtype == args[1].dtype
        ):
            layer = make_layer(layer_class(name=operation.name, dtype=args[0].dtype))
            return layer(list(args))
        return operation(*args, **kwargs)

    return call
