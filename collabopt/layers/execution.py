"""Execution forms: running a layer on weights shaped as the TFLite kernel consumes them.

TensorFlow runs every 1-D convolution (Conv1D, DepthwiseConv1D,
SeparableConv1D) as a 2-D convolution on kernels expanded to rank 4, and the
TFLite converter cannot carry a per-channel quantization axis through that
expansion (``tfl.reshape`` ... quantized axis 2 vs 3). A quantized weight must
therefore be fake-quantized *in the form the op consumes*: ``(1, k, in, out)``
rather than ``(k, in, out)``. This module gives that form for each layer class
and runs the layer on it, computing exactly what the layer's own ``call``
computes.

These forms are layer facts used in training too (QAT fake-quantizes the
tensors between the ops TFLite splits a layer into); what only export needs
(unrolling, the post-training forms, the fused LSTM) lives in
:mod:`collabopt.tflite.export_forms` and :mod:`collabopt.tflite.fused_lstm`.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from collabopt.layers.composite import INPUT, trace_sublayer_calls
from collabopt.layers.roles import is_fused_activation, layer_roles
from collabopt.layers.support import support_fact


def _expand_inputs(layer, inputs):
    axis = 1 if layer.data_format == "channels_last" else 2
    return ops.expand_dims(inputs, axis), axis


def _bias(layer, outputs, channels):
    if layer.use_bias:
        rank = len(outputs.shape)
        shape = (1,) * (rank - 1) + (channels,) if layer.data_format == "channels_last" else (1, channels) + (1,) * (rank - 2)
        outputs = ops.add(outputs, ops.reshape(layer.bias, shape))
    return outputs


def _causal(layer, inputs):
    if layer.padding != "causal":
        return inputs, layer.padding
    left = layer.dilation_rate[0] * (layer.kernel_size[0] - 1)
    pad = [[0, 0], [left, 0], [0, 0]] if layer.data_format == "channels_last" else [[0, 0], [0, 0], [left, 0]]
    return ops.pad(inputs, pad), "valid"


def run_conv1d(layer, inputs, weights, between=None):
    inputs, padding = _causal(layer, inputs)
    x, axis = _expand_inputs(layer, inputs)
    y = ops.conv(
        x,
        weights["kernel"],
        strides=(1, layer.strides[0]),
        padding=padding,
        dilation_rate=(1, layer.dilation_rate[0]),
        data_format=layer.data_format,
    )
    return _bias(layer, ops.squeeze(y, axis), layer.filters)


def run_depthwise_conv1d(layer, inputs, weights, between=None):
    x, axis = _expand_inputs(layer, inputs)
    kernel = weights["kernel"]
    y = ops.depthwise_conv(
        x,
        kernel,
        strides=(1, layer.strides[0]),
        padding=layer.padding,
        dilation_rate=(1, layer.dilation_rate[0]),
        data_format=layer.data_format,
    )
    return _bias(layer, ops.squeeze(y, axis), int(kernel.shape[-2] * kernel.shape[-1]))


def _separable(layer, x, weights, between, strides, dilation):
    between = between or (lambda t, i: t)
    # What tf.nn.separable_conv2d computes: a depthwise conv, then a 1x1 conv,
    # as two ops, so the tensor between them can be fake-quantized as TFLite
    # stores it (DEPTHWISE_CONV_2D then CONV_2D).
    mid = ops.depthwise_conv(
        x, weights["depthwise_kernel"], strides=strides, padding=layer.padding,
        dilation_rate=dilation, data_format=layer.data_format,
    )
    mid = between(mid, 0)
    return ops.conv(mid, weights["pointwise_kernel"], strides=1, padding="valid", data_format=layer.data_format)


def run_separable_conv1d(layer, inputs, weights, between=None):
    x, axis = _expand_inputs(layer, inputs)
    y = _separable(layer, x, weights, between, (1, layer.strides[0]), (1, layer.dilation_rate[0]))
    return _bias(layer, ops.squeeze(y, axis), layer.filters)


def run_separable_conv2d(layer, inputs, weights, between=None):
    y = _separable(layer, inputs, weights, between, tuple(layer.strides), tuple(layer.dilation_rate))
    return _bias(layer, y, layer.filters)


def run_conv(layer, inputs, weights, between=None):
    return _bias(layer, layer.convolution_op(inputs, weights["kernel"]), layer.filters)


def run_depthwise_conv2d(layer, inputs, weights, between=None):
    kernel = weights["kernel"]
    y = ops.depthwise_conv(
        inputs, kernel, strides=tuple(layer.strides), padding=layer.padding,
        dilation_rate=tuple(layer.dilation_rate), data_format=layer.data_format,
    )
    return _bias(layer, y, int(kernel.shape[-2] * kernel.shape[-1]))


def run_dense(layer, inputs, weights, between=None):
    kernel = weights["kernel"]
    inner = tuple(inputs.shape[1:-1])
    if inner and None not in inner:
        # A Dense over (batch, ..., features), e.g. ConvNeXt's pointwise
        # layers: TF's matmul reshapes with a shape computed at run time, which
        # leaves FULLY_CONNECTED in float; constant reshapes around a 2-D
        # matmul convert to RESHAPE, FULLY_CONNECTED (bias fused), RESHAPE.
        flat = ops.reshape(inputs, (-1, int(inputs.shape[-1])))
        y = ops.matmul(flat, kernel)
        y = ops.add(y, layer.bias) if layer.bias is not None else y
        return ops.reshape(y, (-1,) + inner + (int(kernel.shape[-1]),))
    y = ops.matmul(inputs, kernel)
    return ops.add(y, layer.bias) if layer.bias is not None else y


def run_einsum_dense(layer, inputs, weights, between=None):
    y = ops.einsum(layer.equation, inputs, weights["kernel"])
    return ops.add(y, layer.bias) if layer.bias is not None else y


_LAYER_NORM_TENSORS = (
    "mean", "squared_difference", "variance", "variance_plus_epsilon", "inverse_std", "centered", "normalized", "scaled",
)


def run_layer_normalization(layer, inputs, weights, between=None):
    # (x - mean) * rsqrt(var + eps) * gamma + beta, with ops that all have
    # int8 kernels (MEAN, SQUARED_DIFFERENCE, ADD, RSQRT, SUB, MUL); Keras'
    # own formulation goes through a NEG op, which TFLite keeps in float.
    # ``between`` sees each intermediate tensor, so QAT gives each a range.
    tags = layer_norm_tensors(layer)

    def at(tensor, tag):
        return between(tensor, tags.index(tag)) if tag in tags else tensor

    x = ops.convert_to_tensor(inputs)
    rank = len(x.shape)
    axes = [a % rank for a in (layer.axis if isinstance(layer.axis, (list, tuple)) else [layer.axis])]
    shape = [1] * rank
    for a in axes:
        shape[a] = x.shape[a]

    def param(variable):
        return ops.reshape(ops.cast(variable, x.dtype), shape)

    if getattr(layer, "rms_scaling", False):
        y = x * ops.rsqrt(ops.mean(ops.square(x), axis=axes, keepdims=True) + layer.epsilon)
        return y * param(layer.gamma)
    mean = at(ops.mean(x, axis=axes, keepdims=True), "mean")
    squared = at(_squared_difference(x, mean), "squared_difference")
    variance = at(ops.mean(squared, axis=axes, keepdims=True), "variance")
    inverse = at(ops.rsqrt(at(variance + layer.epsilon, "variance_plus_epsilon")), "inverse_std")
    y = at(at(x - mean, "centered") * inverse, "normalized")
    if layer.scale:
        y = y * param(layer.gamma)
        if layer.center:
            y = at(y, "scaled")
    if layer.center:
        y = y + param(layer.beta)
    return y


def _channel_shape(layer, x, axis):
    rank = len(x.shape)
    axes = [a % rank for a in (axis if isinstance(axis, (list, tuple)) else [axis])]
    shape = [1] * rank
    for a in axes:
        shape[a] = x.shape[a]
    return shape


def run_batch_normalization(layer, inputs, weights, between=None):
    # Inference form with the moving statistics (frozen under QAT, as for a
    # BatchNormalization folded into a conv): x * scale + offset, i.e. TFLite's
    # MUL then ADD; ``between`` sees the product.
    x = ops.convert_to_tensor(inputs)
    shape = _channel_shape(layer, x, layer.axis)
    inverse = ops.rsqrt(ops.cast(layer.moving_variance, x.dtype) + layer.epsilon)
    scale = inverse * ops.cast(layer.gamma, x.dtype) if layer.scale else inverse
    offset = -ops.cast(layer.moving_mean, x.dtype) * scale
    if layer.center:
        offset = offset + ops.cast(layer.beta, x.dtype)
    return between(x * ops.reshape(scale, shape), 0) + ops.reshape(offset, shape)


def run_normalization(layer, inputs, weights, between=None):
    # (x - mean) * (1 / std): SUB then MUL (TFLite has no int8 DIV).
    x = ops.convert_to_tensor(inputs)
    inverse = 1.0 / ops.maximum(ops.sqrt(ops.cast(layer.variance, x.dtype)), keras.backend.epsilon())
    centered = x - ops.cast(layer.mean, x.dtype)
    return (between(centered, 0) if internal_tensors(layer)[:1] == ("centered",) else centered) * inverse


def run_rescaling(layer, inputs, weights, between=None):
    x = ops.convert_to_tensor(inputs)
    scale = ops.cast(ops.convert_to_tensor(layer.scale), x.dtype)
    offset = ops.cast(ops.convert_to_tensor(layer.offset), x.dtype)
    if internal_tensors(layer)[:1] != ("scaled",):
        return x * scale
    return between(x * scale, 0) + offset


def run_average(layer, inputs, weights, between=None):
    # Average is a sum and a multiply by 1/n in TFLite (ADDs, MUL); each
    # partial sum needs a range (one range, shared by all of them).
    total = inputs[0]
    for x in inputs[1:]:
        total = between(ops.add(total, x), 0)
    return ops.multiply(total, 1.0 / len(inputs))


def _squared_difference(x, mean):
    # TFLite's SQUARED_DIFFERENCE: on TensorFlow the op itself, so the
    # converter keeps it as one op (whose output QAT quantizes); elsewhere
    # the same values (those graphs are exported by a TensorFlow process).
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return tf.math.squared_difference(x, mean)
    return ops.square(x - mean)


# Tensors TFLite computes *inside* a layer, between the ops it becomes (each
# an ExportForm's ``internal``). A tensor is internal only while the op after
# it does something: the converter folds ``x + 0`` and ``x - 0`` away, and two
# quantizations of one tensor would become a float requantize.
def layer_norm_tensors(layer):
    if getattr(layer, "rms_scaling", False):
        return ()
    scaled = ("scaled",) if layer.scale and layer.center else ()
    return _LAYER_NORM_TENSORS[:-1] + scaled


def _nonzero(value) -> bool:
    return bool(np.any(np.asarray(keras.ops.convert_to_numpy(value)) != 0))


def separable_tensors(layer):
    return ("depthwise_output",)


def batch_normalization_tensors(layer):
    return ("scaled",)


def normalization_tensors(layer):
    return ("centered",) if layer.built and _nonzero(layer.mean) else ()


def rescaling_tensors(layer):
    return ("scaled",) if _nonzero(layer.offset) else ()


def average_tensors(layer):
    return ("sum",)


def layer_norm_identities(layer):
    """Internal tensors an untrained LayerNormalization's next op leaves unchanged (``* 1``, ``+ 0``)."""
    tensors = []
    if layer.scale and not _nonzero(keras.ops.convert_to_numpy(layer.gamma) - 1):
        tensors.append("normalized")  # then * gamma, all ones
    if layer.scale and layer.center and not _nonzero(layer.beta):
        tensors.append("scaled")  # then + beta, all zeros
    return tensors


def identity_followed_tensors(layer) -> tuple[str, ...]:
    """Internal tensors of ``layer`` that the op after them leaves unchanged, given its current weights.

    An untrained LayerNormalization multiplies by a ``gamma`` of ones and adds
    a ``beta`` of zeros; the converter drops both ops, so an int8 export must
    quantize those tensors once (with the range that follows), not twice.

    Example:

    >>> import keras
    >>> from collabopt.layers.execution import identity_followed_tensors
    >>> ln = keras.layers.LayerNormalization(); ln.build((None, 4))
    >>> identity_followed_tensors(ln)
    ('normalized', 'scaled')
    """
    form = support_fact(layer, "export")
    if not layer.built or form is None or form.identity_after is None:
        return ()
    present = internal_tensors(layer)
    return tuple(t for t in form.identity_after(layer) if t in present)


#: Activations TFLite fuses into the conv / fully-connected op before them.
FUSED_ACTIVATIONS = ("linear", "relu", "relu6")


def _activation_name(layer) -> str:
    activation = getattr(layer, "activation", None)
    return getattr(activation, "__name__", "linear") if activation is not None else "linear"


def _splits_activation(layer) -> bool:
    return support_fact(layer, "export") is not None and _activation_name(layer) not in FUSED_ACTIVATIONS


def internal_tensors(layer) -> tuple[str, ...]:
    """Names of the tensors TFLite computes *inside* ``layer``, between the ops it becomes.

    SeparableConv has its depthwise output; a conv / dense layer whose
    activation TFLite does not fuse (softmax, gelu, swish, ...) has its
    pre-activation output.

    Example:

    >>> import keras
    >>> from collabopt.layers.execution import internal_tensors
    >>> internal_tensors(keras.layers.SeparableConv2D(4, 3)), internal_tensors(keras.layers.Dense(4, "softmax"))
    (('depthwise_output',), ('activation_input',))
    """
    form = support_fact(layer, "export")
    if form is None and _is_handled_as_composite(layer):
        return composite_internal_tensors(layer)
    tags = form.internal(layer) if form is not None and form.internal is not None else ()
    return tuple(tags) + (("activation_input",) if _splits_activation(layer) else ())


def _is_handled_as_composite(layer) -> bool:
    from collabopt.layers.registry import handled_as_composite  # the registry imports this module

    return handled_as_composite(layer)


def composite_internal_tensors(layer) -> tuple[str, ...]:
    """The sublayer outputs inside composite ``layer`` that QAT fake-quantizes, by attribute path.

    Read once from a symbolic call of the layer (which sublayer's output
    feeds which): every sublayer's single output is an int8 tensor of the
    exported file, except the layer's own output (its output quantizer
    covers it), outputs of same-scale layers (pooling, dropout, reshapes),
    and a conv / dense output that only a BatchNormalization or a fused
    ReLU consumes (TFLite folds them into one op: their output is the tensor).
    A weighted sublayer whose input is the output of a plain op (no range)
    gets its input quantized too (``"proj:input"``).

    Example:

    >>> import keras
    >>> class Block(keras.layers.Layer):
    ...     def __init__(self, **kwargs):
    ...         super().__init__(**kwargs)
    ...         self.conv = keras.layers.Conv2D(4, 3, use_bias=False)
    ...         self.bn = keras.layers.BatchNormalization()
    ...         self.proj = keras.layers.Conv2D(4, 1)
    ...     def call(self, x):
    ...         return self.proj(keras.ops.relu(self.bn(self.conv(x))))
    >>> block = Block()
    >>> _ = block(keras.KerasTensor((None, 8, 8, 3)))
    >>> composite_internal_tensors(block), composite_batchnorm_folds(block)
    (('bn', 'proj:input'), (('conv', 'bn'),))
    """
    return _composite_plan(layer)[0]


def composite_batchnorm_folds(layer) -> tuple[tuple[str, str], ...]:
    """``(producer path, BatchNormalization path)`` pairs inside composite ``layer`` that QAT folds, as TFLite does.

    A conv / dense sublayer (a layer whose roles name an output weight, with
    a linear activation and a ``use_bias`` option) whose output only a
    BatchNormalization over the last axis reads, the BatchNormalization being
    called once, on it alone.
    """
    return _composite_plan(layer)[1]


def _composite_plan(layer):
    cached = layer.__dict__.get("_collabopt_composite_plan")
    if cached is not None:
        return cached
    if not layer.built:
        return (), ()
    from collabopt.layers.copy import fresh_call_arguments
    from collabopt.layers.registry import handled_as_composite

    args, kwargs = fresh_call_arguments(layer)
    calls, layer_inputs, layer_outputs = trace_sublayer_calls(
        layer, args, kwargs, is_leaf=lambda sub: not handled_as_composite(sub)
    )
    calls_of = {}
    for call in calls:
        calls_of[call.path] = calls_of.get(call.path, 0) + 1
    selected, folds = [], []
    quantized = set(layer_inputs)  # tensors with a range: the layer's inputs, then selected outputs
    for call in calls:
        roles = layer_roles(call.layer)
        if roles.same_scale and call.first_input <= quantized:
            quantized |= call.outputs
        if call.path in selected or len(call.outputs) != 1 or call.outputs & layer_outputs or roles.same_scale:
            continue
        after = [c for c in calls if c.inputs & call.outputs]
        produces = roles.output_weight is not None and _activation_name(call.layer) == "linear"
        if after and produces and all(_absorbs_into_producer(c.layer) for c in after):
            bn = after[0]
            if (
                len(after) == 1 and calls_of[call.path] == 1 and calls_of[bn.path] == 1 and bn.inputs == call.outputs
                and layer_roles(bn.layer).folds_into_producer and _folds_over_last_axis(bn.layer) and bn.layer.center
                and "use_bias" in call.layer.get_config()
            ):
                folds.append((call.path, bn.path))
            continue
        selected.append(call.path)
        quantized |= call.outputs
    # A weighted sublayer reading a tensor no range covers (a plain op's
    # output, ``keras.ops.relu(h)``) gets its input quantized: TFLite's op
    # takes int8 inputs, and the converter stores a 4-bit filter as INT4 only
    # when every input of its op comes with a trained range.
    inputs = [
        call.path + INPUT
        for call in calls
        if _has_weights(call.layer) and calls_of[call.path] == 1 and call.first_input and not call.first_input <= quantized
    ]
    plan = (tuple(selected) + tuple(inputs), tuple(folds))
    object.__setattr__(layer, "_collabopt_composite_plan", plan)
    return plan


def _has_weights(layer) -> bool:
    from collabopt.layers.registry import weight_specs

    return bool(weight_specs(layer))


def _folds_over_last_axis(bn) -> bool:
    axis = bn.axis if isinstance(bn.axis, int) else (bn.axis[0] if len(bn.axis) == 1 else None)
    shape = (bn.get_build_config() or {}).get("input_shape")
    return axis == -1 or (shape is not None and axis == len(shape) - 1)


def _absorbs_into_producer(layer) -> bool:
    """A BatchNormalization or a ReLU / ReLU6, which TFLite folds into the conv or dense op before it."""
    return layer_roles(layer).folds_into_producer or is_fused_activation(layer)


def _dense_over_sequence(layer) -> bool:
    if type(layer) is not keras.layers.Dense:
        return False
    shape = (layer.get_build_config() or {}).get("input_shape")
    return shape is not None and len(shape) > 2


def has_tflite_form(layer) -> bool:
    """True if quantization must run ``layer`` as the ops TFLite executes (see :func:`call_in_tflite_form`)."""
    form = support_fact(layer, "export")
    return (form is not None and form.always) or _splits_activation(layer) or _dense_over_sequence(layer)


def to_execution_form(layer, weights: dict) -> dict:
    """``weights`` reshaped as the TFLite kernel of ``layer`` consumes them (unchanged for most layers).

    Output-channel axes of the registry are negative, so they name the same
    axes in both forms.

    Example:

    >>> import keras
    >>> from collabopt.layers.execution import to_execution_form
    >>> conv = keras.layers.Conv1D(4, 3); conv.build((None, 10, 2))
    >>> tuple(to_execution_form(conv, {"kernel": conv.kernel})["kernel"].shape)
    (1, 3, 2, 4)
    """
    form = support_fact(layer, "export")
    if form is None:
        return dict(weights)
    names = form.expanded
    return {k: ops.expand_dims(v, 0) if k in names and len(v.shape) == 3 else v for k, v in weights.items()}


def call_in_tflite_form(layer, inputs, weights: dict, between=None):
    """Runs ``layer`` as the ops TFLite executes, with some weights replaced (any form).

    Args:
        layer: A layer with :func:`has_tflite_form`.
        inputs: Its inputs.
        weights: Replacement weights (variable shape or execution form); the
            others are read from the layer.
        between: ``between(tensor, index)`` is applied to each internal tensor
            (index into :func:`internal_tensors`), e.g. a fake quantizer.
    """
    run = support_fact(layer, "export").run
    full = {n: getattr(layer, n) for n in ("kernel", "depthwise_kernel", "pointwise_kernel") if hasattr(layer, n)}
    full.update(weights)
    between = between or (lambda t, i: t)
    outputs = run(layer, inputs, to_execution_form(layer, full), between=between)
    if _activation_name(layer) == "linear":
        return outputs
    if _splits_activation(layer):
        outputs = between(outputs, internal_tensors(layer).index("activation_input"))
    return layer.activation(outputs)


def output_range_calibrated(layer) -> bool:
    """True when int8 export of a QAT ``layer`` must leave its outputs to calibration.

    An unrolled GRU (plain or in ``Bidirectional``) that returns its sequence
    ends every step in an ADD whose result is both that step's output (packed
    into the sequence, which must share the sequence's scale) and the next
    step's state; given the trained range of the sequence as well, the
    converter left those ADDs in float (measured, TF 2.21). Without it, the
    calibrated ranges give an all-int8 file. LSTM and SimpleRNN end their
    steps in a MUL or TANH and keep the trained range.

    Example:

    >>> import keras
    >>> output_range_calibrated(keras.layers.GRU(4, return_sequences=True))
    True
    >>> output_range_calibrated(keras.layers.GRU(4))
    False
    """
    inners = [layer.forward_layer, layer.backward_layer] if isinstance(layer, keras.layers.Bidirectional) else [layer]
    return all(isinstance(inner, keras.layers.GRU) and inner.return_sequences for inner in inners)
