"""Quantization-aware training that exports to exactly the int8 (and int16x8) TFLite model it trained."""

from collabopt.quantization.annotate import QuantizeAnnotate
from collabopt.quantization.api import (
    calibrate,
    quantize_annotate_layer,
    quantize_annotate_model,
    quantize_apply,
    quantize_model,
    quantize_scope,
    quantize_wrappers,
    strip_clustering_cqat,
    strip_quantization,
)
from collabopt.quantization.config import QuantizeConfig
from collabopt.quantization.nbit import DefaultNBitQuantizeScheme
from collabopt.quantization.quantizers import (
    AllValuesQuantizer,
    FixedQuantizer,
    LastValueQuantizer,
    MovingAverageQuantizer,
    Quantizer,
)
from collabopt.quantization.schemes import (
    Default8BitClusterPreserveQuantizeScheme,
    Default8BitPrunePreserveQuantizeScheme,
    Default8BitQuantizeScheme,
    Default16x8QuantizeScheme,
    FoldedBatchNormalization,
    QuantizeScheme,
)
from collabopt.quantization.technique import QuantizationConfig
from collabopt.quantization.wrapper import QuantizeWrapper

__all__ = [
    "AllValuesQuantizer",
    "Default16x8QuantizeScheme",
    "Default8BitClusterPreserveQuantizeScheme",
    "Default8BitPrunePreserveQuantizeScheme",
    "FoldedBatchNormalization",
    "Default8BitQuantizeScheme",
    "DefaultNBitQuantizeScheme",
    "FixedQuantizer",
    "LastValueQuantizer",
    "MovingAverageQuantizer",
    "QuantizationConfig",
    "QuantizeAnnotate",
    "QuantizeConfig",
    "QuantizeScheme",
    "QuantizeWrapper",
    "Quantizer",
    "calibrate",
    "quantize_annotate_layer",
    "quantize_annotate_model",
    "quantize_apply",
    "quantize_model",
    "quantize_scope",
    "quantize_wrappers",
    "strip_clustering_cqat",
    "strip_quantization",
]
