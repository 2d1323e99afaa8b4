"""Quantizers: how one tensor (a weight or an activation) is fake-quantized, and its state.

A quantizer is configuration (serializable); the state it needs (ranges)
lives in variables that the wrapper creates through :meth:`Quantizer.build`,
so it is saved in ``.keras`` files and shared by no other layer.
"""

from __future__ import annotations

import abc

import keras
from keras import ops

from collabopt.errors import InvalidArgumentError
from collabopt.fused import fused_on_tensorflow
from collabopt.quantization.fake_quant import (
    fake_quant,
    fake_quant_per_channel,
    finite_minmax,
    fused_range_fake_quant,
    fused_weight_fake_quant,
    quantization_range,
)


class Quantizer(abc.ABC):
    """Base class.

    Args:
        num_bits: Bits of the integer type (2..16).
        per_axis: One range per output channel (weights only).
        symmetric: Range ``[-m, m]`` (zero point 0) instead of ``[min, max]``.
        narrow_range: Use ``[-(2^(b-1) - 1), 2^(b-1) - 1]`` (TFLite int8 weights).
    """

    #: The inference range depends on this quantizer's state alone, not on
    #: the tensor (so export can read it once, eagerly).
    range_from_state: bool = False

    def __init__(self, num_bits=8, per_axis=False, symmetric=False, narrow_range=False):
        if not isinstance(num_bits, int) or not 2 <= num_bits <= 16:
            raise InvalidArgumentError(f"num_bits must be an integer in [2, 16]; received {num_bits!r}.")
        self.num_bits, self.per_axis = num_bits, bool(per_axis)
        self.symmetric, self.narrow_range = bool(symmetric), bool(narrow_range)

    def build(self, wrapper, name: str, shape, spec=None) -> dict:
        """Creates this quantizer's state variables on ``wrapper``; returns them by name."""
        return {}

    @abc.abstractmethod
    def range(self, x, state: dict, training, spec):
        """``(lo, hi)`` to quantize ``x`` with (updating state when training)."""

    def is_initialized(self, state):
        """A bool tensor: whether the range is known (always, for stateless quantizers)."""
        return ops.convert_to_tensor(True)

    def observe(self, x, state):
        """Widens a stateful range to include ``x`` (calibration); no-op for stateless quantizers."""

    def __call__(self, x, state: dict, training=False, spec=None, export=False):
        lo, hi = self._symmetric(*self.range(x, state, training, spec))
        q = self._fake_quant(x, lo, hi, spec, final_range=False, training=bool(training) and not export)
        if export or training or type(self).is_initialized is Quantizer.is_initialized:
            # (A stateless range, e.g. a weight's own min/max, is always known:
            # no select, which would also keep the TFLite converter from
            # folding the weight when it converts the QAT model directly.)
            return q
        # Before the range is known (a fresh QAT model that has seen no data),
        # inference passes values through, so the model predicts as the float one.
        return ops.where(self.is_initialized(state), q, x)

    def export_range(self, x, state: dict, spec=None):
        """The inference ``(lo, hi)`` exactly as the fake-quant op receives it, as numpy arrays.

        Read once, eagerly, when a model is exported: :meth:`apply_range`
        then quantizes with these constants, so the exported graph holds no
        range arithmetic (``x`` matters only to quantizers whose range is
        the tensor's own, i.e. weights).
        """
        lo, hi = self._symmetric(*self.range(x, state, False, spec))
        lo, hi = quantization_range(lo, hi, self.num_bits, self.narrow_range, per_channel=self.per_axis)
        return ops.convert_to_numpy(lo), ops.convert_to_numpy(hi)

    def apply_range(self, x, lo, hi, spec=None):
        """Fake-quantizes ``x`` on a range from :meth:`export_range`."""
        return self._fake_quant(x, ops.convert_to_tensor(lo), ops.convert_to_tensor(hi), spec, final_range=True)

    def _symmetric(self, lo, hi):
        if self.symmetric:
            m = ops.maximum(ops.abs(lo), ops.abs(hi))
            return -m, m
        return lo, hi

    def _fake_quant(self, x, lo, hi, spec, final_range, training=False):
        if self.per_axis:
            return fake_quant_per_channel(
                x, lo, hi, spec.channel_axes, self.num_bits, self.narrow_range, final_range=final_range, training=training
            )
        return fake_quant(x, lo, hi, self.num_bits, self.narrow_range, final_range=final_range, training=training)

    def get_config(self) -> dict:
        return {
            "num_bits": self.num_bits,
            "per_axis": self.per_axis,
            "symmetric": self.symmetric,
            "narrow_range": self.narrow_range,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __eq__(self, other):
        return type(self) is type(other) and self.get_config() == other.get_config()


def _channel_minmax(x, spec):
    """Per-channel min and max, in the order of :func:`collabopt.layers.to_channel_rows` (reduced in place, no transpose)."""
    rank = len(x.shape)
    channel_axes = {a % rank for a in spec.channel_axes}
    others = tuple(a for a in range(rank) if a not in channel_axes)
    return ops.reshape(ops.min(x, axis=others), (-1,)), ops.reshape(ops.max(x, axis=others), (-1,))


def _finite_minmax(x):
    # An activation range ignores infinities and NaNs: inside a layer's integer
    # form a tensor can overflow for one sample (RSQRT of a variance that
    # quantized to zero), where TFLite saturates; the range must stay finite.
    # (Every range holds 0, so 0 stands in for a non-finite value.)
    return finite_minmax(x)


@keras.saving.register_keras_serializable(package="collabopt")
class LastValueQuantizer(Quantizer):
    """Range = the tensor's current min/max (per channel if ``per_axis``). For weights."""

    def range(self, x, state, training, spec):
        if self.per_axis:
            return _channel_minmax(x, spec)
        return ops.min(x), ops.max(x)

    def __call__(self, x, state: dict, training=False, spec=None, export=False):
        if training and not export and x.dtype == "float32" and fused_on_tensorflow(x):
            # A training step on TensorFlow, a large weight: range and fake
            # quant as one XLA kernel (fake_quant.fused_weight_fake_quant).
            # Small weights keep TF's ops: fused, they were a little faster
            # (20 per-channel 1x1x16x16 weights: 0.42 against 0.50 ms a step)
            # but each XLA kernel costs resident memory (MobileNetV2 QAT's
            # peak 950 -> 999 MiB).
            axes = spec.channel_axes if self.per_axis else None
            return fused_weight_fake_quant(x, axes, self.num_bits, self.narrow_range, self.symmetric)
        return super().__call__(x, state, training, spec, export)


class _RangeQuantizer(Quantizer):
    """A quantizer that keeps a per-tensor range in variables."""

    range_from_state = True

    def __init__(self, num_bits=8, per_axis=False, symmetric=False, narrow_range=False):
        if per_axis:
            raise InvalidArgumentError(f"{type(self).__name__} keeps one range per tensor; per_axis=True is not supported.")
        super().__init__(num_bits, per_axis, symmetric, narrow_range)

    def build(self, wrapper, name, shape, spec=None):
        def var(suffix, init):
            return wrapper.add_weight(
                name=f"{name}_{suffix}", shape=(), initializer=init, trainable=False, aggregation="only_first_replica"
            )

        return {"min": var("min", "zeros"), "max": var("max", "zeros"), "initialized": var("initialized", "zeros")}

    def is_initialized(self, state):
        return ops.greater(state["initialized"], 0.5)

    def __call__(self, x, state: dict, training=False, spec=None, export=False):
        if training and not export and x.dtype == "float32" and fused_on_tensorflow(x):
            # A training step on TensorFlow, a large tensor: the range update
            # and the fake quant as one XLA kernel
            # (fake_quant.fused_range_fake_quant), the arithmetic of range()
            # and Quantizer.__call__. (On a small tensor the kernel's launch
            # costs more than the ops it replaces: 70 against 50 us.)
            key = (type(self), *sorted(self.get_config().items()))
            y, lo, hi = fused_range_fake_quant(
                x, state, self._update, key, self.num_bits, self.narrow_range, self.symmetric
            )
            self.set_range(state, lo, hi)
            return y
        return super().__call__(x, state, training, spec, export)

    @abc.abstractmethod
    def _update(self, batch_lo, batch_hi, state):
        """The new ``(min, max)`` given a batch's min and max and the current state."""

    def range(self, x, state, training, spec):
        if not training:
            return ops.convert_to_tensor(state["min"]), ops.convert_to_tensor(state["max"])
        batch_lo, batch_hi = _finite_minmax(ops.stop_gradient(x))
        fresh = ops.logical_not(self.is_initialized(state))
        lo, hi = self._update(batch_lo, batch_hi, state)
        lo = ops.where(fresh, batch_lo, lo)
        hi = ops.where(fresh, batch_hi, hi)
        state["min"].assign(lo)
        state["max"].assign(hi)
        state["initialized"].assign(1.0)
        return lo, hi

    def observe(self, x, state):
        lo, hi = _finite_minmax(x)
        if bool(ops.convert_to_numpy(self.is_initialized(state))):
            lo, hi = ops.minimum(lo, state["min"]), ops.maximum(hi, state["max"])
        self.set_range(state, lo, hi)

    def set_range(self, state, lo, hi):
        """Sets the range directly (calibration)."""
        state["min"].assign(lo)
        state["max"].assign(hi)
        state["initialized"].assign(1.0)


@keras.saving.register_keras_serializable(package="collabopt")
class MovingAverageQuantizer(_RangeQuantizer):
    """Range = exponential moving average of batch min/max (``ema_decay``). For activations."""

    def __init__(self, num_bits=8, per_axis=False, symmetric=False, narrow_range=False, ema_decay=0.999):
        super().__init__(num_bits, per_axis, symmetric, narrow_range)
        if not 0.0 < ema_decay < 1.0:
            raise InvalidArgumentError(f"ema_decay must be in (0, 1); received {ema_decay!r}.")
        self.ema_decay = float(ema_decay)

    def _update(self, batch_lo, batch_hi, state):
        d = self.ema_decay
        return d * state["min"] + (1 - d) * batch_lo, d * state["max"] + (1 - d) * batch_hi

    def get_config(self):
        return {**super().get_config(), "ema_decay": self.ema_decay}


@keras.saving.register_keras_serializable(package="collabopt")
class AllValuesQuantizer(_RangeQuantizer):
    """Range = the smallest and largest values seen so far."""

    def _update(self, batch_lo, batch_hi, state):
        return ops.minimum(state["min"], batch_lo), ops.maximum(state["max"], batch_hi)


@keras.saving.register_keras_serializable(package="collabopt")
class FixedQuantizer(Quantizer):
    """A fixed range ``[init_min, init_max]`` (e.g. for bounded activations)."""

    range_from_state = True

    def __init__(self, num_bits=8, init_min=-6.0, init_max=6.0, narrow_range=False, symmetric=False, per_axis=False):
        super().__init__(num_bits, False, symmetric, narrow_range)
        if not init_min <= 0.0 <= init_max or init_min == init_max:
            raise InvalidArgumentError(f"FixedQuantizer needs init_min <= 0 <= init_max; received [{init_min}, {init_max}].")
        self.init_min, self.init_max = float(init_min), float(init_max)

    def range(self, x, state, training, spec):
        return ops.convert_to_tensor(self.init_min), ops.convert_to_tensor(self.init_max)

    def get_config(self):
        return {**super().get_config(), "init_min": self.init_min, "init_max": self.init_max}


