"""Quantization schemes: the default configs for every layer kind.

A scheme answers, for any layer, the :class:`QuantizeConfig` to use (or None
if it cannot quantize the layer), and gives the quantizer for model inputs.
What it needs to know about a layer class comes from the layer registry:
its weights and whether each is quantized per channel
(:class:`~collabopt.layers.WeightSpec`), and whether TFLite keeps its input's
scale (``LayerRoles.same_scale``: no output quantizer).
Activations TFLite fuses into the op before them (ReLU, ReLU6) are recognised
by :func:`fusable_activation`.
"""

from __future__ import annotations

import keras

from collabopt.layers import KEEPS, LayerRoles, handled_as_composite, is_fused_activation, layer_roles, sublayer_at, optimizable_variables, per_channel_by_rank, register_layer, weight_specs
from collabopt.layers.execution import internal_tensors
from collabopt.preserve import CLUSTERS, SPARSITY
from collabopt.quantization.config import QuantizeConfig
from collabopt.quantization.quantizers import FixedQuantizer, LastValueQuantizer, MovingAverageQuantizer


@keras.saving.register_keras_serializable(package="collabopt")
class FoldedBatchNormalization(keras.layers.Layer):
    """Stands where a BatchNormalization was folded into the conv/dense before it; passes values through."""

    def call(self, inputs, mask=None, training=None):
        return inputs

    def compute_output_shape(self, input_shape):
        return input_shape


register_layer(FoldedBatchNormalization, roles=LayerRoles(passthrough=True, same_scale=True, channels=KEEPS))

# TFLite's int8 kernels of these activations have a fixed output quantization
# (SOFTMAX and LOGISTIC: scale 1/256, zero point -128; TANH: scale 1/128, zero
# point 0); QAT uses exactly those ranges so the converter adds no requantize.
FIXED_OUTPUT_RANGES_8BIT = {
    "softmax": (0.0, 255.0 / 256.0),
    "sigmoid": (0.0, 255.0 / 256.0),
    "tanh": (-1.0, 127.0 / 128.0),
}


def output_activation(layer) -> str:
    """Name of the activation ``layer`` ends with (``"linear"`` if none)."""
    declared = layer_roles(layer).output_activation
    if declared is not None:
        return declared
    activation = getattr(layer, "activation", None)
    return getattr(activation, "__name__", "linear") if activation is not None else "linear"


def fusable_activation(layer) -> bool:
    """True for a ReLU / ReLU6 / Activation('relu'|'relu6') layer TFLite fuses into the op before it (its roles say so)."""
    return is_fused_activation(layer)


def has_linear_activation(layer) -> bool:
    activation = getattr(layer, "activation", None)
    return activation is None or getattr(activation, "__name__", "") == "linear"


class QuantizeScheme:
    """Base scheme: weights symmetric narrow-range int8 (per channel for rank >= 3
    kernels, per tensor for rank-2 ones such as Dense, whose per-channel form does
    not convert), activations asymmetric with moving-average ranges."""

    activation_bits = 8
    activation_symmetric = False
    weight_bits = 8
    #: Constraint kinds this scheme keeps on layers that arrive stripped
    #: (None: detect them automatically from the weights).
    preserve: tuple | None = None

    def weight_quantizer(self, rank: int, per_channel: bool | None = None):
        """Quantizer of a weight of ``rank``; ``per_channel`` as the layer registry says (None: by rank)."""
        per_axis = per_channel_by_rank(rank) if per_channel is None else per_channel
        return LastValueQuantizer(self.weight_bits, per_axis=per_axis, symmetric=True, narrow_range=True)

    def activation_quantizer(self):
        return MovingAverageQuantizer(
            self.activation_bits, symmetric=self.activation_symmetric, narrow_range=self.activation_symmetric
        )

    def output_quantizer(self, layer):
        """Quantizer for the output of ``layer``: fixed where TFLite fixes it, else moving-average."""
        fixed = FIXED_OUTPUT_RANGES_8BIT.get(output_activation(layer)) if self.activation_bits == 8 else None
        if fixed is not None:
            return FixedQuantizer(8, init_min=fixed[0], init_max=fixed[1])
        return self.activation_quantizer()

    def input_quantizer(self):
        """Quantizer for model inputs."""
        return self.activation_quantizer()

    def config_for(self, layer) -> QuantizeConfig | None:
        """The default config for ``layer``, or None if this scheme cannot quantize it."""
        specs = weight_specs(layer)
        if specs is None and layer.weights:
            return None
        outputs = [] if layer_roles(layer).same_scale else [self.output_quantizer(layer)]
        if specs is None:
            return QuantizeConfig(outputs=outputs)
        weights = {
            s.name: self.weight_quantizer(len(v.shape), s.quantized_per_channel(len(v.shape)))
            for s, v in zip(specs, optimizable_variables(layer).values())
        }
        if handled_as_composite(layer):
            # A sublayer's output inside a composite layer: quantized as that
            # sublayer's own output would be (fixed after a sigmoid).
            internal = [
                self.activation_quantizer() if path.endswith(":input") else self.output_quantizer(sublayer_at(layer, path))
                for path in internal_tensors(layer)
            ]
        else:
            internal = [self.activation_quantizer() for _ in internal_tensors(layer)]
        return QuantizeConfig(weights=weights, outputs=outputs, internal=internal)

    def get_config(self):
        return {}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


@keras.saving.register_keras_serializable(package="collabopt")
class Default8BitQuantizeScheme(QuantizeScheme):
    """The TFLite int8 spec: int8 weights (symmetric, narrow range, per channel
    for convolutions), int8 activations (asymmetric, per tensor, EMA ranges)."""


@keras.saving.register_keras_serializable(package="collabopt")
class Default16x8QuantizeScheme(QuantizeScheme):
    """16-bit activations (symmetric, as TFLite's int16 kernels require), 8-bit weights.

    Export with ``collabopt.tflite.convert(model, mode="int16x8", representative_data=...)``.
    """

    activation_bits = 16
    activation_symmetric = True


@keras.saving.register_keras_serializable(package="collabopt")
class Default8BitPrunePreserveQuantizeScheme(Default8BitQuantizeScheme):
    """TFMOT's PQAT spelling: the 8-bit scheme keeping every pruned zero."""

    preserve = (SPARSITY.name,)


@keras.saving.register_keras_serializable(package="collabopt")
class Default8BitClusterPreserveQuantizeScheme(Default8BitQuantizeScheme):
    """TFMOT's CQAT / PCQAT spelling: the 8-bit scheme keeping clusters (and zeros with ``preserve_sparsity``)."""

    def __init__(self, preserve_sparsity: bool = False):
        self.preserve_sparsity = bool(preserve_sparsity)
        self.preserve = (CLUSTERS.name, SPARSITY.name) if preserve_sparsity else (CLUSTERS.name,)

    def get_config(self):
        return {"preserve_sparsity": self.preserve_sparsity}
