"""Export modes as objects: what each one asks of the converter and of the model.

``convert``, the command line and the tree read these instead of comparing
mode strings: whether a mode computes in integers, whether it needs
calibration data for a given model, whether QAT wrappers export with their
fake-quant ops (so the converter takes the trained ranges), and how the
converter is configured. A new mode is one :func:`register_export_mode` call
(:func:`export_mode_registered` for the duration of a ``with`` block, in
tests); ``convert``, ``--mode`` and the tree then accept its name.

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

import contextlib
import dataclasses

from collabopt.errors import InvalidArgumentError, InvalidTypeError
from collabopt.scoped import restored_entry

_WEIGHT_TYPES = ("float32", "float16", "int8")
_IO_TYPES = ("int8", "int16")


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
        io_type: For an integer mode: the activations' integer type
            (``"int8"``, or ``"int16"`` for 16x8), also the type of the
            model's inputs and outputs with ``int8_io=True``. None for float
            modes (float I/O only).
        weight_type: How the converter stores the weights: ``"float32"``
            (unchanged), ``"float16"``, or ``"int8"`` (dynamic-range
            quantization for a float mode; every integer mode stores int8).
    """

    name: str
    description: str
    integer: bool = False
    keeps_fake_quant: bool = False
    io_type: str | None = None
    weight_type: str = "float32"

    def __post_init__(self):
        if not (isinstance(self.name, str) and self.name):
            raise InvalidArgumentError(f"ExportMode: name must be a non-empty string; received {self.name!r}.")
        if self.weight_type not in _WEIGHT_TYPES:
            raise InvalidArgumentError(
                f"ExportMode '{self.name}': weight_type must be one of {', '.join(_WEIGHT_TYPES)}; "
                f"received {self.weight_type!r}."
            )
        if self.integer and (self.io_type not in _IO_TYPES or self.weight_type != "int8"):
            raise InvalidArgumentError(
                f"ExportMode '{self.name}': an integer mode needs io_type in {', '.join(_IO_TYPES)} and "
                f"weight_type 'int8'; received io_type={self.io_type!r}, weight_type={self.weight_type!r}."
            )
        if not self.integer and (self.io_type is not None or self.keeps_fake_quant):
            raise InvalidArgumentError(
                f"ExportMode '{self.name}': io_type and keeps_fake_quant are for integer modes (integer=True)."
            )

    def needs_calibration(self, trained_ranges: bool) -> bool:
        """Whether this mode needs representative data for a model (``trained_ranges``: it holds QAT ranges).

        >>> export_mode("int8").needs_calibration(trained_ranges=True), export_mode("int16x8").needs_calibration(True)
        (False, True)
        """
        return self.integer and not (trained_ranges and self.keeps_fake_quant)

    def configure(self, converter, *, calibration, trained_ranges: bool, integer_io: bool) -> None:
        """Sets ``converter`` (a ``tf.lite.TFLiteConverter``) up for this mode."""
        import tensorflow as tf

        if self.weight_type == "float32":
            return
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if self.weight_type == "float16":
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


_BUILTIN = (
    ExportMode("float32", "float32 weights and activations"),
    ExportMode("float16", "float16 weights, float32 activations", weight_type="float16"),
    ExportMode("dynamic", "int8 weights, float activations (dynamic-range quantization)", weight_type="int8"),
    ExportMode(
        "int8", "int8 weights and activations (full integer)",
        integer=True, keeps_fake_quant=True, io_type="int8", weight_type="int8",
    ),
    ExportMode("int16x8", "int8 weights, int16 activations", integer=True, io_type="int16", weight_type="int8"),
)
#: Every registered mode by name, in registration order (the built-in five first).
#: Read it; add to it with :func:`register_export_mode`.
MODES: dict[str, ExportMode] = {mode.name: mode for mode in _BUILTIN}


def register_export_mode(mode: ExportMode) -> ExportMode:
    """Adds ``mode`` to :data:`MODES`: ``convert(model, mode=name)``, the CLI's ``--mode`` and the tree accept it.

    Args:
        mode: The :class:`ExportMode` (its ``name`` is the key).

    Returns:
        ``mode``.

    A package registers its modes once, at import; a name is never taken
    twice (tests use :func:`export_mode_registered`).

    Raises:
        InvalidTypeError: ``mode`` is not an ExportMode.
        InvalidArgumentError: another mode is registered under its name.

    Example:

    >>> register_export_mode(MODES["float16"]) is MODES["float16"]  # the same mode again: nothing changes
    True
    >>> register_export_mode(ExportMode("float16", "my float16", weight_type="float16"))
    Traceback (most recent call last):
    ...
    collabopt.errors.InvalidArgumentError: export mode 'float16' is already registered (float16 weights, float32 activations); choose another name.
    """
    if not isinstance(mode, ExportMode):
        raise InvalidTypeError(f"register_export_mode expects an ExportMode; received {mode!r}.")
    known = MODES.get(mode.name)
    if known is not None and known != mode:
        raise InvalidArgumentError(f"export mode '{mode.name}' is already registered ({known.description}); choose another name.")
    MODES[mode.name] = mode
    return mode


@contextlib.contextmanager
def export_mode_registered(mode: ExportMode):
    """:func:`register_export_mode` for the duration of a ``with`` block; :data:`MODES` is restored after.

    For tests and experiments: nothing leaks into code that runs later.

    Args:
        mode: The :class:`ExportMode` to register.

    Yields:
        ``mode``.

    Example:

    >>> with export_mode_registered(ExportMode("gpu_fp16", "float16 weights", weight_type="float16")):
    ...     export_mode("gpu_fp16").name
    'gpu_fp16'
    >>> "gpu_fp16" in MODES
    False
    """
    with restored_entry(MODES, mode.name):
        register_export_mode(mode)
        yield mode


def export_mode(mode) -> ExportMode:
    """The :class:`ExportMode` named ``mode`` (or ``mode`` itself); InvalidArgumentError naming the accepted ones."""
    if isinstance(mode, ExportMode):
        return mode
    if not isinstance(mode, str) or mode not in MODES:
        raise InvalidArgumentError(f"mode={mode!r} is not supported; accepted: {', '.join(MODES)}.")
    return MODES[mode]
