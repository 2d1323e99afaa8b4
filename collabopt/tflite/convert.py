"""Converting a Keras model (wrapped or not) to a TFLite flatbuffer."""

from __future__ import annotations

import contextlib
import functools
import io
import re
import tempfile
import warnings

import keras
import tensorflow as tf

from collabopt.datasets.batches import samples
from collabopt.errors import ConversionError, InvalidArgumentError, InvalidTypeError, UnsupportedBackendError
from collabopt.layers import OptimizationWrapper, base_layer
from collabopt.layers.checks import check_finite_weights
from collabopt.quiet import native_stderr_silenced
from collabopt.tflite import flatbuffer
from collabopt.tflite.export_forms import export_model
from collabopt.tflite.fused_lstm import fused_directions, fusion_problems, is_lstm
from collabopt.tflite.int4 import check_int4_storage, low_bit_weights
from collabopt.tflite.model import TFLiteModel
from collabopt.tflite.modes import MODES as EXPORT_MODES
from collabopt.tflite.modes import export_mode
from collabopt.transform import iter_layers

#: The modes ``convert`` accepts, by name (each an :class:`~collabopt.tflite.modes.ExportMode`): the
#: registry itself, so a mode registered later is listed too.
MODES = EXPORT_MODES


def require_tensorflow_backend(function: str) -> None:
    """UnsupportedBackendError unless Keras runs on TensorFlow: TFLite's converter reads TensorFlow graphs.

    The message names the backend and the two ways to export from it.
    """
    backend = keras.backend.backend()
    if backend != "tensorflow":
        raise UnsupportedBackendError(
            f"{function} converts with TensorFlow's TFLite converter, so it runs on Keras' TensorFlow backend; "
            f"this process runs Keras on {backend!r}. Export from here with "
            "collabopt.tflite.convert_in_subprocess(model, mode, representative_data) (a TensorFlow subprocess "
            "converts the saved model), or save it (model.save('m.keras'); .keras files load on every backend) "
            "and run `collabopt export m.keras --mode int8` in a shell."
        )


def has_trained_ranges(model) -> bool:
    """True if the model carries quantization ranges from QAT (fake-quant ops)."""
    return any(isinstance(layer, OptimizationWrapper) and layer.collabopt_quantized for layer in iter_layers(model))


def _fused_lstm_directions(model) -> list[tuple[str, int]]:
    """``[(layer name, fused ops it becomes)]`` for the LSTMs that ``fused_lstm=True`` fuses.

    Raises:
        InvalidArgumentError: an LSTM that the fused op cannot compute
            (another activation, ``return_state=True``, no fixed sequence
            length, ...); the message names it.
    """
    names, refused = [], []
    for layer in iter_layers(model):
        base = base_layer(layer)
        if is_lstm(base):
            problems = fusion_problems(base)
            if problems:
                refused.append(f"'{base.name}': {', '.join(problems)}")
            else:
                names.append((base.name, fused_directions(base)))
    if refused:
        raise InvalidArgumentError(
            f"fused_lstm=True: TFLite's fused LSTM op cannot compute {'; '.join(refused)}. It computes "
            "tanh and sigmoid gates from a zero initial state over a fixed number of steps and outputs the "
            "sequence or its last step; pass fused_lstm=False to export these layers unrolled."
        )
    return names


def _layers_mentioned(text: str, model) -> list[str]:
    # Converter locations and tensor names look like "model_1/layer_name_1/Op";
    # Keras appends "_<n>" to scope names, so accept that suffix.
    names = {layer.name for layer in iter_layers(model)}
    return sorted(n for n in names if re.search(rf"(?<![\w]){re.escape(n)}(?:_\d+)?(?=/|[^\w]|$)", text))


def _explain(error: Exception, model, graph=None) -> str:
    text = str(error)
    ops = sorted(set(re.findall(r"'(tf\.[A-Za-z0-9_]+|tfl\.[A-Za-z0-9_]+)'", text)))
    # The converter locates ops of a traced function by source line; the
    # traced graph names the layer ("functional/odd_layer/Erfinv").
    graph_names = [op.name for op in (graph.get_operations() if graph is not None else ()) if f"tf.{op.type}" in ops]
    mentioned = _layers_mentioned(" ".join([text] + graph_names), model)
    lines = [line.strip() for line in text.splitlines() if "error" in line.lower()][:5]
    parts = []
    if mentioned:
        parts.append(f"layers involved: {mentioned}")
    if ops:
        parts.append(f"ops: {ops}")
    if not text.strip():
        # Seen when calibrating a QAT model in which an op with no integer
        # kernel (ZEROS_LIKE) sits between quantized tensors.
        return (
            f"TFLite conversion failed: the converter stopped with {type(error).__name__} and no message. "
            "An op with no integer kernel between quantized tensors (e.g. ZEROS_LIKE from keras.ops.zeros_like) "
            "can stop the converter while it calibrates; to see which ops stay float, convert a QAT model without "
            "representative_data and with allow_float_islands=True."
        )
    head = "; ".join(parts) or "see the converter message below"
    return f"TFLite conversion failed ({head}).\n" + "\n".join(lines or [text[:2000]])


def convert(
    model: keras.Model,
    mode: str = "int8",
    representative_data=None,
    *,
    int8_io: bool = True,
    calibration_samples: int = 200,
    allow_float_islands: bool = False,
    sparse: bool = False,
    fused_lstm: bool = False,
) -> TFLiteModel:
    """Converts a Keras model to TFLite.

    collabopt wrappers are stripped first (pruned and clustered weights are
    baked in; QAT fake-quant ops are kept so the converter uses the trained
    ranges).

    Args:
        model: A Keras model, optionally holding collabopt wrappers.
        mode: ``"float32"``, ``"float16"`` (float16 weights), ``"dynamic"``
            (int8 weights, float activations), ``"int8"`` (full integer) or
            ``"int16x8"`` (int16 activations, int8 weights).
        representative_data: Calibration inputs for ``int8``/``int16x8``: a
            numpy array, a ``tf.data.Dataset`` or an iterable of batches (``x``
            or ``(x, y)``). Needed when the model has no QAT ranges. For a QAT
            model it is optional: the trained ranges are kept exactly, and the
            tensors QAT does not reach (the inside of LayerNormalization or
            GELU, plain ops such as ``x + 3.0``) are calibrated from it instead
            of staying float.
        int8_io: For ``int8``/``int16x8``: make the model's inputs and outputs
            integer (int8, resp. int16) too; otherwise they stay float32.
        calibration_samples: How many samples of ``representative_data`` to use.
        allow_float_islands: For ``int8``: accept a model in which some ops
            still compute in float (the converter falls back silently for ops
            with no integer kernel). By default that raises.
        sparse: Store weights with at least 30% zeros in the converter's
            sparse format (``Optimize.EXPERIMENTAL_SPARSITY``): the raw file
            shrinks and outputs stay identical. Where the consuming kernel
            cannot read the sparse layout, the file holds a DENSIFY op that
            expands the weight once when the interpreter is prepared. Not
            with INT4 weights (the converter cannot encode them sparse).
        fused_lstm: Export every LSTM (plain or in ``Bidirectional``) as
            TFLite's fused UNIDIRECTIONAL_SEQUENCE_LSTM, one op per direction,
            instead of unrolled per time step (GRU and SimpleRNN stay
            unrolled: TFLite has no fused op for them). The fused op needs a
            static batch size: the file takes one sample per invocation.
            It keeps its state in variable tensors that persist between
            invocations: reset them per sequence
            (``interpreter.reset_all_variables()``; :meth:`TFLiteModel.predict`
            does). For ``int8`` its gates are calibrated, so
            ``representative_data`` is needed also for a QAT model; the
            converter has no ``int16x8`` form of it.

    Returns:
        A :class:`TFLiteModel`.

    Raises:
        ValueError: unknown mode; missing or ill-shaped representative data.
        InvalidArgumentError: ``sparse=True`` on a model with weights
            trained at 4 bits or fewer in ``int8`` mode; ``fused_lstm=True``
            with an LSTM the fused op cannot compute, with ``int16x8``, or
            with ``int8`` and no ``representative_data``.
        ConversionError: the converter rejected the model, (int8) left
            float islands, or did not store 4-bit weights as INT4; the
            message names the layers and ops.

    Example:

    >>> import numpy as np, keras
    >>> import collabopt.tflite
    >>> m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    >>> tfl = collabopt.tflite.convert(m, "int8", np.random.rand(16, 4).astype("float32"))
    >>> tfl.size_report().raw_bytes > 0
    True
    """
    require_tensorflow_backend("collabopt.tflite.convert")
    mode = export_mode(mode)
    if not isinstance(model, keras.Model):
        raise InvalidTypeError(f"convert expects a keras.Model; received {type(model).__name__}.")
    if calibration_samples < 1:
        raise InvalidArgumentError(f"calibration_samples must be >= 1; received {calibration_samples}.")
    trained_ranges = has_trained_ranges(model)
    directions = _fused_lstm_directions(model) if fused_lstm else []
    fused = [name for name, _ in directions]
    if fused and not mode.keeps_fake_quant and mode.integer:
        raise InvalidArgumentError(
            f"fused_lstm=True cannot export mode='int16x8': TF's converter has no 16x8 form of the fused "
            f"LSTM op (layers {fused}). Use mode='int8', or fused_lstm=False (unrolled, all 16x8)."
        )
    if fused and mode.integer and representative_data is None:
        raise InvalidArgumentError(
            f"fused_lstm=True with mode={mode.name!r} needs representative_data: the converter calibrates the "
            f"gates of the fused LSTM ops ({fused}), which QAT does not reach."
        )
    calibration = None
    if mode.needs_calibration(trained_ranges) and representative_data is None:
        raise InvalidArgumentError(
            f"mode={mode.name!r} needs representative_data (a numpy array, tf.data.Dataset or "
            "iterable of batches shaped like the model's inputs) to calibrate activation "
            "ranges" + (", unless the model was trained with quantize_model" if mode.keeps_fake_quant else "") + "."
        )
    if representative_data is not None:
        calibration = samples(representative_data, model, calibration_samples)
    if sparse and mode.keeps_fake_quant and trained_ranges:
        low_bit = sorted({layer for layer, _, _ in low_bit_weights(model)})
        if low_bit:
            raise InvalidArgumentError(
                f"convert(sparse=True): layers {low_bit} hold weights trained at 4 bits or fewer, stored as INT4; "
                "the converter cannot store INT4 weights in its sparse format. Pass sparse=False (INT4 "
                "already halves them), or train those layers at 8 bits to store them sparse."
            )

    check_finite_weights(model)
    exported = export_model(model, mode, fused_lstm=bool(fused))
    with tempfile.TemporaryDirectory(prefix="collabopt_export_") if fused else contextlib.nullcontext() as directory:
        if fused:
            converter, graph = _saved_model_converter(exported, directory, batch_size=1), None
        else:
            converter, graph = _traced_converter(exported)
        result = _convert(converter, exported, graph, mode, trained_ranges, calibration, int8_io, allow_float_islands, sparse)
    found = result.ops().count("UNIDIRECTIONAL_SEQUENCE_LSTM")
    if found != sum(n for _, n in directions):
        raise ConversionError(
            f"fused_lstm=True: the converter fused {found} of the {sum(n for _, n in directions)} LSTM "
            f"directions of layers {fused}. Pass fused_lstm=False to export them unrolled."
        )
    if mode.keeps_fake_quant and trained_ranges:
        check_int4_storage(flatbuffer.parse(result.content), model)
    return result


class _NamedLocations:
    """The converter's ``trackable_obj``: keeps ``model`` (its variables) alive, and empty debug info.

    With no source lines to attach, the converter locates ops by their graph
    names ("functional/layer_name/Reshape"), so an error names the layer. The
    converter reads the (private) ``graph_debug_info`` attribute it would
    otherwise fill from the traced function's Python stack; there is no
    public option for this.
    """

    def __init__(self, model):
        from tensorflow.core.framework import graph_debug_info_pb2  # no public alias

        self.model = model
        self.graph_debug_info = graph_debug_info_pb2.GraphDebugInfo()


def _traced_converter(model: keras.Model):
    """A converter over the inference-mode function of ``model``, traced once.

    The function's variables are frozen into constants by the converter
    (``experimental_lower_to_saved_model = False``: lowering to a SavedModel
    first would drop the weights of a Keras 3 model, and writing one with
    ``keras.export.ExportArchive`` traces the model three times and walks
    every trackable; on MobileNetV2 with QAT the whole conversion took about
    2.5x as long that way).
    A tracing error is raised as :class:`ConversionError` naming the layers
    involved, instead of the converter's fallback message.
    """
    signature = _signature(model)
    if isinstance(_input_structure(model), dict):
        # Dict inputs (KerasHub's token_ids / padding_mask) are traced as flat
        # arguments in ``model.inputs`` order, the order calibration and
        # predict feed them in.
        signature = signature[0]

        def call(*flat):
            return model(keras.tree.pack_sequence_as(_input_structure(model), list(flat)), training=False)

        function = tf.function(call)
    else:
        function = tf.function(functools.partial(model.__call__, training=False))
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            concrete = function.get_concrete_function(*signature)
    except Exception as error:  # tracing user layers raises any type
        raise ConversionError(_explain(error, model)) from error
    converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete], _NamedLocations(model))
    converter.experimental_lower_to_saved_model = False
    return converter, concrete.graph


def _input_structure(model: keras.Model):
    """``model.input`` (a tensor, list or dict), or None for a Sequential model never called."""
    try:
        return model.input
    except AttributeError:
        return None


def _signature(model: keras.Model, batch_size: int | None = None):
    """Input specs of ``model``; ``batch_size`` replaces the batch dimension if given."""
    specs = [
        tf.TensorSpec((batch_size if batch_size else t.shape[0],) + tuple(t.shape[1:]), t.dtype, name=t.name)
        for t in model.inputs
    ]
    return [specs] if len(specs) > 1 else specs


def _saved_model_converter(model: keras.Model, directory: str, batch_size: int):
    """A converter over ``model`` written as a SavedModel, with a static batch size.

    The fused LSTM's function attribute survives only this path (freezing a
    traced function inlines the function); it is slower than
    :func:`_traced_converter` (the archive traces the model several times).
    """
    archive = keras.export.ExportArchive()
    archive.track(model)
    logger = tf.get_logger()
    level = logger.level
    try:
        # write_out prints "Saved artifact at ..." and logs "Assets written to".
        logger.setLevel("ERROR")
        archive.add_endpoint("serve", functools.partial(model.__call__, training=False), _signature(model, batch_size))
        with contextlib.redirect_stdout(io.StringIO()), native_stderr_silenced():
            archive.write_out(directory)
    except Exception as error:  # tracing user layers raises any type
        raise ConversionError(_explain(error, model)) from error
    finally:
        logger.setLevel(level)
    return tf.lite.TFLiteConverter.from_saved_model(directory)


def _convert(converter, exported, graph, mode, trained_ranges, calibration, int8_io, allow_float_islands, sparse=False):
    mode.configure(converter, calibration=calibration, trained_ranges=trained_ranges, integer_io=int8_io)
    if sparse:
        converter.optimizations = list(converter.optimizations) + [tf.lite.Optimize.EXPERIMENTAL_SPARSITY]
    try:
        with contextlib.redirect_stdout(io.StringIO()), native_stderr_silenced(), warnings.catch_warnings():
            # Converter progress chatter, and a TF1-era warning about
            # quantized_input_stats that integer I/O of a traced function
            # triggers (the I/O scales come from the model's own ranges).
            warnings.filterwarnings("ignore", message="Statistics for quantized inputs")
            content = converter.convert()
    except Exception as error:  # the converter raises several unrelated types
        raise ConversionError(_explain(error, exported, graph)) from error
    result = TFLiteModel(content, mode=mode.name)
    if mode.integer and mode.keeps_fake_quant and not allow_float_islands:
        islands = result.float_islands()
        if islands:
            text = " ".join(" ".join(i["float_tensors"]) for i in islands)
            hint = (
                "pass representative_data to calibrate the tensors that QAT does not reach"
                if trained_ranges and calibration is None
                else "replace or quantize them"
            )
            raise ConversionError(
                f"int8 conversion left {len(islands)} ops computing in float "
                f"(ops: {sorted({i['op'] for i in islands})}; layers involved: "
                f"{_layers_mentioned(text, exported) or 'unknown'}). Either TFLite has no integer "
                f"kernel for them, or no quantization range reached them; {hint}, or pass "
                "allow_float_islands=True to accept a mixed model (docs/float_ops.md lists, per "
                "layer, the ops that stay float)."
            )
    return result
