"""The records of Keras' built-in layers: every fact collabopt keeps about each, in one place.

Adding a built-in layer is one entry here: its optimizable weights
(:mod:`collabopt.layers.registry`'s :class:`WeightSpec`), its roles
(:class:`LayerRoles`), its multiply-accumulates, the bit widths its weights
may take, and its export form (:class:`ExportForm`: the runner in
:mod:`collabopt.layers.execution` that computes it as the ops TFLite executes).
"""

from __future__ import annotations

import keras
import numpy as np

from collabopt.layers import execution as ex
from collabopt.layers.registry import (
    WeightSpec,
    einsum_dense_specs,
    multi_head_attention_specs,
    recurrent_specs,
    time_distributed_specs,
)
from collabopt.layers.roles import (
    CONCATENATES,
    ELEMENTWISE,
    FLATTENS,
    KEEPS,
    MERGES,
    MULTIPLIES,
    PRODUCES,
    RESHAPES,
    LayerRoles,
)
from collabopt.layers.support import ExportForm, register_layer_support

L = keras.layers


def _record(classes, **facts):
    for cls in classes if isinstance(classes, tuple) else (classes,):
        register_layer_support(cls, **facts)


# --- multiply-accumulates of one call on one example (input/output shapes with the batch axis) ------------------


def _positions(shape):
    return np.prod(shape[1:-1], dtype=np.int64)


def _dense_macs(layer, shape, out):
    return int(_positions(shape) * shape[-1] * layer.units)


def _conv_macs(layer, shape, out):
    groups = getattr(layer, "groups", 1) or 1
    return int(_positions(out) * np.prod(layer.kernel_size) * (shape[-1] // groups) * layer.filters)


def _conv_transpose_macs(layer, shape, out):
    return int(_positions(shape) * np.prod(layer.kernel_size) * shape[-1] * layer.filters)


def _depthwise_macs(layer, shape, out):
    return int(_positions(out) * np.prod(layer.kernel_size) * shape[-1] * layer.depth_multiplier)


def _separable_macs(layer, shape, out):
    c_in, m = shape[-1], layer.depth_multiplier
    return int(_positions(out) * (np.prod(layer.kernel_size) * c_in * m + c_in * m * layer.filters))


def no_macs(layer, shape, out):
    """A lookup, not a product: an Embedding does no multiply-accumulates."""
    return 0


# --- channel behaviour that depends on the configuration -----------------------------------------------------


def _activation_channels(layer):
    activation = layer.get_config().get("activation")
    return None if str(activation) in ("softmax", "log_softmax") else ELEMENTWISE


def _reshape_channels(layer):
    return FLATTENS if len(layer.get_config()["target_shape"]) == 1 else RESHAPES


# --- layers with optimizable weights ----------------------------------------------------------------------------

_CONV = (WeightSpec("kernel", (-1,), -2),)
# Per tensor: TF runs a transposed conv on its (k..., out, in) kernel and the
# converter transposes it to TFLite's (out, k..., in), which cannot move a
# per-channel quantization axis ("mismatched quantized axes").
_CONV_TRANSPOSE = (WeightSpec("kernel", (-2,), -1, per_channel_quantization=False),)
# Keras 3 names the DepthwiseConv weight "kernel" and SeparableConv's
# "depthwise_kernel"; both are (k..., in, multiplier) with output channel
# in * multiplier + m, which is what TFLite quantizes per channel.
_DEPTHWISE = (WeightSpec("kernel", (-2, -1), None),)
_SEPARABLE = (WeightSpec("depthwise_kernel", (-2, -1), None), WeightSpec("pointwise_kernel", (-1,), -2))
_PRODUCES = LayerRoles(output_weight="kernel", channels=PRODUCES, channel_vectors=("bias",))

_record(
    L.Dense,
    weights=(WeightSpec("kernel", (-1,), 0, per_channel_quantization=False),),
    roles=_PRODUCES,
    macs=_dense_macs,
    export=ExportForm(ex.run_dense),
)
_record(L.EinsumDense, weights=einsum_dense_specs, export=ExportForm(ex.run_einsum_dense))
_record(L.MultiHeadAttention, weights=multi_head_attention_specs)
_record((L.RNN, L.Bidirectional), weights=recurrent_specs)
_record(L.TimeDistributed, weights=time_distributed_specs)
_record(L.Conv1D, weights=_CONV, roles=_PRODUCES, macs=_conv_macs, export=ExportForm(ex.run_conv1d, ("kernel",), always=True))
_record((L.Conv2D, L.Conv3D), weights=_CONV, roles=_PRODUCES, macs=_conv_macs, export=ExportForm(ex.run_conv))
_record(
    (L.Conv1DTranspose, L.Conv2DTranspose, L.Conv3DTranspose),
    weights=_CONV_TRANSPOSE, roles=_PRODUCES, macs=_conv_transpose_macs,
)  # fmt: skip
_record(
    L.DepthwiseConv1D,
    weights=_DEPTHWISE, roles=LayerRoles(output_weight="kernel", channels=KEEPS, channel_vectors=("bias",)), macs=_depthwise_macs,
    export=ExportForm(ex.run_depthwise_conv1d, ("kernel",), always=True),
)  # fmt: skip
_record(
    L.DepthwiseConv2D,
    weights=_DEPTHWISE, roles=LayerRoles(output_weight="kernel", channels=KEEPS, channel_vectors=("bias",)), macs=_depthwise_macs,
    export=ExportForm(ex.run_depthwise_conv2d),
)  # fmt: skip
_SEPARABLE_ROLES = LayerRoles(output_weight="pointwise_kernel", channels=PRODUCES, channel_vectors=("bias",))
_record(
    L.SeparableConv1D,
    weights=_SEPARABLE, roles=_SEPARABLE_ROLES, macs=_separable_macs,
    export=ExportForm(
        ex.run_separable_conv1d, ("depthwise_kernel", "pointwise_kernel"), always=True, internal=ex.separable_tensors
    ),
)  # fmt: skip
_record(
    L.SeparableConv2D,
    weights=_SEPARABLE, roles=_SEPARABLE_ROLES, macs=_separable_macs,
    export=ExportForm(ex.run_separable_conv2d, always=True, internal=ex.separable_tensors),
)  # fmt: skip
# Its table stays 8-bit: TFLite's int8 GATHER has no narrower form.
_record(
    L.Embedding,
    weights=(WeightSpec("embeddings", (0,), None, per_channel_quantization=False),),
    macs=no_macs, weight_bits=(8, 8),
)  # fmt: skip

# --- variables, none to optimize ---------------------------------------------------------------------------------

_record(
    L.BatchNormalization,
    roles=LayerRoles(passthrough=True, channels=KEEPS, folds_into_producer=True, channel_vectors=("gamma", "beta")),
    export=ExportForm(ex.run_batch_normalization, always=True, internal=ex.batch_normalization_tensors),
)
_record(
    L.LayerNormalization,
    roles=LayerRoles(passthrough=True),
    export=ExportForm(
        ex.run_layer_normalization, always=True, internal=ex.layer_norm_tensors,
        identity_after=ex.layer_norm_identities, post_training=True,
    ),
)  # fmt: skip
_record(
    L.Normalization,
    roles=LayerRoles(passthrough=True),
    export=ExportForm(ex.run_normalization, always=True, internal=ex.normalization_tensors),
)
_record(L.PReLU, roles=LayerRoles(passthrough=True))

# --- weightless: outputs are values of the input (TFLite keeps its scale) ----------------------------------------

_record((L.InputLayer, L.Permute), roles=LayerRoles(passthrough=True, same_scale=True))
_record(L.Flatten, roles=LayerRoles(passthrough=True, same_scale=True, channels=FLATTENS))
_record(L.Reshape, roles=LayerRoles(passthrough=True, same_scale=True, channels=_reshape_channels))
_record((L.Dropout, L.GaussianNoise, L.Identity), roles=LayerRoles(passthrough=True, same_scale=True, channels=ELEMENTWISE))
# Data augmentation: random in training, the identity at inference (so in the
# exported file), where a scale of its own would leave a requantize. A name
# this Keras lacks is skipped.
_AUGMENTATION = (
    "RandomFlip", "RandomRotation", "RandomZoom", "RandomTranslation", "RandomContrast", "RandomBrightness",
    "RandomColorDegeneration", "RandomColorJitter", "RandomElasticTransform", "RandomErasing",
    "RandomGaussianBlur", "RandomGrayscale", "RandomHue", "RandomInvert", "RandomPerspective",
    "RandomPosterization", "RandomSaturation", "RandomSharpness", "RandomShear", "AugMix", "RandAugment",
    "CutMix", "MixUp",
)  # fmt: skip
_record(
    tuple(getattr(L, name) for name in _AUGMENTATION if hasattr(L, name)),
    roles=LayerRoles(passthrough=True, same_scale=True, channels=ELEMENTWISE),
)
_record(
    (
        L.SpatialDropout1D, L.SpatialDropout2D, L.MaxPooling1D, L.MaxPooling2D, L.MaxPooling3D,
        L.ZeroPadding1D, L.ZeroPadding2D, L.Cropping1D, L.Cropping2D,
        # TFLite's int8 AVERAGE_POOL_2D requires its output on the input's scale.
        L.AveragePooling1D, L.AveragePooling2D, L.AveragePooling3D,
    ),
    roles=LayerRoles(passthrough=True, same_scale=True, channels=KEEPS),
)  # fmt: skip

# --- weightless: new values (their own output scale) -------------------------------------------------------------

def _relu_fuses(layer):  # TFLite fuses RELU and RELU6 only
    config = layer.get_config()
    return not config.get("negative_slope") and not config.get("threshold") and config.get("max_value") in (None, 6.0)


def _activation_fuses(layer):
    return getattr(layer.activation, "__name__", "") in ("relu", "relu6")


_record(L.Activation, roles=LayerRoles(passthrough=True, channels=_activation_channels, fused_activation=_activation_fuses))
_record(L.ReLU, roles=LayerRoles(passthrough=True, channels=ELEMENTWISE, fused_activation=_relu_fuses))
_record((L.LeakyReLU, L.ELU, L.GaussianDropout, L.AlphaDropout), roles=LayerRoles(passthrough=True, channels=ELEMENTWISE))
_record(
    (
        L.GlobalMaxPooling1D, L.GlobalMaxPooling2D, L.GlobalAveragePooling1D, L.GlobalAveragePooling2D,
        L.GlobalAveragePooling3D, L.UpSampling1D, L.UpSampling2D, L.SpatialDropout3D, L.GlobalMaxPooling3D,
        L.UpSampling3D, L.ZeroPadding3D, L.Cropping3D,
    ),
    roles=LayerRoles(passthrough=True, channels=KEEPS),
)  # fmt: skip
_record(
    L.Rescaling,
    roles=LayerRoles(passthrough=True, channels=KEEPS),
    export=ExportForm(ex.run_rescaling, always=True, internal=ex.rescaling_tensors),
)
_record(L.Add, roles=LayerRoles(passthrough=True, channels=MERGES, fuses_activation=True))
_record((L.Subtract, L.Maximum, L.Minimum), roles=LayerRoles(passthrough=True, channels=MERGES))
_record(
    L.Average,
    roles=LayerRoles(passthrough=True, channels=MERGES),
    export=ExportForm(ex.run_average, always=True, internal=ex.average_tensors),
)
_record(L.Multiply, roles=LayerRoles(passthrough=True, channels=MULTIPLIES))
_record(L.Concatenate, roles=LayerRoles(passthrough=True, channels=CONCATENATES))
_record(L.Softmax, roles=LayerRoles(passthrough=True, output_activation="softmax"))
_record(L.RepeatVector, roles=LayerRoles(passthrough=True))
