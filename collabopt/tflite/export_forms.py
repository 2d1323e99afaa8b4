"""The model the converter sees: each layer in the form TFLite export needs (export only).

:func:`export_model` replaces, in one pass over the model, every collabopt
wrapper by its export form, a layer computing in float16 by its float32
copy, a recurrent layer by its unrolled copy (or, with ``fused_lstm``, an
LSTM by :class:`~collabopt.tflite.fused_lstm.FusedLSTM`), and, for integer
modes, a layer whose Keras ops have no integer kernel by its
:class:`TFLiteForm`. The execution forms themselves are layer facts
(:mod:`collabopt.layers.execution`), read from each class's record.
"""

from __future__ import annotations

import functools

import keras

from collabopt.errors import UnsupportedLayerError
from collabopt.layers import base_layer
from collabopt.layers.composite import sublayer_items
from collabopt.layers.copy import copy_layer, copy_layer_or_share
from collabopt.layers.execution import call_in_tflite_form
from collabopt.layers.support import support_fact
from collabopt.tflite.fused_lstm import FusedLSTM, is_lstm
from collabopt.tflite.modes import ExportMode, export_mode
from collabopt.transform import iter_layers, map_layers
from collabopt.transform.shrink import pruned_channel_masks, shrink_model


def export_model(model: keras.Model, mode: str | ExportMode | None = None, *, fused_lstm: bool = False) -> keras.Model:
    """The model the converter sees: every layer in its export form, built in one pass.

    Wrappers are duck-typed by their ``export_layer()`` method (the wrapper
    contract, :class:`~collabopt.layers.OptimizationWrapper`): pruning and
    clustering wrappers become plain layers holding their final weights;
    quantization wrappers keep their fake-quant ops. A layer trained under
    mixed precision computes in its variables' dtype (float32: TFLite's
    modes start from float32 ops). For integer modes, a plain layer whose
    Keras form has an op without an integer kernel (LayerNormalization's NEG)
    runs as :class:`TFLiteForm`. Recurrent layers run unrolled, or, with
    ``fused_lstm``, every LSTM runs as :class:`FusedLSTM` holding its final
    (for QAT: fake-quantized) weights. The input model is not modified. For
    int8, a quantization wrapper's export form runs the input's own base
    layer, with the chain's final weights, the ranges and any folded bias as
    constants read once here, so the result shares those layers with
    ``model``: it is for conversion, not for training. Channels that
    filter pruning masks (in any chain: under clustering or QAT too) are
    removed, so the converter sees the physically smaller graph.

    Example:

    >>> import keras
    >>> m = keras.Sequential([keras.Input((3, 4)), keras.layers.SimpleRNN(2)])
    >>> export_model(m).layers[0].unroll, m.layers[0].unroll
    (True, False)
    """
    mode = export_mode(mode) if mode is not None else None
    integer_export = mode is not None and mode.integer and mode.keeps_fake_quant

    def fuses(layer):
        return fused_lstm and is_lstm(base_layer(layer))

    def needs_change(layer):
        plain_form = integer_export and (needs_ptq_form(layer) or bool(ptq_form_sublayers(base_layer(layer))))
        return (
            _exportable(layer) or needs_unrolling(base_layer(layer)) or plain_form or fuses(layer)
            or _mixed_precision(layer)
        )

    def export_form(layer):
        # ``layer`` is the input model's own (map_layers(replaces=...)): every
        # branch builds new layers from it (wrappers' export forms are new
        # layers holding copies of the final weights) and leaves it unchanged.
        if _mixed_precision(layer):
            # The float16 compute of a mixed_float16 model is a training
            # speed-up; the variables hold float32 values already.
            layer = copy_layer(layer, dtype=base_layer(layer).dtype_policy.variable_dtype)
        if fuses(layer):
            # The fused op's weights and gates are quantized by the converter
            # from calibration; QAT's fake-quantized weights keep their grid.
            return FusedLSTM(layer.stripped() if _exportable(layer) else copy_layer(layer))
        original = base_layer(layer)
        layer = layer.export_layer(mode=mode) if _exportable(layer) else copy_layer_or_share(layer)
        if integer_export and ptq_form_sublayers(base_layer(layer)):
            # A composite layer calling a LayerNormalization: its export copy
            # (never the input's own layer) runs that sublayer in its TFLite form.
            if base_layer(layer) is original:
                layer = copy_layer(original) if layer is original else layer.rewrap(copy_layer(original))
            run_sublayers_in_tflite_form(base_layer(layer))
        if integer_export and needs_ptq_form(layer):
            # A layer outside any QAT wrapper, calibrated by the converter.
            return TFLiteForm(layer, name=layer.name)
        base = base_layer(layer)
        if needs_unrolling(base):
            # Recurrent layers convert only unrolled (TensorList ops otherwise).
            unrolled = unrolled_copy(base)
            layer = unrolled if layer is base else layer.rewrap(unrolled)
        return layer

    if not any(needs_change(layer) for layer in iter_layers(model)):
        return model  # nothing to replace: convert the model as it is
    exported = map_layers(model, export_form, what="export", replaces=needs_change)
    pruned = pruned_channel_masks(model)
    # Filter pruning anywhere in a chain: the file holds the smaller graph,
    # as the strip-first route's does (export forms cut their constants).
    return shrink_model(exported, pruned) if pruned else exported


def _exportable(layer) -> bool:
    return callable(getattr(layer, "export_layer", None))


def _mixed_precision(layer) -> bool:
    """Whether ``layer`` (or a layer its wrappers wrap) computes in another dtype than its variables'."""
    while layer is not None:
        policy = layer.dtype_policy
        if policy.compute_dtype != policy.variable_dtype:
            return True
        layer = layer.layer if isinstance(layer, keras.layers.Wrapper) else None
    return False


def _recurrent(layer) -> bool:
    return isinstance(layer, (keras.layers.RNN, keras.layers.Bidirectional))


def needs_unrolling(layer) -> bool:
    """True for a recurrent layer (LSTM, GRU, SimpleRNN, Bidirectional) that is not unrolled yet.

    TFLite's converter meets TensorList ops in a Keras 3 recurrent loop; an
    unrolled copy converts to FULLY_CONNECTED and element-wise ops, all with
    integer kernels.
    """
    if not _recurrent(layer):
        return False
    inner = layer.forward_layer if isinstance(layer, keras.layers.Bidirectional) else layer
    return not getattr(inner, "unroll", True)


def unrolled_copy(layer, input_shape=None):
    """A copy of recurrent ``layer`` with ``unroll=True`` and the same weights (for export).

    Raises:
        UnsupportedLayerError: the sequence length is not fixed (an unrolled
            loop needs it); the message names the layer.
    """
    build_config = layer.get_build_config() or {}
    shape = input_shape or build_config.get("input_shape")
    if shape is None or len(shape) < 2 or shape[1] is None:
        raise UnsupportedLayerError(
            f"layer '{layer.name}' ({type(layer).__name__}) has no fixed sequence length (input shape "
            f"{shape}); TFLite export unrolls recurrent layers, so give the model Input a time dimension, "
            "e.g. keras.Input((40, 13))."
        )
    config = layer.get_config()
    if isinstance(layer, keras.layers.Bidirectional):
        config["layer"]["config"]["unroll"] = True
        if config.get("backward_layer"):
            config["backward_layer"]["config"]["unroll"] = True
    else:
        config["unroll"] = True
    with keras.saving.custom_object_scope({type(layer).__name__: type(layer)}):
        copy = type(layer).from_config(config)
    copy.build_from_config(build_config)
    copy.set_weights(layer.get_weights())
    return copy


def needs_ptq_form(layer) -> bool:
    """True for a plain layer that int8 export runs as :class:`TFLiteForm`."""
    form = support_fact(layer, "export")
    return form is not None and form.post_training


def ptq_form_sublayers(layer) -> list:
    """The layers inside composite ``layer`` (at any depth) that int8 export runs in their TFLite form."""
    found = []
    for _, sub in sublayer_items(layer):
        if needs_ptq_form(sub):
            found.append(sub)
        else:
            found.extend(ptq_form_sublayers(sub))
    return found


def run_sublayers_in_tflite_form(layer) -> None:
    """Makes every sublayer of ``layer`` that :func:`needs_ptq_form` compute as the ops TFLite executes.

    For export only, on a copy made for it: a composite layer calls its
    sublayers itself, so they cannot be replaced in a graph; each such
    sublayer's ``call`` is redirected on the instance (the same values,
    e.g. LayerNormalization without the NEG op TFLite keeps in float).
    """
    for sub in ptq_form_sublayers(layer):
        # An instance attribute: Keras' ``__call__`` runs ``self.call``.
        object.__setattr__(sub, "call", functools.partial(_call_plain_in_tflite_form, sub))


def _call_plain_in_tflite_form(layer, inputs, *args, **kwargs):
    return call_in_tflite_form(layer, inputs, {})


class TFLiteForm(keras.layers.Wrapper):
    """Runs the wrapped layer as the ops TFLite executes (export only, never saved).

    It computes what the layer computes; the converter then meets only ops
    with integer kernels (e.g. LayerNormalization without its NEG).

    Example:

    >>> import keras, numpy as np
    >>> from collabopt.tflite.export_forms import TFLiteForm
    >>> ln = keras.layers.LayerNormalization(); x = np.random.rand(2, 3, 4).astype("float32")
    >>> bool(np.allclose(TFLiteForm(ln)(x), ln(x), atol=1e-5))
    True
    """

    def call(self, inputs):
        return call_in_tflite_form(self.layer, inputs, {})

    def compute_output_shape(self, input_shape):
        return self.layer.compute_output_shape(input_shape)
