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
        return dict(self.weights)

    def output_quantizers(self, layer) -> list:
        """One quantizer per output of ``layer`` (may be empty)."""
        return list(self.outputs)

    def internal_quantizers(self, layer) -> list:
        """One quantizer per internal tensor of ``layer`` (may be empty)."""
        return list(self.internal)

    def get_config(self):
        return {
            "weights": {k: keras.saving.serialize_keras_object(q) for k, q in self.weights.items()},
            "outputs": [keras.saving.serialize_keras_object(q) for q in self.outputs],
            "internal": [keras.saving.serialize_keras_object(q) for q in self.internal],
        }

    @classmethod
    def from_config(cls, config):
        return cls(
            weights={k: keras.saving.deserialize_keras_object(q) for k, q in config.get("weights", {}).items()},
            outputs=[keras.saving.deserialize_keras_object(q) for q in config.get("outputs", [])],
            internal=[keras.saving.deserialize_keras_object(q) for q in config.get("internal", [])],
        )
