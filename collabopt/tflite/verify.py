"""Checking that the constraints recorded in training hold in the exported flatbuffer."""

from __future__ import annotations

import dataclasses
import re

import numpy as np

from collabopt.layers import base_layer, optimizable_variables, wrapper_chain
from collabopt.preserve import constraints_on
from collabopt.tflite.inspection import TensorStats
from collabopt.tflite.model import as_tflite_model
from collabopt.transform import iter_layers


@dataclasses.dataclass
class ConstraintCheck:
    """One constraint on one weight, checked against the file.

    Attributes:
        layer: Base layer name.
        weight: Weight name.
        kind: ``"sparsity"`` or ``"clusters"``.
        expected: What training recorded (zeros fraction, or K).
        found: What the file holds (zeros fraction; max unique values per
            tensor or per channel), or None if no tensor matched.
        tensor: Name of the flatbuffer tensor checked.
        holds: Whether the file keeps the constraint.
    """

    layer: str
    weight: str
    kind: str
    expected: float
    found: float | None
    tensor: str | None
    holds: bool


class VerifyReport(list):
    """A list of :class:`ConstraintCheck` that prints as a table; ``all_hold`` summarises it."""

    @property
    def all_hold(self) -> bool:
        return bool(self) and all(c.holds for c in self)

    def __str__(self) -> str:
        rows = [("layer", "weight", "constraint", "recorded", "in file", "holds")]
        for c in self:
            fmt = (lambda v: f"{100 * v:.1f}% zeros") if c.kind == "sparsity" else (lambda v: f"<= {int(v)} values")
            found = "no tensor" if c.found is None else (f"{100 * c.found:.1f}% zeros" if c.kind == "sparsity" else f"{int(c.found)} values")
            rows.append((c.layer, c.weight, c.kind, fmt(c.expected), found, "yes" if c.holds else "NO"))
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines = ["  ".join(v.ljust(w) for v, w in zip(r, widths)) for r in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        return "\n".join(lines)


def _mentions(tensor_name: str, names) -> bool:
    return any(re.search(rf"(?<![\w]){re.escape(n)}(?:_\d+)?(?=/|[^\w]|$)", tensor_name) for n in names)


def _find_tensor(stats, names, size) -> TensorStats | None:
    candidates = [
        t
        for t in stats
        if t.is_weight and int(np.prod(t.shape or (1,))) == size and t.dtype in ("int8", "float32", "float16") and _mentions(t.name, names)
    ]
    return candidates[0] if candidates else None


def verify(model, tflite) -> VerifyReport:
    """Reports, per layer and weight, whether the recorded sparsity and cluster constraints hold in ``tflite``.

    Sparsity holds when the file's tensor has at least the recorded fraction of
    zeros; clusters hold when it has at most K distinct values per channel
    (per tensor for per-tensor-quantized weights, unless a folded
    BatchNormalization scaled each channel differently).

    Args:
        model: The trained Keras model holding collabopt wrappers.
        tflite: The :class:`TFLiteModel` exported from it, the path of the
            .tflite file, or its bytes (InvalidTypeError otherwise).

    Example:

    >>> import collabopt.tflite as ct
    >>> # report = ct.verify(pcqat_model, ct.convert(pcqat_model, "int8")); print(report)
    """
    tflite = as_tflite_model(tflite, "verify")
    stats = tflite.inspect()
    report = VerifyReport()
    for layer in iter_layers(model):
        chain = wrapper_chain(layer)
        if not chain:
            continue
        base = base_layer(layer)
        names = {base.name} | {w.name for w in chain}
        folded = any(getattr(w, "folded_batchnorm", None) is not None for w in chain)
        for weight_name, variable in optimizable_variables(base).items():
            constraints = constraints_on(layer, weight_name)
            size = int(np.prod(variable.shape))
            tensor = _find_tensor(stats, names, size) if constraints else None
            for kind, constraint in constraints.items():
                state = constraint.numpy_state()
                if kind == "sparsity":
                    expected = float(np.mean(state["mask"] == 0))
                    found = tensor.zeros_fraction if tensor is not None else None
                    holds = found is not None and found >= expected - 1e-9
                else:
                    centroids = state["centroids"]
                    expected = float(centroids.shape[-1])
                    per_tensor = centroids.ndim == 1 and tensor is not None and not tensor.per_channel and not folded
                    found = None if tensor is None else float(tensor.unique_values if per_tensor else tensor.max_unique_per_channel)
                    holds = found is not None and found <= expected
                report.append(ConstraintCheck(base.name, weight_name, kind, expected, found, tensor.name if tensor else None, holds))
    return report
