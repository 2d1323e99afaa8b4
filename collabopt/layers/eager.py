"""Eager training calls of a wrapper: its transforms run as one traced function each.

A custom training loop without ``tf.function`` (an eager ``GradientTape``
step) runs every op of a wrapper's transforms one at a time, and each op
costs its Python dispatch: a fake-quantized activation's range update and
nudging are some twenty scalar ops, a clustered weight's assignment several
more. On MobileNetV2 that made an eager PCQAT step 1.9-2.7x a plain Keras
eager step (benchmarks/RESULTS.md). Here, after a wrapper's first
:data:`TRACE_AFTER_CALLS` eager training calls, its weight transform and
output transform are each traced once into a ``tf.function`` and called as
one op, which the tape differentiates as one op too; the base layer itself
still runs eagerly, as it would unwrapped. Results are the same values the
op-by-op path computes (the traced path is what ``fit`` runs). A layer
that runs in its TFLite form with a range for each tensor inside it (a
quantized LayerNormalization: eight internal ranges, some 200 ops op by op)
has its whole call traced instead (on the Transformer block of
``benchmarks/train_speed.py``, its two LayerNormalizations' internal ranges
took 45 of an eager QAT step's 185 ms).

Only eager training calls on TensorFlow take this path, outside any
distribution strategy: inference, export, traced code (``fit``, a user's
``tf.function``) and the other backends keep the plain call.
"""

from __future__ import annotations

import keras

from collabopt.fused import eager_thresholds

#: Set False to run eager training calls op by op (benchmarks compare both).
ENABLED = True

#: A wrapper's first eager training calls run op by op; the later ones take
#: the traced path. Tracing, differentiating and optimizing a wrapper's two
#: functions costs about ten op-by-op calls (MobileNetV2 alpha 0.35, PCQAT: a
#: first eager step of 24 s against 3 s op by op, then 0.8 s against 2.0 s),
#: so a loop of a few steps (a test, a calibration) never pays it, and a
#: long one pays it once.
TRACE_AFTER_CALLS = 10


def traced_eager_training(wrapper, training) -> bool:
    """Whether this call of ``wrapper`` with ``training`` takes the traced path (see the module); counts the call."""
    if not ENABLED or training is not True or keras.backend.backend() != "tensorflow":
        return False
    import tensorflow as tf

    if not tf.executing_eagerly() or tf.distribute.has_strategy():
        return False
    calls = wrapper.__dict__.get("_collabopt_eager_calls", 0) + 1
    object.__setattr__(wrapper, "_collabopt_eager_calls", calls)  # past Keras' attribute tracking
    return calls > TRACE_AFTER_CALLS


class _Transform:
    """One of a wrapper's training transforms as a callable object.

    TensorFlow counts a ``tf.function``'s retracing per Python code object,
    so closures of one function traced for many wrappers would read as one
    function retracing; each object is its own function to it.
    """

    def __init__(self, wrapper, kind: str):
        self.wrapper, self.kind = wrapper, kind

    def __call__(self, *tensors):
        if self.kind == "weights":
            return self.wrapper.effective_weights(True)
        if self.kind == "call":  # traced, so the call inside takes the plain path
            return self.wrapper.call(tensors[0], training=True)
        return self.wrapper.transform_outputs(tensors[0], True)


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
    """``{"weights"|"outputs"|"call": tf.function}`` traced so far for ``wrapper``'s eager training calls."""
    return dict(wrapper.__dict__.get("_collabopt_eager_functions") or {})


def effective_weights(wrapper) -> dict:
    """``wrapper.effective_weights(True)``, computed by one traced call."""
    with eager_thresholds():  # (traces on the first call)
        return _function(wrapper, "weights")()


def transformed_outputs(wrapper, outputs):
    """``wrapper.transform_outputs(outputs, True)``, computed by one traced call."""
    with eager_thresholds():
        return _function(wrapper, "outputs")(outputs)


def traced_call(wrapper, inputs):
    """``wrapper.call(inputs, training=True)``, computed by one traced call."""
    with eager_thresholds():
        return _function(wrapper, "call")(inputs)
