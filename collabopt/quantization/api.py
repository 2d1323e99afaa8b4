"""quantize_model, quantize_annotate_*, quantize_apply, calibrate, strip_quantization."""

from __future__ import annotations

import contextlib
import warnings

import keras

from collabopt.layers import base_layer, optimizable_variables, spec_for, transformable_weight_names, wrapper_chain
from collabopt.preserve import PreserveWrapper, constraints_on, get_kind, known_kinds
from collabopt.quantization import graph
from collabopt.quantization.annotate import QuantizeAnnotate
from collabopt.layers.copy import copy_layer
from collabopt.quantization.config import QuantizeConfig
from collabopt.quantization.schemes import Default8BitQuantizeScheme, FoldedBatchNormalization, QuantizeScheme
from collabopt.quantization.wrapper import QuantizeWrapper
from collabopt.transform import iter_layers, map_layers


def _is_quantized(layer) -> bool:
    return any(isinstance(w, QuantizeWrapper) for w in wrapper_chain(layer))


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
        raise ValueError(f"quantize_annotate_layer expects a keras layer; received {to_annotate!r}.")
    if _is_quantized(to_annotate):
        raise ValueError(f"quantize_annotate_layer: layer '{base_layer(to_annotate).name}' is already quantized.")
    base = base_layer(to_annotate)
    if quantize_config is None and base.built and Default8BitQuantizeScheme().config_for(base) is None:
        raise ValueError(
            f"quantize_annotate_layer: layer '{base.name}' ({type(base).__name__}) is not supported by the "
            "default schemes and needs a QuantizeConfig (quantize_annotate_layer(layer, quantize_config=...))."
        )
    return QuantizeAnnotate(to_annotate, quantize_config)


def quantize_annotate_model(to_annotate):
    """Marks every layer of a Sequential / Functional / nested model for quantization."""
    if not isinstance(to_annotate, keras.Model):
        raise ValueError(f"quantize_annotate_model expects a keras.Model; received {to_annotate!r}.")

    def fn(layer):
        if isinstance(layer, QuantizeAnnotate):
            return None
        if _is_quantized(layer):
            raise ValueError(
                f"quantize_annotate_model: layer '{base_layer(layer).name}' is already quantized; quantize a model once."
            )
        return QuantizeAnnotate(layer)

    return map_layers(to_annotate, fn, what="quantize_annotate_model")


def _check_preserve(preserve):
    if preserve is None:
        return ()
    if isinstance(preserve, str):
        preserve = (preserve,)
    unknown = [p for p in preserve if p not in known_kinds()]
    if unknown:
        raise ValueError(f"preserve={tuple(preserve)}: unknown constraint kinds {unknown}; known: {known_kinds()}.")
    return tuple(preserve)


def quantize_apply(model, scheme: QuantizeScheme | None = None, *, preserve=None, strict: bool = False):
    """Quantizes the annotated layers of ``model`` (returns a new model; the input is untouched).

    Args:
        model: A model with :class:`QuantizeAnnotate` layers (from
            :func:`quantize_annotate_layer` or :func:`quantize_annotate_model`).
        scheme: :class:`Default8BitQuantizeScheme` (default) or
            :class:`Default16x8QuantizeScheme`.
        preserve: Constraint kinds to keep on layers that arrive *stripped*.
            ``None`` (default): the scheme's own list (the TFMOT preserve
            schemes), else detected from the weights: a weight with at least 5%
            exact zeros keeps its sparsity, one with few distinct values
            (<= 256 and <= a quarter of its size, per tensor or per channel)
            keeps its clusters. A tuple such as ``("sparsity", "clusters")``
            derives those kinds wherever the chain does not record them (with a
            warning where that is ambiguous); ``()`` opts out. Constraints
            recorded by wrappers still in the chain are always kept.
        strict: Raise instead of warning when an annotated layer cannot be
            quantized by the scheme.

    Returns:
        The QAT model.

    Raises:
        ValueError: nothing annotated, an already-quantized layer, an
            unsupported annotated layer with ``strict=True``, an unknown
            ``preserve`` kind.
    """
    scheme = scheme or Default8BitQuantizeScheme()
    if not isinstance(scheme, QuantizeScheme):
        raise ValueError(f"scheme must be a QuantizeScheme (e.g. Default8BitQuantizeScheme()); received {scheme!r}.")
    if preserve is None:
        preserve = scheme.preserve
    auto = preserve is None
    preserve = _check_preserve(preserve)
    if not isinstance(model, keras.Model):
        raise ValueError(f"quantize_apply expects a keras.Model; received {model!r}.")
    annotated = [l for l in iter_layers(model) if isinstance(l, QuantizeAnnotate)]
    if not annotated:
        raise ValueError(
            f"quantize_apply: model '{model.name}' has no annotated layers; use quantize_annotate_layer / "
            "quantize_annotate_model first, or quantize_model to quantize everything."
        )
    for layer in annotated:
        if _is_quantized(layer.layer):
            raise ValueError(f"quantize_apply: layer '{base_layer(layer.layer).name}' is already quantized.")

    def config_of(annotation):
        if annotation.quantize_config is not None:
            return annotation.quantize_config
        return scheme.config_for(base_layer(annotation.layer))

    unsupported = [a for a in annotated if config_of(a) is None]
    if unsupported:
        names = ", ".join(f"{base_layer(a.layer).name} ({type(base_layer(a.layer)).__name__})" for a in unsupported)
        if strict:
            raise ValueError(
                f"quantize_apply: the scheme cannot quantize {names}; give each a QuantizeConfig "
                "(quantize_annotate_layer(layer, quantize_config=...)) or pass strict=False to leave them float."
            )
        warnings.warn(f"quantize_apply: left in float (the scheme cannot quantize them): {names}.", stacklevel=2)
    unsupported_names = {a.name for a in unsupported}

    def quantized(layer):
        return isinstance(layer, QuantizeAnnotate) and layer.name not in unsupported_names

    the_plan = graph.plan(model, quantized)

    def fn(layer):
        if layer.name in the_plan.folded:
            return FoldedBatchNormalization(name=graph.core(layer).name)
        if not isinstance(layer, QuantizeAnnotate):
            return None
        inner = layer.layer
        if layer.name in unsupported_names:
            return inner
        base = base_layer(inner)
        wanted, options = _constraints_to_derive(inner, base, preserve, auto)
        if wanted:
            inner = PreserveWrapper(inner, wanted, options)
        bn = the_plan.fold_into.get(layer.name)
        wrapper = QuantizeWrapper(
            inner,
            config_of(layer),
            folded_batchnorm=copy_layer(bn) if bn is not None else None,
            quantize_inputs=the_plan.input_flags.get(layer.name, []),
            input_quantizer=scheme.input_quantizer(),
            quantize_outputs=layer.name not in the_plan.skip_output,
        )
        build_config = layer.get_build_config()
        if build_config:
            wrapper.build(build_config["input_shape"])
        return wrapper

    return map_layers(model, fn, what="quantize_apply")


def _constraints_to_derive(inner, base, preserve, auto):
    """``({weight: [kinds]}, {kind: options})`` the chain does not record and should keep."""
    from keras import ops

    wanted, options = {}, {}
    for name in transformable_weight_names(base):
        recorded = constraints_on(inner, name)
        kinds = []
        candidates = known_kinds() if auto else preserve
        value = None
        for kind_name in candidates:
            if kind_name in recorded:
                continue
            if auto:
                if value is None:
                    weights = inner.effective_weights(False) if hasattr(inner, "effective_weights") else None
                    value = ops.convert_to_numpy(weights[name] if weights else optimizable_variables(base)[name])
                detected = get_kind(kind_name).detect(value, spec_for(base, name))
                if detected is None:
                    continue
                options.setdefault(kind_name, {}).update(detected)
            kinds.append(kind_name)
        if kinds:
            wanted[name] = kinds
    return wanted, options


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
        raise ValueError(
            f"quantize_model expects a keras.Model; received {to_quantize!r}. For single layers use "
            "quantize_annotate_layer + quantize_apply."
        )
    already = [base_layer(l).name for l in iter_layers(to_quantize) if _is_quantized(l)]
    if already:
        raise ValueError(f"quantize_model: layers {already} are already quantized; quantize a model once.")
    return quantize_apply(quantize_annotate_model(to_quantize), scheme, preserve=preserve, strict=strict)


def quantize_wrappers(model) -> list[QuantizeWrapper]:
    return [w for l in iter_layers(model) for w in wrapper_chain(l) if isinstance(w, QuantizeWrapper)]


def calibrate(model, data, batches: int = 20):
    """Sets the activation ranges of a QAT model from data, without training it.

    Runs float forward passes (eagerly) over up to ``batches`` batches of
    ``data`` (an array, a ``tf.data.Dataset`` or an iterable of batches) and
    widens every range to the values seen. Modifies ``model``'s range
    variables in place (it is the model being trained, not an input to copy).
    """
    from collabopt.datasets.batches import iter_batches

    wrappers = quantize_wrappers(model)
    if not wrappers:
        raise ValueError(f"calibrate: model '{model.name}' has no quantization wrappers.")
    for w in wrappers:
        w.calibrating = True
    try:
        import numpy as np

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
    """Plain float layers holding the fake-quantized (and BN-folded) weights; no fake-quant ops."""
    return map_layers(model, lambda l: l.float_layer() if isinstance(l, QuantizeWrapper) else None, what="strip_quantization")


def strip_clustering_cqat(model):
    """TFMOT's name: the CQAT/PCQAT model with its clustering (and pruning) wrappers baked into the weights.

    Quantization wrappers stay, so the result still trains and converts as a
    QAT model; its kernels hold their cluster values exactly.
    """
    def fn(layer):
        if isinstance(layer, QuantizeWrapper):
            return layer.with_inner_stripped()
        return None

    return map_layers(model, fn, what="strip_clustering_cqat")


@contextlib.contextmanager
def quantize_scope(*args, **kwargs):
    """Accepted for TFMOT compatibility; loading collabopt QAT models needs no scope."""
    yield


