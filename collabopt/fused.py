"""When a training step's weight or activation transform runs fused by XLA: on TensorFlow, for large tensors.

TensorFlow runs fake quantization, ``searchsorted`` and ``gather`` element by
element on one thread, and their gradients likewise: on ResNet50's 23.5
million weights they took longer than the convolutions. Compiled with XLA,
each transform becomes one multi-threaded pass over the tensor
(:mod:`collabopt.quantization.fake_quant`, :mod:`collabopt.clustering.fused`).
Small tensors keep the op-by-op path, whose cost is the launch of each op and
which XLA would only add a compilation to. Inference and export never take
the fused path.
"""

from __future__ import annotations

import keras
import numpy as np

#: Tensors with at least this many elements (unknown dimensions, e.g. the batch, count as 1) take the fused
#: training path on TensorFlow; below it TF's fake-quant op costs its launch, not its elements.
FUSED_MIN_ELEMENTS = 1 << 16


def fused_on_tensorflow(x) -> bool:
    """Whether a training-time fake quant (or range) of ``x`` takes the fused XLA path (TensorFlow, large tensors).

    TF's fake-quant ops and their gradients run element by element on one
    thread: on ResNet50's 23.5 million weights they took longer than the
    convolutions. Compiled with XLA, clip, round and the straight-through
    mask fuse into one multi-threaded pass over the tensor.
    """
    if not keras.backend.backend() == "tensorflow":
        return False
    return int(np.prod([d or 1 for d in x.shape])) >= FUSED_MIN_ELEMENTS
