"""A converted TFLite model: bytes, sizes, contents, and running it with LiteRT."""

from __future__ import annotations

import dataclasses
import gzip
import io
import os
import pathlib
import time
import zipfile

import numpy as np

from collabopt.errors import CollaboptError, InvalidArgumentError, InvalidFileError, InvalidTypeError
from collabopt.quiet import native_stderr_silenced
from collabopt.tflite import flatbuffer
from collabopt.tflite.inspection import InspectionReport, float_islands, tensor_stats


# The bias input of each op with one (index into the op's inputs).
_BIAS_INPUT = {"CONV_2D": 2, "DEPTHWISE_CONV_2D": 2, "FULLY_CONNECTED": 2, "TRANSPOSE_CONV": 3, "CONV_3D": 2}


@dataclasses.dataclass
class SizeBreakdown:
    """Where the raw bytes of a flatbuffer go.

    Attributes:
        weights_by_dtype: Bytes of constant tensors of rank >= 2 (kernels,
            embedding tables) by stored dtype (``"int4"``, ``"int8"``,
            ``"float32"``, ...); a sparse-format weight counts its stored values.
        biases: Bytes of the bias inputs of convolutions and fully connected ops.
        other_constants: Bytes of every other constant buffer (shapes, scalars).
        quantization: Bytes of quantization scales (4 each) and zero points (8 each).
        tensor_names: Bytes of tensor names.
        metadata: Bytes of the model's metadata buffers.
        graph: The rest: operators, tensor tables, sparse-format indices,
            signatures, alignment padding.
    """

    weights_by_dtype: dict
    biases: int
    other_constants: int
    quantization: int
    tensor_names: int
    metadata: int
    graph: int

    @property
    def weights(self) -> int:
        """All weight bytes."""
        return sum(self.weights_by_dtype.values())

    def rows(self) -> list[tuple[str, int]]:
        """``[(label, bytes)]`` in print order."""
        rows = [(f"weights {dtype}", n) for dtype, n in sorted(self.weights_by_dtype.items())]
        return rows + [
            ("biases", self.biases),
            ("other constants", self.other_constants),
            ("quantization params", self.quantization),
            ("tensor names", self.tensor_names),
            ("metadata", self.metadata),
            ("graph and padding", self.graph),
        ]


def size_breakdown(graph, raw_bytes: int) -> SizeBreakdown:
    """Splits ``raw_bytes`` of a parsed flatbuffer (:class:`flatbuffer.Graph`) into a :class:`SizeBreakdown`."""
    bias_buffers = set()
    for op in graph.operators:
        index = _BIAS_INPUT.get(op.op)
        if index is not None and index < len(op.inputs):
            bias_buffers.add(graph.tensors[op.inputs[index]].buffer)
    weights: dict = {}
    biases = other = quantization = names = 0
    seen = set()
    for t in graph.tensors:
        names += len(t.name.encode())
        quantization += 4 * (0 if t.scales is None else t.scales.size) + 8 * (0 if t.zero_points is None else t.zero_points.size)
        if not t.nbytes or t.buffer in seen:
            continue
        seen.add(t.buffer)
        if t.buffer in bias_buffers:
            biases += t.nbytes
        elif len(t.shape) >= 2:
            weights[t.dtype] = weights.get(t.dtype, 0) + t.nbytes
        else:
            other += t.nbytes
    counted = sum(weights.values()) + biases + other + quantization + names + graph.metadata_bytes
    return SizeBreakdown(
        weights_by_dtype=weights,
        biases=biases,
        other_constants=other,
        quantization=quantization,
        tensor_names=names,
        metadata=graph.metadata_bytes,
        graph=raw_bytes - counted,
    )


@dataclasses.dataclass
class SizeReport:
    """Sizes of a flatbuffer, optionally against a baseline.

    Attributes:
        raw_bytes: Size of the flatbuffer.
        gzip_bytes: ``len(gzip.compress(content, 9))``.
        zip_bytes: Size of a ZIP_DEFLATED archive holding the file (how
            TFMOT's guides report "compressed size").
        baseline_gzip_bytes: gzip size of the baseline, if one was given.
        compression: ``baseline_gzip_bytes / gzip_bytes`` (None without baseline).
        raw_ratio: ``baseline raw / raw_bytes`` (None without baseline).
        breakdown: Where the raw bytes go (:class:`SizeBreakdown`).
    """

    raw_bytes: int
    gzip_bytes: int
    zip_bytes: int
    baseline_gzip_bytes: int | None = None
    compression: float | None = None
    raw_ratio: float | None = None
    breakdown: SizeBreakdown | None = None

    def __str__(self) -> str:
        lines = [
            f"raw bytes   {self.raw_bytes:>12,}",
            f"gzip bytes  {self.gzip_bytes:>12,}",
            f"zip bytes   {self.zip_bytes:>12,}",
        ]
        if self.compression is not None:
            lines.append(f"gzip compression vs baseline  {self.compression:.2f}x")
            lines.append(f"raw  compression vs baseline  {self.raw_ratio:.2f}x")
        if self.breakdown is not None:
            lines.append("raw bytes by content:")
            for label, n in self.breakdown.rows():
                lines.append(f"  {label:<20}{n:>12,}  {100 * n / max(self.raw_bytes, 1):5.1f}%")
        return "\n".join(lines)


def _integer_densify(content: bytes) -> bool:
    """True if the file expands a sparse integer weight with DENSIFY (XNNPack cannot prepare that graph)."""
    graph = flatbuffer.parse(content)
    return any(
        op.op == "DENSIFY" and graph.tensors[op.outputs[0]].dtype not in ("float32", "float16")
        for op in graph.operators
    )


def _interpreter(content: bytes, num_threads: int = 1, source: str = "the model"):
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    # XNNPack (the default delegate) fails to prepare an int8 FULLY_CONNECTED
    # fed by DENSIFY; LiteRT's builtin kernels run it.
    resolver = OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES if _integer_densify(content) else OpResolverType.AUTO
    try:
        with native_stderr_silenced():  # "INFO: Created TensorFlow Lite XNNPACK delegate for CPU."
            interp = Interpreter(model_content=content, num_threads=num_threads, experimental_op_resolver_type=resolver)
            interp.allocate_tensors()
    except Exception as error:  # LiteRT raises ValueError / RuntimeError / UnicodeDecodeError on bad models
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise InvalidFileError(
            f"{source}: the LiteRT interpreter cannot load it ({first}); the file is corrupted "
            "or uses ops this LiteRT build does not have."
        ) from None
    return interp


def _quantize(x: np.ndarray, detail: dict) -> np.ndarray:
    dtype = np.dtype(detail["dtype"])
    if np.issubdtype(dtype, np.floating):
        return x.astype(dtype)
    scale, zero_point = detail["quantization"]
    if scale == 0:
        return x.astype(dtype)
    info = np.iinfo(dtype)
    return np.clip(np.round(x / scale + zero_point), info.min, info.max).astype(dtype)


def _dequantize(y: np.ndarray, detail: dict) -> np.ndarray:
    if np.issubdtype(np.dtype(detail["dtype"]), np.floating):
        return y.astype(np.float32)
    scale, zero_point = detail["quantization"]
    if scale == 0:
        return y.astype(np.float32)
    return (y.astype(np.float32) - zero_point) * scale


class TFLiteModel:
    """A TFLite flatbuffer with size, inspection and evaluation helpers.

    Args:
        content: The flatbuffer bytes.
        mode: The conversion mode it was made with, if known.
        source: How to name the model in error messages (``load`` passes
            the file path).

    Raises:
        InvalidTypeError: ``content`` is not bytes.
        InvalidFileError: the bytes are not a complete TFLite flatbuffer.

    Example:

    >>> import numpy as np, keras, collabopt.tflite
    >>> m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    >>> tfl = collabopt.tflite.convert(m, "float32")
    >>> tfl.predict(np.zeros((5, 4), "float32")).shape
    (5, 3)
    """

    def __init__(self, content: bytes, mode: str | None = None, *, source: str | None = None):
        if not isinstance(content, (bytes, bytearray, memoryview)):
            raise InvalidTypeError(
                f"TFLiteModel expects the bytes of a .tflite flatbuffer; received {type(content).__name__} "
                "(to read a file, use collabopt.tflite.load(path))."
            )
        content = bytes(content)
        self.source = source or "the TFLite model"
        if len(content) < 8 or content[4:8] != b"TFL3":
            raise InvalidFileError(
                f"{self.source} is not a TFLite flatbuffer (missing the 'TFL3' identifier at byte 4); "
                "expected a .tflite file written by the TFLite converter."
            )
        flatbuffer.parse(content, self.source)  # validates the structure once (cached)
        self.content = content
        self.mode = mode
        self._interp = None

    # --- files ---------------------------------------------------------------
    def save(self, path) -> pathlib.Path:
        """Writes the flatbuffer to ``path`` and returns the path."""
        path = pathlib.Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(self.content)
        return path

    @classmethod
    def load(cls, path) -> "TFLiteModel":
        """Reads a .tflite file.

        Raises:
            InvalidFileError: the file is missing, unreadable, or not a
                complete TFLite flatbuffer (the message names the file).
        """
        if not isinstance(path, (str, os.PathLike)):
            raise InvalidTypeError(f"load expects the path of a .tflite file; received {type(path).__name__}.")
        path = pathlib.Path(path)
        if not path.is_file():
            raise InvalidFileError(f"no such .tflite file: {path}" + (" (it is a folder)" if path.is_dir() else ""))
        try:
            content = path.read_bytes()
        except OSError as error:
            raise InvalidFileError(f"cannot read {path}: {error.strerror or error}") from None
        return cls(content, source=str(path))

    # --- sizes ---------------------------------------------------------------
    def size_report(self, baseline: "TFLiteModel | None" = None) -> SizeReport:
        """Raw, gzip (level 9) and zip sizes, where the raw bytes go; ratios against ``baseline`` if given."""
        gz = len(gzip.compress(self.content, 9))
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as z:
            z.writestr("model.tflite", self.content)
        report = SizeReport(
            raw_bytes=len(self.content),
            gzip_bytes=gz,
            zip_bytes=len(buf.getvalue()),
            breakdown=size_breakdown(flatbuffer.parse(self.content), len(self.content)),
        )
        if baseline is not None:
            base = baseline.size_report()
            report.baseline_gzip_bytes = base.gzip_bytes
            report.compression = base.gzip_bytes / gz
            report.raw_ratio = base.raw_bytes / report.raw_bytes
        return report

    # --- contents ------------------------------------------------------------
    def inspect(self) -> InspectionReport:
        """Per-tensor statistics (dtype, shape, zeros, unique values, quantization)."""
        return tensor_stats(flatbuffer.parse(self.content))

    def float_islands(self) -> list[dict]:
        """Operators that still compute in float (empty for a fully integer model)."""
        return float_islands(flatbuffer.parse(self.content))

    def ops(self) -> list[str]:
        """Builtin operator names in execution order."""
        return [op.op for op in flatbuffer.parse(self.content).operators]

    # --- running -------------------------------------------------------------
    @property
    def input_details(self) -> list[dict]:
        return self._interpreter().get_input_details()

    @property
    def output_details(self) -> list[dict]:
        return self._interpreter().get_output_details()

    def _interpreter(self):
        if self._interp is None:
            self._interp = _interpreter(self.content, source=self.source)
        return self._interp

    def _run(self, interp, step):
        """Runs ``step()`` (resize / allocate / invoke) turning interpreter failures into InvalidFileError."""
        try:
            return step()
        except (RuntimeError, ValueError) as error:
            if isinstance(error, CollaboptError):
                raise
            first = (str(error).strip().splitlines() or [type(error).__name__])[0]
            raise InvalidFileError(
                f"{self.source}: the LiteRT interpreter failed to run it ({first}); the file is corrupted "
                "or inconsistent."
            ) from None

    def predict(self, x, batch_size: int = 256, *, dequantize: bool = True):
        """Runs the model on ``x`` (an array, or a list of arrays for several inputs).

        Float inputs are quantized with the input tensors' scale and zero point
        for integer-I/O models, and integer outputs are dequantized (unless
        ``dequantize=False``). Any number of samples; run in batches (of
        the file's batch size if it is static, e.g. 1 with a fused LSTM).
        Variable tensors (a fused LSTM's state) are reset before every batch.

        Returns:
            One array, or a list of arrays for several outputs.
        """
        xs = list(x) if isinstance(x, (list, tuple)) else [x]
        xs = [np.asarray(a) for a in xs]
        interp = self._interpreter()
        ins = interp.get_input_details()
        if len(xs) != len(ins):
            raise InvalidArgumentError(f"the model has {len(ins)} inputs, received {len(xs)} arrays.")
        for a, d in zip(xs, ins):
            if tuple(a.shape[1:]) != tuple(d["shape"][1:]):
                raise InvalidArgumentError(
                    f"input '{d['name']}' expects samples of shape {tuple(int(s) for s in d['shape'][1:])}, "
                    f"received {tuple(a.shape[1:])}."
                )
        n = len(xs[0])
        # A file with a static batch (a fused LSTM's) runs in batches of that
        # size, the last one padded; resizing it would break its state tensors.
        static_batch = int(ins[0]["shape_signature"][0]) if len(ins[0]["shape_signature"]) else -1
        if static_batch > 0:
            batch_size = static_batch
        results = None
        for start in range(0, n, batch_size):
            chunk = [a[start : start + batch_size] for a in xs]
            size = len(chunk[0])
            ins = interp.get_input_details()
            if static_batch > 0 and size < static_batch:
                chunk = [np.concatenate([a, np.zeros((static_batch - size,) + a.shape[1:], a.dtype)]) for a in chunk]
            elif ins[0]["shape"][0] != size:
                for a, d in zip(chunk, ins):
                    self._run(interp, lambda a=a, d=d: interp.resize_tensor_input(d["index"], [len(a)] + list(d["shape"][1:])))
                self._run(interp, interp.allocate_tensors)
                ins = interp.get_input_details()
            for a, d in zip(chunk, ins):
                interp.set_tensor(d["index"], _quantize(a, d))
            # Variable tensors (a fused LSTM's state) persist between
            # invocations; every batch starts from the initial state.
            interp.reset_all_variables()
            self._run(interp, interp.invoke)
            outs = interp.get_output_details()
            values = [interp.get_tensor(d["index"])[:size] for d in outs]
            if dequantize:
                values = [_dequantize(v, d) for v, d in zip(values, outs)]
            results = [[v] for v in values] if results is None else [r + [v] for r, v in zip(results, values)]
        merged = [np.concatenate(r) for r in results]
        return merged[0] if len(merged) == 1 else merged

    def evaluate(self, x, y, batch_size: int = 256) -> float:
        """Top-1 accuracy on ``(x, y)`` (``y``: integer labels or one-hot)."""
        pred = self.predict(x, batch_size)
        if isinstance(pred, list):
            pred = pred[0]
        y = np.asarray(y)
        if y.ndim > 1 and y.shape[-1] > 1:
            y = y.argmax(-1)
        y = y.reshape(-1)
        if pred.shape[-1] == 1:
            guess = (pred.reshape(-1) > 0.5).astype(y.dtype)
        else:
            guess = pred.reshape(len(pred), -1).argmax(-1)
        return float(np.mean(guess == y))

    def latency(self, runs: int = 200, warmup: int = 10, num_threads: int = 1) -> float:
        """Median microseconds of one batch-1 inference (fresh interpreter).

        See :meth:`latency_stats` for how it is measured.
        """
        return self.latency_stats(runs, warmup, num_threads)["median_us"]

    def latency_stats(
        self, runs: int = 200, warmup: int = 10, num_threads: int = 1, min_sample_us: float = 1000.0, batch_size: int = 1
    ) -> dict:
        """Latency of one ``invoke`` on a batch (batch 1 by default): median and quartiles over ``runs`` timed samples.

        A single ``invoke`` of a small model lasts a few microseconds, close
        to the cost of calling the timer, so each sample times a loop of
        ``repeat`` consecutive invokes, with ``repeat`` chosen so that one
        sample lasts at least ``min_sample_us``; the per-invoke time is the
        sample's time divided by ``repeat``. At batch 1 a tiny model's time
        is mostly the interpreter's fixed cost per invoke; with
        ``batch_size=64`` the per-sample time (``median_us / batch_size``)
        is the arithmetic the kernels do, which separates a model with a
        quarter of the MACs from its parent.

        Returns:
            ``{"median_us", "p25_us", "p75_us", "repeat", "runs", "batch_size"}`` (times per invoke).
        """
        if runs < 1 or warmup < 0 or not isinstance(batch_size, int) or batch_size < 1:
            raise InvalidArgumentError(
                f"latency: runs must be >= 1, batch_size >= 1 and warmup >= 0; received runs={runs}, warmup={warmup}, "
                f"batch_size={batch_size!r}."
            )
        interp = _interpreter(self.content, num_threads, self.source)
        ins = interp.get_input_details()
        for d in ins:
            if d["shape"][0] != batch_size:
                shape = [batch_size] + list(d["shape"][1:])
                self._run(interp, lambda d=d, shape=shape: interp.resize_tensor_input(d["index"], shape))
        self._run(interp, interp.allocate_tensors)
        for d in interp.get_input_details():
            interp.set_tensor(d["index"], np.zeros(d["shape"], d["dtype"]))
        self._run(interp, interp.invoke)
        invoke = interp.invoke
        for _ in range(warmup):
            invoke()
        repeat = 1
        while True:  # calibrate: double the loop until one sample lasts min_sample_us
            t = time.perf_counter()
            for _ in range(repeat):
                invoke()
            elapsed = time.perf_counter() - t
            if elapsed * 1e6 >= min_sample_us or repeat >= 1 << 16:
                break
            repeat *= 2
        times = []
        for _ in range(runs):
            t = time.perf_counter()
            for _ in range(repeat):
                invoke()
            times.append((time.perf_counter() - t) / repeat * 1e6)
        q25, median, q75 = (float(v) for v in np.percentile(times, [25, 50, 75]))
        return {"median_us": median, "p25_us": q25, "p75_us": q75, "repeat": repeat, "runs": runs, "batch_size": batch_size}

    def __repr__(self) -> str:
        return f"TFLiteModel(mode={self.mode!r}, raw_bytes={len(self.content)})"


def as_tflite_model(tflite, what: str = "tflite") -> TFLiteModel:
    """``tflite`` as a :class:`TFLiteModel`: a TFLiteModel, the path of a .tflite file, or its bytes.

    Raises:
        InvalidTypeError: anything else (the message names ``what``).
        InvalidFileError: a missing file or bytes that are not a flatbuffer.
    """
    if isinstance(tflite, TFLiteModel):
        return tflite
    if isinstance(tflite, (str, os.PathLike)):
        return TFLiteModel.load(tflite)
    if isinstance(tflite, (bytes, bytearray, memoryview)):
        return TFLiteModel(bytes(tflite))
    raise InvalidTypeError(
        f"{what}: expected a TFLiteModel (from collabopt.tflite.convert or load), the path of a "
        f".tflite file, or its bytes; received {type(tflite).__name__}."
    )


def load(path) -> TFLiteModel:
    """Reads a .tflite file into a :class:`TFLiteModel`."""
    return TFLiteModel.load(path)
