"""Eager training calls of a wrapper: its transforms run as one traced function each.

A custom training loop without ``tf.function`` (an eager ``GradientTape``
step) runs every op of a wrapper's transforms one at a time, and each op
costs its Python dispatch: a fake-quantized activation's range update and
nudging are some twenty scalar ops, a clustered weight's assignment several
more. On MobileNetV2 that made an eager PCQAT step 1.9-2.7x a plain Keras
eager step (benchmarks/RESULTS.md). Here a wrapper's weight transform and
output transform are each traced once into a ``tf.function`` and called as
one op, which the tape differentiates as one op too; the base layer itself
still runs eagerly, as it would unwrapped. Results are the same values the
op-by-op path computes (the traced path is what ``fit`` runs).

Only eager training calls on TensorFlow take this path, outside any
distribution strategy: inference, export, traced code (``fit``, a user's
``tf.function``) and the other backends keep the plain call.
"""

from __future__ import annotations

import keras

#: Set False to run eager training calls op by op (benchmarks compare both).
ENABLED = True


def traced_eager_training(training) -> bool:
    """Whether a wrapper call with ``training`` takes the traced path (see the module)."""
    if not ENABLED or training is not True or keras.backend.backend() != "tensorflow":
        return False
    import tensorflow as tf

    return tf.executing_eagerly() and not tf.distribute.has_strategy()


class _Transform:
    """One of a wrapper's training transforms as a callable object.

    TensorFlow counts a ``tf.function``'s retracing per Python code object,
    so closures of one function traced for many wrappers would read as one
    function retracing; each object is its own function to it.
    """

    def __init__(self, wrapper, kind: str):
        self.wrapper, self.kind = wrapper, kind

    def __call__(self, *outputs):
        if self.kind == "weights":
            return self.wrapper.effective_weights(True)
        return self.wrapper.transform_outputs(outputs[0], True)


def _function(wrapper, kind: str):
    # Held by the wrapper itself (set past Keras' attribute tracking, which
    # would track the dict), so the traces go with it; a cache held
    # elsewhere would keep every traced wrapper alive through the graphs.
    functions = wrapper.__dict__.get("_collabopt_eager_functions")
    if functions is None:
        functions = {}
        object.__setattr__(wrapper, "_collabopt_eager_functions", functions)
    if kind not in functions:
        import tensorflow as tf

        functions[kind] = tf.function(_Transform(wrapper, kind), reduce_retracing=True, autograph=False)
    return functions[kind]


def traced_functions(wrapper) -> dict:
    """``{"weights"|"outputs": tf.function}`` traced so far for ``wrapper``'s eager training calls."""
    return dict(wrapper.__dict__.get("_collabopt_eager_functions") or {})


def effective_weights(wrapper) -> dict:
    """``wrapper.effective_weights(True)``, computed by one traced call."""
    return _function(wrapper, "weights")()


def transformed_outputs(wrapper, outputs):
    """``wrapper.transform_outputs(outputs, True)``, computed by one traced call."""
    return _function(wrapper, "outputs")(outputs)
