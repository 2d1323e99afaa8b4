"""Export modes as objects: what each one asks of the converter and of the model.

``convert``, the command line and the tree read these instead of comparing
mode strings: whether a mode computes in integers, whether it needs
calibration data for a given model, whether QAT wrappers export with their
fake-quant ops (so the converter takes the trained ranges), and how the
converter is configured.

Example:

>>> from collabopt.tflite.modes import export_mode
>>> export_mode("int8").integer, export_mode("float16").integer
(True, False)
>>> export_mode("int4")
Traceback (most recent call last):
...
collabopt.errors.InvalidArgumentError: mode='int4' is not supported; accepted: float32, float16, dynamic, int8, int16x8.
"""

from __future__ import annotations

import dataclasses

from collabopt.errors import InvalidArgumentError


@dataclasses.dataclass(frozen=True)
class ExportMode:
    """One TFLite export mode.

    Attributes:
        name: Its name (``convert(model, mode=name)``, ``--mode name``).
        description: One line for help texts.
        integer: Activations are integers: every tensor needs a range.
        keeps_fake_quant: QAT wrappers export with their fake-quant ops and
            trained ranges (int8); otherwise they export as plain layers
            holding their final, fake-quantized weights.
        io_type: The integer type of the model's inputs and outputs with
            ``int8_io=True`` (None: float I/O only).
    """

    name: str
    description: str
    integer: bool = False
    keeps_fake_quant: bool = False
    io_type: str | None = None

    def needs_calibration(self, trained_ranges: bool) -> bool:
        """Whether this mode needs representative data for a model (``trained_ranges``: it holds QAT ranges).

        >>> export_mode("int8").needs_calibration(trained_ranges=True), export_mode("int16x8").needs_calibration(True)
        (False, True)
        """
        return self.integer and not (trained_ranges and self.keeps_fake_quant)

    def configure(self, converter, *, calibration, trained_ranges: bool, integer_io: bool) -> None:
        """Sets ``converter`` (a ``tf.lite.TFLiteConverter``) up for this mode."""
        import tensorflow as tf

        if self.name == "float32":
            return
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if self.name == "float16":
            converter.target_spec.supported_types = [tf.float16]
            return
        if not self.integer:
            return  # dynamic range: int8 weights, float activations
        io_type = getattr(tf, self.io_type)
        if trained_ranges and self.keeps_fake_quant and calibration is None:
            # A QAT model: the converter reads every range from the fake-quant ops.
            if integer_io:
                converter.inference_input_type = converter.inference_output_type = io_type
            return
        if calibration is not None:
            converter.representative_dataset = lambda: iter(calibration)
        converter.target_spec.supported_ops = [
            tf.lite.OpsSet.TFLITE_BUILTINS_INT8
            if self.io_type == "int8"
            else tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8
        ]
        if integer_io:
            converter.inference_input_type = converter.inference_output_type = io_type


_MODES = (
    ExportMode("float32", "float32 weights and activations"),
    ExportMode("float16", "float16 weights, float32 activations"),
    ExportMode("dynamic", "int8 weights, float activations (dynamic-range quantization)"),
    ExportMode("int8", "int8 weights and activations (full integer)", integer=True, keeps_fake_quant=True, io_type="int8"),
    ExportMode("int16x8", "int8 weights, int16 activations", integer=True, io_type="int16"),
)
MODES: dict[str, ExportMode] = {mode.name: mode for mode in _MODES}


def export_mode(mode) -> ExportMode:
    """The :class:`ExportMode` named ``mode`` (or ``mode`` itself); InvalidArgumentError naming the accepted ones."""
    if isinstance(mode, ExportMode):
        return mode
    if not isinstance(mode, str) or mode not in MODES:
        raise InvalidArgumentError(f"mode={mode!r} is not supported; accepted: {', '.join(MODES)}.")
    return MODES[mode]
