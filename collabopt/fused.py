"""When a training step's weight or activation transform runs fused by XLA: on TensorFlow, for large tensors.

TensorFlow runs fake quantization, ``searchsorted`` and ``gather`` element by
element on one thread, and their gradients likewise: on ResNet50's 23.5
million weights they took longer than the convolutions. Compiled with XLA,
each transform becomes one multi-threaded pass over the tensor
(:mod:`collabopt.quantization.fake_quant`, :mod:`collabopt.clustering.fused`).
Small tensors keep the op-by-op path, whose cost is the launch of each op,
with one exception: a cluster assignment is several ops (compare, gather,
index) per weight, so inside a traced step (``fit``, a ``tf.function`` loop)
every clustered weight takes the fused path; XLA compiles each kernel once,
on the step's first run (measured on MobileNetV2 alpha 0.35, 96x96, batch 32:
the first ``fit`` step no slower; clustering's steps 1.15x -> 0.98x of plain
Keras in one run, 1.06x -> 1.04x in another). Eager code compiles a kernel for every new shape it meets, so there
only large tensors take it. Inference and export never take the fused path.
"""

from __future__ import annotations

import contextlib
import threading

import keras
import numpy as np

#: Tensors with at least this many elements (unknown dimensions, e.g. the batch, count as 1) take the fused
#: training path on TensorFlow; below it TF's fake-quant op costs its launch, not its elements. (Each XLA kernel
#: also costs resident memory: on MobileNetV2 alpha 0.35, 96x96, QAT's peak is 795 MiB with none, 950 with these.)
FUSED_MIN_ELEMENTS = 1 << 16

#: Inside a traced step, clustered weights of at least this many elements take the fused path (all of them).
TRACED_WEIGHT_MIN_ELEMENTS = 1


_thresholds = threading.local()


@contextlib.contextmanager
def eager_thresholds():
    """Inside: traced code chooses as eager code does (large tensors only).

    For a function traced for an eager caller (:mod:`collabopt.layers.eager`),
    which would otherwise compile an XLA kernel for every small weight and
    activation shape on its first call.
    """
    previous = getattr(_thresholds, "eager", False)
    _thresholds.eager = True
    try:
        yield
    finally:
        _thresholds.eager = previous


def fused_on_tensorflow(x, traced_min_elements: int | None = None) -> bool:
    """Whether a training-time transform of ``x`` (fake quant, range, cluster assignment) takes the fused XLA path.

    On TensorFlow, for tensors of at least :data:`FUSED_MIN_ELEMENTS`
    elements; inside a traced function, of at least ``traced_min_elements``
    where given (see the module).
    """
    if not keras.backend.backend() == "tensorflow":
        return False
    import tensorflow as tf

    threshold = FUSED_MIN_ELEMENTS
    if traced_min_elements is not None and not tf.executing_eagerly() and not getattr(_thresholds, "eager", False):
        threshold = traced_min_elements
    return int(np.prod([d or 1 for d in x.shape])) >= threshold


class _KernelFunction:
    """A kernel's Python function as a callable object, so each :func:`xla_kernel` signature is its own function.

    TensorFlow counts a ``tf.function``'s traces per Python code object and
    warns ("N out of the last M calls ... triggered tf.function retracing")
    once five come close together; a kernel traced for many weight shapes
    would read as one function retracing.
    """

    def __init__(self, fn):
        self.fn = fn

    def __call__(self, *args):
        return self.fn(*args)


def _signature(value):
    shape = getattr(value, "shape", None)
    if shape is None:
        return value
    try:
        dims = tuple(shape)
    except ValueError:  # a tensor of unknown rank
        dims = None
    return dims, str(getattr(value, "dtype", ""))


def xla_kernel(fn):
    """``fn`` compiled by XLA (``tf.function(jit_compile=True)``), one traced function per input signature.

    XLA compiles a kernel for every input shape anyway; holding one function
    per shape (and dtype) means each is traced once, so a model with many
    weight shapes raises no retracing warning. Arguments are tensors (or
    hashable Python values, part of the signature). The returned callable's
    ``tracing_count()`` is the number of traces over all signatures.

    >>> import tensorflow as tf
    >>> double = xla_kernel(lambda x: 2.0 * x)
    >>> [float(double(tf.ones(n))[0]) for n in (2, 3, 4, 5, 6, 7)]
    [2.0, 2.0, 2.0, 2.0, 2.0, 2.0]
    >>> double.tracing_count()
    6
    """
    import tensorflow as tf

    functions: dict = {}

    def call(*args):
        key = tuple(_signature(a) for a in args)
        function = functions.get(key)
        if function is None:
            function = functions[key] = tf.function(_KernelFunction(fn), jit_compile=True, autograph=False)
        return function(*args)

    call.tracing_count = lambda: sum(f.experimental_get_tracing_count() for f in functions.values())
    return call
