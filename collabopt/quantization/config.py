"""QuantizeConfig: which weights and outputs of a layer are quantized, and how."""

from __future__ import annotations

import keras

from collabopt.errors import InvalidArgumentError
from collabopt.quantization.quantizers import Quantizer


@keras.saving.register_keras_serializable(package="collabopt")
class QuantizeConfig:
    """Says how to quantize one layer.

    Subclass it for custom layers (override :meth:`weight_quantizers` and/or
    :meth:`output_quantizers`), or instantiate it with explicit quantizers.

    A subclass written for TFMOT works after the rename: its
    ``get_weights_and_quantizers(layer)`` (pairs of a layer variable and a
    quantizer), ``get_activations_and_quantizers(layer)`` and
    ``get_output_quantizers(layer)`` are read instead, with collabopt's
    quantizers (``co.LastValueQuantizer``, ...). Its
    ``set_quantize_weights``/``set_quantize_activations`` are not needed: the
    wrapper substitutes the quantized weights itself. An activation quantizer
    quantizes the layer's output, which is the activation's output. A config
    whose methods return nothing (TFMOT's ``NoOpQuantizeConfig``) leaves the
    layer float without a warning. Its ``get_config()`` is passed back to its
    ``__init__`` on loading (register the class, or load it inside
    ``co.quantize_scope({"Name": Class})``, as with TFMOT).

    Args:
        weights: ``{weight_name: Quantizer}`` for the layer's optimizable weights.
        outputs: One :class:`Quantizer` per layer output (empty: outputs stay
            as they are, e.g. when a following activation layer quantizes).
        internal: One :class:`Quantizer` per tensor computed *inside* the
            layer between the ops TFLite splits it into (SeparableConv's
            depthwise output).

    Example:

    >>> import collabopt.keras as co
    >>> config = co.QuantizeConfig(
    ...     weights={"kernel": co.LastValueQuantizer(8, per_axis=False, symmetric=True, narrow_range=True)},
    ...     outputs=[co.MovingAverageQuantizer(8)])
    """

    def __init__(self, weights: dict | None = None, outputs: list | None = None, internal: list | None = None):
        self.weights = dict(weights or {})
        self.outputs = list(outputs or [])
        self.internal = list(internal or [])
        for q in list(self.weights.values()) + self.outputs + self.internal:
            if not isinstance(q, Quantizer):
                raise InvalidArgumentError(f"QuantizeConfig expects Quantizer objects; received {q!r}.")

    def weight_quantizers(self, layer) -> dict:
        """``{weight_name: Quantizer}`` for ``layer``."""
        if hasattr(self, "get_weights_and_quantizers"):
            pairs = _tfmot_items(self, "get_weights_and_quantizers", layer, pairs=True)
            return {_weight_name(self, layer, variable): quantizer for variable, quantizer in pairs}
        return dict(getattr(self, "weights", {}))

    def output_quantizers(self, layer) -> list:
        """One quantizer per output of ``layer`` (may be empty)."""
        if _TFMOT_OUTPUT_HOOKS & set(dir(self)):
            outputs = _tfmot_items(self, "get_output_quantizers", layer, pairs=False)
            activations = [q for _, q in _tfmot_items(self, "get_activations_and_quantizers", layer, pairs=True)]
            # TFMOT quantizes the activation's result, which is the layer's output.
            return outputs or activations[:1]
        return list(getattr(self, "outputs", []))

    def internal_quantizers(self, layer) -> list:
        """One quantizer per internal tensor of ``layer`` (may be empty)."""
        return list(getattr(self, "internal", []))

    def get_config(self):
        return {
            "weights": {k: keras.saving.serialize_keras_object(q) for k, q in self.weights.items()},
            "outputs": [keras.saving.serialize_keras_object(q) for q in self.outputs],
            "internal": [keras.saving.serialize_keras_object(q) for q in self.internal],
        }

    @classmethod
    def from_config(cls, config):
        if cls.get_config is not QuantizeConfig.get_config:  # a subclass with its own config (TFMOT-style)
            return cls(**config)
        return cls(
            weights={k: keras.saving.deserialize_keras_object(q) for k, q in config.get("weights", {}).items()},
            outputs=[keras.saving.deserialize_keras_object(q) for q in config.get("outputs", [])],
            internal=[keras.saving.deserialize_keras_object(q) for q in config.get("internal", [])],
        )


_TFMOT_OUTPUT_HOOKS = {"get_output_quantizers", "get_activations_and_quantizers"}


def _tfmot_items(config, method: str, layer, pairs: bool) -> list:
    """What ``config.method(layer)`` (a TFMOT hook) returns: ``(variable, Quantizer)`` pairs or Quantizers, checked."""
    if not hasattr(config, method):
        return []
    try:
        items = list(getattr(config, method)(layer) or [])
    except AttributeError as error:
        raise InvalidArgumentError(
            f"layer '{layer.name}' ({type(layer).__name__}): {type(config).__name__}.{method} failed ({error}); "
            "it is called on the built Keras layer (e.g. layer.kernel)."
        ) from error
    for item in items:
        is_pair = isinstance(item, (tuple, list)) and len(item) == 2
        if is_pair != pairs or not isinstance(item[1] if is_pair else item, Quantizer):
            raise InvalidArgumentError(
                f"layer '{layer.name}': {type(config).__name__}.{method} returned {item!r}; expected "
                f"{'(variable, Quantizer) pairs' if pairs else 'Quantizer objects'} with collabopt's quantizers "
                "(co.LastValueQuantizer, co.MovingAverageQuantizer, co.AllValuesQuantizer, co.FixedQuantizer)."
            )
    return [tuple(item) for item in items] if pairs else items


def _weight_name(config, layer, variable) -> str:
    """The optimizable-weight name of ``layer`` whose variable is ``variable``."""
    from collabopt.layers import get_variable, weight_specs

    specs = weight_specs(layer) or ()
    for spec in specs:
        if get_variable(layer, spec) is variable:
            return spec.name
    path = getattr(variable, "path", variable)
    raise InvalidArgumentError(
        f"layer '{layer.name}' ({type(layer).__name__}): {type(config).__name__}.get_weights_and_quantizers "
        f"names {path!r}, which is not one of the layer's optimizable weights "
        f"{[spec.name for spec in specs]}; register the layer's weights with co.register_layer."
    )
