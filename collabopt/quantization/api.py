"""quantize_model, quantize_annotate_*, quantize_apply, calibrate, strip_quantization."""

from __future__ import annotations

import keras
import numpy as np

from collabopt.datasets.batches import iter_batches
from collabopt.errors import InvalidArgumentError
from collabopt.layers import base_layer, wrapper_chain
from collabopt.quantization.annotate import QuantizeAnnotate, annotate_model
from collabopt.quantization.config import QuantizeConfig
from collabopt.quantization.schemes import Default8BitQuantizeScheme, QuantizeScheme
from collabopt.quantization.technique import QUANTIZATION, QuantizationConfig
from collabopt.quantization.wrapper import QuantizeWrapper
from collabopt.technique import apply, check_chain, tfmot_scope
from collabopt.transform import iter_layers, map_layers
from collabopt.transform.shrink import shrunk_once_unwrapped


def quantize_annotate_layer(to_annotate, quantize_config: QuantizeConfig | None = None):
    """Marks one layer for quantization by :func:`quantize_apply`.

    Args:
        to_annotate: A Keras layer (plain or wrapped by pruning/clustering).
        quantize_config: How to quantize it; None: the scheme's default (a
            layer the scheme does not know then needs a config).

    Example:

    >>> import keras, collabopt.keras as co
    >>> inputs = keras.Input((4,))
    >>> x = co.quantize_annotate_layer(keras.layers.Dense(3))(inputs)
    >>> model = co.quantize_apply(keras.Model(inputs, keras.layers.Dense(2)(x)))
    """
    if not isinstance(to_annotate, keras.layers.Layer) or isinstance(to_annotate, keras.Model):
        raise InvalidArgumentError(f"quantize_annotate_layer expects a keras layer; received {to_annotate!r}.")
    check_chain(to_annotate, QUANTIZATION, "quantize_annotate_layer")
    base = base_layer(to_annotate)
    if quantize_config is None and base.built and Default8BitQuantizeScheme().config_for(base) is None:
        raise InvalidArgumentError(
            f"quantize_annotate_layer: layer '{base.name}' ({type(base).__name__}) is not supported by the "
            "default schemes and needs a QuantizeConfig (quantize_annotate_layer(layer, quantize_config=...))."
        )
    return QuantizeAnnotate(to_annotate, quantize_config)


def quantize_annotate_model(to_annotate):
    """Marks every layer of a Sequential / Functional / nested model for quantization."""
    if not isinstance(to_annotate, keras.Model):
        raise InvalidArgumentError(f"quantize_annotate_model expects a keras.Model; received {to_annotate!r}.")
    what = "quantize_annotate_model"
    return annotate_model(to_annotate, lambda layer: check_chain(layer, QUANTIZATION, what), what)


def quantize_apply(model, scheme: QuantizeScheme | None = None, *, preserve=None, strict: bool = False):
    """Quantizes the annotated layers of ``model`` (returns a new model; the input is untouched).

    Args:
        model: A model with :class:`QuantizeAnnotate` layers (from
            :func:`quantize_annotate_layer` or :func:`quantize_annotate_model`).
        scheme: :class:`Default8BitQuantizeScheme` (default) or
            :class:`Default16x8QuantizeScheme`.
        preserve: Constraint kinds to keep on layers that arrive *stripped*.
            ``None`` (default): the scheme's own list (the TFMOT preserve
            schemes), else detected from the weights by each registered kind
            (e.g. a weight with at least 5% exact zeros keeps its sparsity, one
            with few distinct values, <= 256 and <= a quarter of its size per
            tensor or per channel, keeps its clusters). A tuple of kind names
            derives those kinds wherever the chain does not record them (with
            a warning where that is ambiguous); ``()`` opts out. Constraints
            recorded by wrappers still in the chain are always kept.
        strict: Raise instead of warning when an annotated layer cannot be
            quantized by the scheme.

    Returns:
        The QAT model.

    Raises:
        InvalidArgumentError: nothing annotated, an already-quantized layer,
            an unknown ``preserve`` kind.
        UnsupportedLayerError: an unsupported annotated layer with ``strict=True``.
    """
    return apply(model, QuantizationConfig(scheme, preserve, strict, selective=True), what="quantize_apply")


def quantize_model(to_quantize, scheme: QuantizeScheme | None = None, *, preserve=None, strict: bool = False):
    """Quantization-aware training for a whole Sequential / Functional / nested model.

    Chained on pruning (PQAT), clustering (CQAT) or both (PCQAT), it keeps the
    constraints those wrappers record. Returns a new model; the input is never
    modified.

    Args:
        to_quantize: The model.
        scheme: :class:`Default8BitQuantizeScheme` (default) or
            :class:`Default16x8QuantizeScheme`.
        preserve: Constraint kinds to derive and keep on stripped layers (see
            :func:`quantize_apply`).
        strict: Raise on layers the scheme cannot quantize (default: one warning).

    Example:

    >>> import keras, collabopt.keras as co
    >>> model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4, activation="relu"), keras.layers.Dense(2)])
    >>> qat = co.quantize_model(model)
    >>> [type(l).__name__ for l in qat.layers]
    ['QuantizeWrapper', 'QuantizeWrapper']
    """
    if not isinstance(to_quantize, keras.Model):
        raise InvalidArgumentError(
            f"quantize_model expects a keras.Model; received {to_quantize!r}. For single layers use "
            "quantize_annotate_layer + quantize_apply."
        )
    already = [base_layer(w).name for w in quantize_wrappers(to_quantize)]
    if already:
        raise InvalidArgumentError(f"quantize_model: layers {already} are already quantized; quantize a model once.")
    return apply(to_quantize, QuantizationConfig(scheme, preserve, strict))


def quantize_wrappers(model) -> list[QuantizeWrapper]:
    """The quantization wrappers of ``model``."""
    return [w for layer in iter_layers(model) for w in wrapper_chain(layer) if isinstance(w, QuantizeWrapper)]


def calibrate(model, data, batches: int = 20):
    """Sets the activation ranges of a QAT model from data, without training it.

    Runs float forward passes (eagerly) over up to ``batches`` batches of
    ``data`` (an array, a ``tf.data.Dataset`` or an iterable of batches) and
    widens every range to the values seen. Modifies ``model``'s range
    variables in place (it is the model being trained, not an input to copy).
    """
    wrappers = quantize_wrappers(model)
    if not wrappers:
        raise InvalidArgumentError(f"calibrate: model '{model.name}' has no quantization wrappers.")
    for w in wrappers:
        w.calibrating = True
    try:
        source = data
        if isinstance(data, np.ndarray):
            source = (data[i : i + 64] for i in range(0, len(data), 64))
        for i, batch in enumerate(iter_batches(source, model, "calibrate data")):
            if i >= batches:
                break
            model(batch if len(batch) > 1 else batch[0], training=False)
    finally:
        for w in wrappers:
            w.calibrating = False
    return model


def strip_quantization(model):
    """Plain float layers holding the fake-quantized (and BN-folded) weights; no fake-quant ops.

    Stages inside QAT are baked in; channels that filter pruning masked are
    removed once no wrapper is left, as :func:`strip_pruning` removes them.
    """

    def fn(layer):
        return layer.float_layer() if isinstance(layer, QuantizeWrapper) else None

    return shrunk_once_unwrapped(model, map_layers(model, fn, what="strip_quantization"))


def strip_clustering_cqat(model):
    """TFMOT's name: the CQAT/PCQAT model with its clustering (and pruning) wrappers baked into the weights.

    Quantization wrappers stay, so the result still trains and converts as a
    QAT model; its kernels hold their cluster values exactly.
    """

    def fn(layer):
        return layer.with_inner_stripped() if isinstance(layer, QuantizeWrapper) else None

    return map_layers(model, fn, what="strip_clustering_cqat")


quantize_scope = tfmot_scope
