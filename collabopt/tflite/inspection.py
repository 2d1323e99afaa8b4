"""Per-tensor statistics of a flatbuffer: what survived export."""

from __future__ import annotations

import dataclasses

import numpy as np

from collabopt.tflite.flatbuffer import Graph


@dataclasses.dataclass
class TensorStats:
    """Statistics of one tensor of a .tflite model.

    Attributes:
        name: Tensor name in the flatbuffer.
        dtype: numpy dtype name, e.g. ``"int8"``.
        shape: Tensor shape.
        is_weight: True if the tensor is a constant buffer.
        zeros_fraction: Fraction of exact zeros (stored values; for quantized
            tensors a stored value equal to the zero point counts as zero).
            ``None`` for non-constant tensors.
        unique_values: Number of distinct stored values (``None`` if not constant).
        max_unique_per_channel: Largest number of distinct values in one slice
            along the quantized axis (axis 0 if per-tensor).
        scales: Quantization scales (empty if not quantized).
        zero_points: Quantization zero points.
        quantized_dimension: Axis of per-channel quantization.
        values: The stored values of a constant tensor (as in the file:
            integers for quantized tensors), or ``None``.
    """

    name: str
    dtype: str
    shape: tuple[int, ...]
    is_weight: bool
    zeros_fraction: float | None
    unique_values: int | None
    max_unique_per_channel: int | None
    scales: tuple[float, ...]
    zero_points: tuple[int, ...]
    quantized_dimension: int
    values: np.ndarray | None = dataclasses.field(default=None, repr=False, compare=False)

    @property
    def per_channel(self) -> bool:
        return len(self.scales) > 1

    def dequantized(self) -> np.ndarray | None:
        """The real values the tensor stands for: ``(stored - zero_point) * scale``, per channel
        along ``quantized_dimension`` when quantized per channel; float tensors as stored.
        ``None`` for a tensor without constant values.

        >>> t = TensorStats("w", "int8", (2, 2), True, 0.25, 3, 2, (0.5, 0.25), (0, 0), 0, np.array([[2, 0], [4, -4]], np.int8))
        >>> t.dequantized().tolist()
        [[1.0, 0.0], [1.0, -1.0]]
        """
        if self.values is None:
            return None
        values = np.asarray(self.values, np.float64)
        if not self.scales or not np.issubdtype(np.asarray(self.values).dtype, np.integer):
            return values
        scales, zero_points = np.asarray(self.scales, np.float64), np.asarray(self.zero_points or (0,), np.float64)
        if len(scales) > 1 and values.ndim:
            shape = [1] * values.ndim
            shape[self.quantized_dimension] = -1
            scales = scales.reshape(shape)
            zero_points = zero_points.reshape(shape) if zero_points.size == scales.size else zero_points.reshape(-1)[0]
        else:
            scales, zero_points = scales.reshape(-1)[0], zero_points.reshape(-1)[0]
        return (values - zero_points) * scales


class InspectionReport(list):
    """A list of :class:`TensorStats` that prints as a table."""

    def weights(self) -> "InspectionReport":
        """Only the constant tensors with more than one element."""
        return InspectionReport(t for t in self if t.is_weight and int(np.prod(t.shape or (1,))) > 1)

    def by_name(self, fragment: str) -> list[TensorStats]:
        """Tensors whose name contains ``fragment``."""
        return [t for t in self if fragment in t.name]

    #: Widest the tensor-name column gets; longer names wrap onto the next lines.
    NAME_WIDTH = 60

    def __str__(self) -> str:
        header = ("tensor", "dtype", "shape", "zeros %", "unique", "max uniq/ch", "quant")
        rows = []
        for t in self:
            if not t.is_weight:
                continue
            quant = "" if not t.scales else ("per-channel" if t.per_channel else "per-tensor")
            rows.append(
                (
                    t.name,
                    t.dtype,
                    "x".join(map(str, t.shape)),
                    f"{100 * t.zeros_fraction:.1f}",
                    str(t.unique_values),
                    str(t.max_unique_per_channel),
                    quant,
                )
            )
        name_width = min(max([len(header[0])] + [len(r[0]) for r in rows]), self.NAME_WIDTH)
        widths = [name_width] + [max(len(r[i]) for r in [header, *rows]) for i in range(1, len(header))]

        def line(cells):
            return "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()

        lines = [line(header), "  ".join("-" * w for w in widths)]
        for r in rows:
            # Full names: wrapped at the column width, never cut.
            chunks = [r[0][i : i + name_width] for i in range(0, max(len(r[0]), 1), name_width)]
            lines.append(line((chunks[0], *r[1:])))
            lines.extend(line((chunk,) + ("",) * (len(header) - 1)) for chunk in chunks[1:])
        return "\n".join(lines)


def tensor_stats(graph: Graph) -> InspectionReport:
    """Computes :class:`TensorStats` for every tensor of ``graph``."""
    report = InspectionReport()
    for t in graph.tensors:
        scales = tuple(float(s) for s in t.scales) if t.scales is not None else ()
        zps = tuple(int(z) for z in t.zero_points) if t.zero_points is not None else ()
        zeros = unique = per_channel = None
        if t.data is not None and t.data.size:
            data = t.data
            if zps and len(zps) == 1 and np.issubdtype(data.dtype, np.integer):
                zeros = float(np.mean(data == zps[0]))
            elif zps and len(zps) > 1 and np.issubdtype(data.dtype, np.integer):
                axis = t.quantized_dimension
                shape = [1] * data.ndim
                shape[axis] = -1
                zeros = float(np.mean(data == np.reshape(np.asarray(zps), shape)))
            else:
                zeros = float(np.mean(data == 0))
            unique = int(np.unique(data).size)
            axis = t.quantized_dimension if len(scales) > 1 else 0
            rows = np.moveaxis(data, axis, 0).reshape(data.shape[axis] if data.ndim else 1, -1)
            per_channel = int(max(np.unique(r).size for r in rows))
        report.append(
            TensorStats(
                name=t.name,
                dtype=t.dtype,
                shape=t.shape,
                is_weight=t.data is not None,
                zeros_fraction=zeros,
                unique_values=unique,
                max_unique_per_channel=per_channel,
                scales=scales,
                zero_points=zps,
                quantized_dimension=t.quantized_dimension,
                values=t.data if t.data is not None and t.data.size else None,
            )
        )
    return report


_FLOAT = {"float32", "float16", "float64"}


def float_islands(graph: Graph) -> list[dict]:
    """Operators that still compute in floating point.

    A QUANTIZE op reading a float graph input and a DEQUANTIZE op writing a
    float graph output are the boundary of an integer model with float I/O,
    not islands, and are not reported.
    """
    islands = []
    for op in graph.operators:
        tensors = op.inputs + op.outputs
        floats = [graph.tensors[i].name for i in tensors if graph.tensors[i].dtype in _FLOAT]
        if not floats:
            continue
        if op.op == "QUANTIZE" and all(i in graph.inputs for i in op.inputs):
            continue
        if op.op == "DEQUANTIZE" and all(o in graph.outputs for o in op.outputs):
            continue
        islands.append({"index": op.index, "op": op.op, "float_tensors": floats})
    return islands
