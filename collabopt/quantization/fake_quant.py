"""Fake quantization with the semantics of TFLite's integer kernels.

The ops are TensorFlow's ``fake_quant_with_min_max_vars`` (and its
per-channel form), which the TFLite converter reads to quantize a QAT model
with exactly the trained ranges.
"""

from __future__ import annotations

import tensorflow as tf
from keras import ops
from collabopt.errors import InvalidArgumentError


def _nudge_range(lo, hi):
    # TFLite needs 0 exactly representable: the range always includes 0.
    return ops.minimum(lo, 0.0), ops.maximum(hi, 0.0)


def fake_quant(x, lo, hi, num_bits: int, narrow_range: bool):
    """Per-tensor fake quantization of ``x`` to ``num_bits`` on ``[lo, hi]``."""
    lo, hi = _nudge_range(ops.stop_gradient(lo), ops.stop_gradient(hi))
    return tf.quantization.fake_quant_with_min_max_vars(x, lo, hi, num_bits=num_bits, narrow_range=narrow_range)


def fake_quant_per_channel(x, lo, hi, channel_axes, num_bits: int, narrow_range: bool):
    """Per-channel fake quantization along ``channel_axes`` (``lo``/``hi``: one value per channel).

    Channels on the last axis are quantized in place; the two trailing axes
    of a depthwise kernel (in, multiplier) are merged by a reshape; any other
    axis is moved last and back. These are the forms the TFLite converter
    folds into per-channel int8 weights.
    """
    lo, hi = _nudge_range(ops.stop_gradient(lo), ops.stop_gradient(hi))
    rank = len(x.shape)
    axes = tuple(sorted(a % rank for a in channel_axes))
    fq = tf.quantization.fake_quant_with_min_max_vars_per_channel
    if axes == (rank - 1,):
        return fq(x, lo, hi, num_bits=num_bits, narrow_range=narrow_range)
    if axes == (rank - 2, rank - 1):
        shape = tuple(x.shape)
        merged = ops.reshape(x, shape[:-2] + (shape[-2] * shape[-1],))
        return ops.reshape(fq(merged, lo, hi, num_bits=num_bits, narrow_range=narrow_range), shape)
    if len(axes) == 1:
        perm = [a for a in range(rank) if a != axes[0]] + [axes[0]]
        inverse = [perm.index(a) for a in range(rank)]
        moved = ops.transpose(x, perm)
        return ops.transpose(fq(moved, lo, hi, num_bits=num_bits, narrow_range=narrow_range), inverse)
    raise InvalidArgumentError(f"per-channel quantization over axes {channel_axes} of a rank-{rank} weight is not supported.")
