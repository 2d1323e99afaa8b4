"""Fake quantization with the semantics of TFLite's integer kernels.

On TensorFlow the ops are TensorFlow's ``fake_quant_with_min_max_vars`` (and
its per-channel form), which the TFLite converter reads to quantize a QAT
model with exactly the trained ranges. On JAX and PyTorch they are
``keras.quantizers.fake_quant_with_min_max_vars``: the same nudged grid and
straight-through gradients in ``keras.ops`` (export then runs in a
TensorFlow process, on the saved model).
"""

from __future__ import annotations

import functools

import keras
from keras import ops

from collabopt.errors import InvalidArgumentError
from collabopt.fused import fused_on_tensorflow, xla_kernel


def _on_tensorflow() -> bool:
    return keras.backend.backend() == "tensorflow"


def _per_tensor_op(x, lo, hi, num_bits, narrow_range):
    if _on_tensorflow():
        import tensorflow as tf

        return tf.quantization.fake_quant_with_min_max_vars(x, lo, hi, num_bits=num_bits, narrow_range=narrow_range)
    return keras.quantizers.fake_quant_with_min_max_vars(x, lo, hi, num_bits=num_bits, narrow_range=narrow_range)


def _per_channel_op(x, lo, hi, num_bits, narrow_range, final_range):
    """Per-channel fake quantization over the last axis."""
    if not _on_tensorflow():
        # (quantization_range never gives an empty range, which keras.quantizers would divide by)
        return keras.quantizers.fake_quant_with_min_max_vars(x, lo, hi, num_bits=num_bits, narrow_range=narrow_range, axis=-1)
    if len(x.shape) <= 4 or final_range:
        import tensorflow as tf

        return tf.quantization.fake_quant_with_min_max_vars_per_channel(x, lo, hi, num_bits=num_bits, narrow_range=narrow_range)
    return _per_channel_any_rank(x, lo, hi, num_bits, narrow_range)


def _nudged_fake_quant(x, lo, hi, num_bits: int, narrow_range: bool):
    """TF's FakeQuantWithMinMaxVars in plain TF ops (for XLA): ``(y, inside)``, ``lo``/``hi`` broadcast over the last axis."""
    import tensorflow as tf

    qmin = 1.0 if narrow_range else 0.0
    qmax = float(2**num_bits - 1)
    # The zero point is rounded onto the integer grid (half away from zero)
    # and the range moved with it.
    scale = (hi - lo) / (qmax - qmin)
    inverse = (qmax - qmin) / (hi - lo)
    zero_point = tf.clip_by_value(tf.floor(qmin - lo / scale + 0.5), qmin, qmax)
    nudged_lo = (qmin - zero_point) * scale
    nudged_hi = (qmax - zero_point) * scale
    clamped = tf.clip_by_value(x, nudged_lo, nudged_hi)
    y = tf.floor((clamped - nudged_lo) * inverse + 0.5) * scale + nudged_lo
    return y, tf.logical_and(x >= nudged_lo, x <= nudged_hi)


@functools.lru_cache(maxsize=None)
def _fused_kernel(num_bits: int, narrow_range: bool):
    """An XLA-compiled fake quant on TF's nudged grid: ``(x, lo, hi) -> (y, inside)`` (``lo``/``hi`` broadcast over the last axis)."""

    @xla_kernel
    def kernel(x, lo, hi):
        return _nudged_fake_quant(x, lo, hi, num_bits, narrow_range)

    return kernel


def _straight_through(x, y, inside):
    """``y`` in the forward pass; the upstream gradient to ``x`` where ``inside``, 0 elsewhere."""
    import tensorflow as tf

    @tf.custom_gradient
    def quantize(t):
        return tf.identity(y), lambda dy: dy * tf.cast(inside, dy.dtype)

    return quantize(tf.convert_to_tensor(x))


def _fused_fake_quant(x, lo, hi, num_bits: int, narrow_range: bool):
    """Fake quantization (per tensor, or per channel on the last axis) with a straight-through gradient, fused by XLA.

    The same grid as TF's op (values may differ in the last bit of the
    float32 result); the ranges get no gradient (they are read under
    ``stop_gradient``), the input the upstream gradient inside the range.
    Used for training only: inference and export keep TF's op, which the
    TFLite converter reads.
    """
    import tensorflow as tf

    kernel = _fused_kernel(num_bits, bool(narrow_range))
    lo, hi = tf.cast(lo, x.dtype), tf.cast(hi, x.dtype)
    y, inside = kernel(tf.stop_gradient(x), lo, hi)
    return _straight_through(x, y, inside)


#: ``key -> kernel`` of :func:`fused_range_fake_quant` (a key names the range update and the grid).
_RANGE_KERNELS: dict = {}


def fused_range_fake_quant(x, state, update, key, num_bits: int, narrow_range: bool, symmetric: bool):
    """A training step of a per-tensor activation range and its fake quantization, as one XLA kernel.

    The batch's finite min and max, the range update ``update(batch_lo,
    batch_hi, {"min": lo, "max": hi}) -> (lo, hi)`` (the first batch sets
    the range), :func:`quantization_range` and the fake quant on TF's grid:
    the op-by-op path's arithmetic, run as one kernel instead of some thirty
    ops around two passes over the tensor. ``key`` names ``update`` and the
    grid (equal keys share a kernel). Returns ``(y, lo, hi)``: ``x``
    fake-quantized with a straight-through gradient, and the range to store.
    """
    import tensorflow as tf

    kernel = _RANGE_KERNELS.get(key)
    if kernel is None:

        @xla_kernel
        def kernel(t, state_lo, state_hi, initialized):
            finite = tf.where(tf.math.is_finite(t), t, tf.zeros_like(t))
            batch_lo, batch_hi = tf.reduce_min(finite), tf.reduce_max(finite)
            lo, hi = update(batch_lo, batch_hi, {"min": state_lo, "max": state_hi})
            fresh = tf.logical_not(initialized > 0.5)
            lo, hi = tf.where(fresh, batch_lo, lo), tf.where(fresh, batch_hi, hi)
            q_lo, q_hi = lo, hi
            if symmetric:
                m = tf.maximum(tf.abs(lo), tf.abs(hi))
                q_lo, q_hi = -m, m
            q_lo, q_hi = quantization_range(q_lo, q_hi, num_bits, narrow_range)
            y, inside = _nudged_fake_quant(t, q_lo, q_hi, num_bits, narrow_range)
            return y, inside, lo, hi

        _RANGE_KERNELS[key] = kernel
    y, inside, lo, hi = kernel(
        tf.stop_gradient(x), tf.convert_to_tensor(state["min"]), tf.convert_to_tensor(state["max"]),
        tf.convert_to_tensor(state["initialized"]),
    )
    return _straight_through(x, y, inside), lo, hi


@functools.lru_cache(maxsize=None)
def _weight_kernel(reduce_axes: tuple, num_bits: int, narrow_range: bool, symmetric: bool, per_channel: bool):
    """``w -> (y, inside)``: a weight's own range (per channel: over ``reduce_axes``) and its fake quant, XLA-compiled."""
    import tensorflow as tf

    @xla_kernel
    def kernel(w):
        lo = tf.reduce_min(w, axis=reduce_axes, keepdims=per_channel)
        hi = tf.reduce_max(w, axis=reduce_axes, keepdims=per_channel)
        if symmetric:
            m = tf.maximum(tf.abs(lo), tf.abs(hi))
            lo, hi = -m, m
        lo, hi = quantization_range(lo, hi, num_bits, narrow_range, per_channel=per_channel)
        return _nudged_fake_quant(w, lo, hi, num_bits, narrow_range)

    return kernel


def fused_weight_fake_quant(w, channel_axes, num_bits: int, narrow_range: bool, symmetric: bool):
    """A training step's fake quant of a weight on its own range (per channel along ``channel_axes``, or per tensor: None).

    One XLA kernel for the min and max, :func:`quantization_range` and the
    fake quant on TF's grid (each channel's range broadcast in place, so no
    axis is moved), with a straight-through gradient: the op-by-op path's
    arithmetic, values equal up to the last bit of the float32 grid.
    """
    import tensorflow as tf

    rank = len(w.shape)
    per_channel = channel_axes is not None
    kept = {a % rank for a in channel_axes} if per_channel else set()
    reduce_axes = tuple(a for a in range(rank) if a not in kept)
    y, inside = _weight_kernel(reduce_axes, num_bits, bool(narrow_range), bool(symmetric), per_channel)(tf.stop_gradient(w))
    return _straight_through(w, y, inside)


@functools.lru_cache(maxsize=None)
def _fused_finite_minmax_kernel():
    import tensorflow as tf

    @xla_kernel
    def kernel(x):
        finite = tf.where(tf.math.is_finite(x), x, tf.zeros_like(x))
        return tf.reduce_min(finite), tf.reduce_max(finite)

    return kernel


def finite_minmax(x):
    """Min and max of the finite values of ``x`` (0 stands in for the others), in one fused pass where it pays."""
    if fused_on_tensorflow(x) and x.dtype == "float32":
        return _fused_finite_minmax_kernel()(x)
    x = ops.where(ops.isfinite(x), x, ops.zeros_like(x))
    return ops.min(x), ops.max(x)


def _nudge_range(lo, hi):
    # TFLite needs 0 exactly representable: the range always includes 0.
    return ops.minimum(lo, 0.0), ops.maximum(hi, 0.0)


def _float32_exact(lo, hi, num_bits: int, narrow_range: bool):
    """``[lo, hi]`` moved (by at most 2**-15 of the scale) to a grid the converter reads back exactly.

    The converter computes a tensor's scale in double from the float32 range
    of its fake-quant op, and elsewhere keeps it as float32; for a reshape
    between an ADD and a FULLY_CONNECTED the two differ in the last bit and
    it rejects the RESHAPE as violating the same-scale constraint (measured
    after LayerNormalization; it depends on the values). With a scale of 15
    significant bits and an integer zero point, both bounds are exact in
    float32 and so is the scale computed from them.
    """
    qmin = 1.0 if narrow_range else 0.0
    qmax = float(2**num_bits - 1)
    scale = (hi - lo) / (qmax - qmin)
    safe = ops.maximum(scale, 1e-30)
    step = ops.power(2.0, ops.floor(ops.log2(safe)) - 14.0)
    snapped = ops.round(safe / step) * step
    zero_point = ops.clip(ops.round(qmin - lo / snapped), qmin, qmax)
    usable = scale > 0
    return (
        ops.where(usable, (qmin - zero_point) * snapped, lo),
        ops.where(usable, (qmax - zero_point) * snapped, hi),
    )


def quantization_range(lo, hi, num_bits: int, narrow_range: bool, per_channel: bool = False):
    """The ``(lo, hi)`` the fake-quant op receives for a tensor observed on ``[lo, hi]``.

    The range is widened to hold 0 (and is ``[-1, 1]`` where it is empty); a per-tensor range is also moved onto a
    grid the converter reads back exactly (see :func:`_float32_exact`).
    """
    lo, hi = _nudge_range(ops.stop_gradient(lo), ops.stop_gradient(hi))
    # An empty range (a channel or tensor of zeros: a pruned filter, a dead
    # ReLU) gets [-1, 1]: its values quantize to 0 either way, and a weight
    # scale of 0 would make the converter saturate the int32 bias of that
    # channel (the bias scale is input scale x weight scale).
    empty = ops.less_equal(hi, lo)
    lo, hi = ops.where(empty, -1.0, lo), ops.where(empty, 1.0, hi)
    if not per_channel:
        lo, hi = _float32_exact(lo, hi, num_bits, narrow_range)
    return lo, hi


def fake_quant(x, lo, hi, num_bits: int, narrow_range: bool, final_range: bool = False, training: bool = False):
    """Per-tensor fake quantization of ``x`` to ``num_bits`` on ``[lo, hi]``.

    ``final_range``: ``lo`` and ``hi`` already come from
    :func:`quantization_range` (e.g. constants frozen for export).
    ``training``: a training step, where a large tensor on TensorFlow takes
    the fused path (:func:`fused_on_tensorflow`).
    """
    if not final_range:
        lo, hi = quantization_range(lo, hi, num_bits, narrow_range)
    if training and fused_on_tensorflow(x):
        return _fused_fake_quant(x, lo, hi, num_bits, narrow_range)
    return _per_tensor_op(x, lo, hi, num_bits, narrow_range)


def fake_quant_per_channel(
    x, lo, hi, channel_axes, num_bits: int, narrow_range: bool, final_range: bool = False, training: bool = False
):
    """Per-channel fake quantization along ``channel_axes`` (``lo``/``hi``: one value per channel).

    Channels on the last axis are quantized in place; the two trailing axes
    of a depthwise kernel (in, multiplier) are merged by a reshape; any other
    axis is moved last and back. These are the forms the TFLite converter
    folds into per-channel int8 weights. ``final_range`` and ``training`` as in :func:`fake_quant`.
    """
    if not final_range:
        lo, hi = quantization_range(lo, hi, num_bits, narrow_range, per_channel=True)
    rank = len(x.shape)
    axes = tuple(sorted(a % rank for a in channel_axes))

    def fq(t):
        if training and fused_on_tensorflow(t):
            return _fused_fake_quant(t, lo, hi, num_bits, narrow_range)
        return _per_channel_op(t, lo, hi, num_bits, narrow_range, final_range)

    if axes == (rank - 1,):
        return fq(x)
    if axes == (rank - 2, rank - 1):
        shape = tuple(x.shape)
        merged = ops.reshape(x, shape[:-2] + (shape[-2] * shape[-1],))
        return ops.reshape(fq(merged), shape)
    if len(axes) == 1:
        perm = [a for a in range(rank) if a != axes[0]] + [axes[0]]
        inverse = [perm.index(a) for a in range(rank)]
        moved = ops.transpose(x, perm)
        return ops.transpose(fq(moved), inverse)
    raise InvalidArgumentError(f"per-channel quantization over axes {channel_axes} of a rank-{rank} weight is not supported.")


def _per_channel_any_rank(x, lo, hi, num_bits: int, narrow_range: bool):
    """Per-channel fake quantization (last axis) of a weight of rank > 4, e.g. a Conv3D kernel.

    TF's per-channel op runs at any rank, but its gradient takes rank <= 4:
    the gradient is computed on the weight viewed as ``(-1, channels)``,
    the same per-channel grid. (An exported graph, ``final_range``, keeps
    the plain op: the converter reads it, and needs no gradient.)
    """
    import tensorflow as tf

    channels = x.shape[-1]

    @tf.custom_gradient
    def quantize(x, lo, hi):
        y = tf.quantization.fake_quant_with_min_max_vars_per_channel(
            x, lo, hi, num_bits=num_bits, narrow_range=narrow_range
        )

        def gradient(dy):
            dx, dlo, dhi = tf.quantization.fake_quant_with_min_max_vars_per_channel_gradient(
                tf.reshape(dy, (-1, channels)),
                tf.reshape(x, (-1, channels)),
                lo,
                hi,
                num_bits=num_bits,
                narrow_range=narrow_range,
            )
            return tf.reshape(dx, tf.shape(x)), dlo, dhi

        return y, gradient

    # A variable is read first: the gradient function takes tensors only.
    return quantize(tf.identity(x), lo, hi)
