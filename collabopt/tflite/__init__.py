"""TFLite export and inspection: convert, size report, per-tensor stats, evaluation.

Example:

>>> import numpy as np, keras, collabopt.tflite
>>> m = keras.Sequential([keras.Input((64,)), keras.layers.Dense(32)])  # dynamic range skips tensors under 1024 values
>>> tfl = collabopt.tflite.convert(m, "dynamic")
>>> tfl.inspect().weights()[0].dtype
'int8'
"""

from collabopt.tflite.convert import MODES, ConversionError, convert, export_model, has_trained_ranges
from collabopt.tflite.inspection import InspectionReport, TensorStats
from collabopt.tflite.model import SizeBreakdown, SizeReport, TFLiteModel, load
from collabopt.tflite.verify import ConstraintCheck, VerifyReport, verify

__all__ = [
    "ConstraintCheck",
    "VerifyReport",
    "verify",
    "MODES",
    "ConversionError",
    "InspectionReport",
    "SizeBreakdown",
    "SizeReport",
    "TFLiteModel",
    "TensorStats",
    "convert",
    "export_model",
    "has_trained_ranges",
    "load",
]
