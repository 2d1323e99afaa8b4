"""Annotations: marking which layers quantize_apply quantizes (selective QAT)."""

from __future__ import annotations

import keras

from collabopt.errors import InvalidArgumentError
from collabopt.layers import RewrappingWrapper
from collabopt.quantization.config import QuantizeConfig
from collabopt.transform import map_layers


@keras.saving.register_keras_serializable(package="collabopt")
class QuantizeAnnotate(RewrappingWrapper):
    """Marks a layer for quantization (optionally with its own config); computes nothing new.

    Args:
        layer: The layer to quantize later.
        quantize_config: A :class:`QuantizeConfig`, or None for the scheme's default.
    """

    def __init__(self, layer, quantize_config: QuantizeConfig | None = None, **kwargs):
        kwargs.setdefault("name", f"quant_annotate_{layer.name}")
        super().__init__(layer, **kwargs)
        if quantize_config is not None and not isinstance(quantize_config, QuantizeConfig):
            raise InvalidArgumentError(
                f"layer '{layer.name}': quantize_config must be a QuantizeConfig or None; received {quantize_config!r}."
            )
        self.quantize_config = quantize_config

    def build(self, input_shape=None):
        if not self.layer.built:
            self.layer.build(input_shape)
        self.built = True

    def call(self, inputs, *args, **kwargs):
        return self.layer(inputs, *args, **kwargs)

    def compute_output_spec(self, *args, **kwargs):
        return self.layer.compute_output_spec(*args, **kwargs)

    def get_config(self):
        config = super().get_config()
        config["quantize_config"] = (
            keras.saving.serialize_keras_object(self.quantize_config) if self.quantize_config is not None else None
        )
        return config

    @classmethod
    def from_config_with_layer(cls, config, layer):
        """This annotation around ``layer`` (already built or copied), from a config without its ``layer``."""
        config = dict(config)
        config.pop("layer", None)
        qc = config.pop("quantize_config", None)
        return cls(layer, keras.saving.deserialize_keras_object(qc) if qc is not None else None, **config)


def annotate_model(model, check, what: str):
    """``model`` with every layer not yet annotated wrapped in a :class:`QuantizeAnnotate`.

    ``check(layer)`` runs on each layer first (it raises for layers that must
    not be quantized, e.g. already quantized ones). Plain two-tensor
    operations (ConvNeXt's residual ``inputs + x``) become merge layers, so
    their output gets a range like that of an ``Add`` layer.
    """

    def fn(layer):
        if isinstance(layer, QuantizeAnnotate):
            return None
        check(layer)
        return QuantizeAnnotate(layer)

    return map_layers(model, fn, what=what, merge_ops_as_layers=True)
