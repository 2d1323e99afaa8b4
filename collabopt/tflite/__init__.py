"""TFLite export and inspection: convert, size report, per-tensor stats, evaluation.

Reading a .tflite file (``load``, ``TFLiteModel``, ``inspect``, ``size_report``)
needs only numpy and ``ai_edge_litert``; TensorFlow is imported the first time
``convert``, ``export_model``, ``has_trained_ranges`` or ``verify`` is used.

Example:

>>> import numpy as np, keras, collabopt.tflite
>>> m = keras.Sequential([keras.Input((64,)), keras.layers.Dense(32)])  # dynamic range skips tensors under 1024 values
>>> tfl = collabopt.tflite.convert(m, "dynamic")
>>> tfl.inspect().weights()[0].dtype
'int8'
"""

import importlib
import sys
import types

from collabopt.errors import ConversionError
from collabopt.tflite.inspection import InspectionReport, TensorStats
from collabopt.tflite.latency import LatencyFigure, compare_latency
from collabopt.tflite.model import SizeBreakdown, SizeReport, TFLiteModel, load

# Names whose modules import TensorFlow / Keras: loaded on first use.
_LAZY = {
    "MODES": "collabopt.tflite.convert",
    "convert": "collabopt.tflite.convert",
    "export_model": "collabopt.tflite.export_forms",
    "has_trained_ranges": "collabopt.tflite.convert",
    "convert_in_subprocess": "collabopt.tflite.subprocess_export",
    "ConstraintCheck": "collabopt.tflite.verify",
    "VerifyReport": "collabopt.tflite.verify",
    "verify": "collabopt.tflite.verify",
    "kernel_parameters": "collabopt.tflite.verify",
}


def __getattr__(name):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'collabopt.tflite' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


class _Package(types.ModuleType):
    """The package module: ``convert`` and ``verify`` name both a submodule and its main function.

    Importing a submodule makes Python set it as an attribute of the package;
    for those two names the function is kept instead, as an eager
    ``from collabopt.tflite.convert import convert`` would leave it.
    """

    def __setattr__(self, name, value):
        if name in _LAZY and isinstance(value, types.ModuleType) and hasattr(value, name):
            value = getattr(value, name)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


def __dir__():
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "ConstraintCheck",
    "VerifyReport",
    "verify",
    "kernel_parameters",
    "MODES",
    "ConversionError",
    "InspectionReport",
    "LatencyFigure",
    "SizeBreakdown",
    "SizeReport",
    "TFLiteModel",
    "TensorStats",
    "compare_latency",
    "convert",
    "convert_in_subprocess",
    "export_model",
    "has_trained_ranges",
    "load",
]
