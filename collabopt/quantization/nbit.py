"""N-bit quantization: weights trained at fewer than 8 bits (down to 2), activations at 8 (or 16).

With ``num_bits_weight=4`` the int8 TFLite export stores every quantized
weight as an INT4 tensor (two values per byte): the converter reads the bit
width of the fake-quant ops, so the integers in the file are exactly the
trained 4-bit weights. See ``docs/int4.md``.

How the scheme meets earlier stages:

* Pruning (P4QAT): the weight quantizer is symmetric, so 0 maps to the stored
  integer 0 at every bit width; every pruned zero stays a zero.
* Clustering (C4QAT / PC4QAT): quantizing is a function of each value, so K
  centroids give at most K stored values per quantization range (per tensor,
  or per channel for convolutions), and a pinned zero centroid stays 0. Two
  centroids closer than one 4-bit step may land on the same integer: the
  file then holds fewer distinct values, never more. With at most 16
  centroids nothing is lost to a 4-bit grid that a 16-cluster model had,
  since 4-bit narrow-range storage has 15 levels ``[-7, 7]``.
"""

from __future__ import annotations

import keras

from collabopt.errors import InvalidArgumentError
from collabopt.layers import per_channel_by_rank, support_fact
from collabopt.quantization.quantizers import LastValueQuantizer
from collabopt.quantization.schemes import QuantizeScheme

WEIGHT_BITS = range(2, 9)

ACTIVATION_BITS = (8, 16)


@keras.saving.register_keras_serializable(package="collabopt")
class DefaultNBitQuantizeScheme(QuantizeScheme):
    """QAT with ``num_bits_weight``-bit weights and ``num_bits_activation``-bit activations.

    TFMOT's experimental scheme, same name and arguments. Weights are
    symmetric and narrow-range (``[-(2^(b-1) - 1), 2^(b-1) - 1]``; 4 bits:
    ``[-7, 7]``), per output channel for convolutions and per tensor for Dense
    (a per-channel Dense kernel does not convert to TFLite). Activations are
    asymmetric per tensor at 8 bits (symmetric at 16, as TFLite's int16
    kernels require).

    Args:
        disable_per_axis: Quantize every weight per tensor.
        num_bits_weight: Bits of the weights, 2 to 8. At 4 bits or fewer the
            int8 export stores the weights as INT4 tensors.
        num_bits_activation: 8 (int8 model) or 16 (export with
            ``mode="int16x8"``).

    Raises:
        InvalidArgumentError: a bit width outside those ranges.

    Example:

    >>> import keras, collabopt.keras as co
    >>> model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(4, 3), keras.layers.Flatten(), keras.layers.Dense(2)])
    >>> qat = co.quantize_model(model, scheme=co.DefaultNBitQuantizeScheme(num_bits_weight=4))
    >>> qat.layers[0].weight_quantizers["kernel"].num_bits
    4
    """

    def __init__(self, disable_per_axis: bool = False, num_bits_weight: int = 8, num_bits_activation: int = 8):
        if isinstance(num_bits_weight, bool) or not isinstance(num_bits_weight, int) or num_bits_weight not in WEIGHT_BITS:
            raise InvalidArgumentError(
                f"DefaultNBitQuantizeScheme: num_bits_weight={num_bits_weight!r}; accepted: an integer from 2 to 8."
            )
        if isinstance(num_bits_activation, bool) or num_bits_activation not in ACTIVATION_BITS:
            raise InvalidArgumentError(
                f"DefaultNBitQuantizeScheme: num_bits_activation={num_bits_activation!r}; accepted: 8 (int8 "
                "kernels) or 16 (int16x8 kernels); TFLite has no integer kernels for other activation widths."
            )
        self.disable_per_axis = bool(disable_per_axis)
        self.weight_bits = num_bits_weight
        self.activation_bits = num_bits_activation
        self.activation_symmetric = num_bits_activation == 16

    def weight_quantizer(self, rank: int, per_channel: bool | None = None):
        per_axis = (per_channel_by_rank(rank) if per_channel is None else per_channel) and not self.disable_per_axis
        return LastValueQuantizer(self.weight_bits, per_axis=per_axis, symmetric=True, narrow_range=True)

    def config_for(self, layer):
        """The scheme's config; a layer whose record allows no fewer bits keeps them (``LayerSupport.weight_bits``).

        An Embedding's table stays 8-bit: TF 2.21's converter fails on an INT4
        GATHER table ("Unsupported enum 17") and LiteRT has no INT4 GATHER
        that reproduces the model (docs/int4.md).
        """
        config = super().config_for(layer)
        bits = support_fact(layer, "weight_bits")
        if config is not None and bits is not None and self.weight_bits < bits[0]:
            config.weights = {
                name: LastValueQuantizer(bits[0], per_axis=q.per_axis, symmetric=True, narrow_range=True)
                for name, q in config.weights.items()
            }
        return config

    def get_config(self):
        return {
            "disable_per_axis": self.disable_per_axis,
            "num_bits_weight": self.weight_bits,
            "num_bits_activation": self.activation_bits,
        }
