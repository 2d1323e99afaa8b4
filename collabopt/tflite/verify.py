"""Checking that the constraints recorded in training hold in the exported flatbuffer."""

from __future__ import annotations

import dataclasses
import re

import numpy as np

from collabopt.layers import base_layer, optimizable_variables, wrapper_chain
from collabopt.preserve import constraints_on, get_kind
from collabopt.tflite.inspection import TensorStats
from collabopt.tflite.model import as_tflite_model
from collabopt.transform import iter_layers


@dataclasses.dataclass
class ConstraintCheck:
    """One constraint on one weight, checked against the file.

    Attributes:
        layer: Base layer name.
        weight: Weight name.
        kind: The constraint kind's name (any registered kind).
        expected: What training recorded, as the kind's number
            (``ConstraintKind.expected``: e.g. a zeros fraction, or K).
        found: What the file holds, as the kind's number
            (``ConstraintKind.check``), or None if no tensor matched.
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
            kind = get_kind(c.kind)
            recorded, found = kind.describe(c.expected, bound=True), kind.describe(c.found)
            rows.append((c.layer, c.weight, c.kind, recorded, found, "yes" if c.holds else "NO"))
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines = ["  ".join(v.ljust(w) for v, w in zip(r, widths)) for r in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        return "\n".join(lines)


def _mentions(tensor_name: str, names) -> bool:
    return any(re.search(rf"(?<![\w]){re.escape(n)}(?:_\d+)?(?=/|[^\w]|$)", tensor_name) for n in names)


def _find_tensor(stats, names, size, weight_name, claimed) -> TensorStats | None:
    """The file's tensor for one weight: same size, named after the layer (and the sublayer of a
    path-addressed weight such as ``query/kernel``), not already matched to another weight.

    Where the converter renamed the tensor (a Dense whose following
    BatchNormalization it folded names the kernel after the BN), the one
    unclaimed constant of that size is taken.
    """
    sized = [
        t
        for t in stats
        if t.is_weight
        and t.name not in claimed
        and int(np.prod(t.shape or (1,))) == size
        and t.dtype in ("int8", "int4", "float32", "float16")
    ]
    named = [t for t in sized if _mentions(t.name, names)]
    if "/" in weight_name:
        sublayer = [t for t in named if _mentions(t.name, {weight_name.split("/")[-2]})]
        named = sublayer or named
    if named:
        return named[0]
    return sized[0] if len(sized) == 1 else None


def verify(model, tflite) -> VerifyReport:
    """Reports, per layer and weight, whether each constraint recorded in training holds in ``tflite``.

    Each constraint kind checks itself (``ConstraintKind.check``) against the
    statistics of the file's tensor for the weight: e.g. sparsity holds when
    the tensor has at least the recorded fraction of zeros, clusters when it
    has at most K distinct values per channel (per tensor for
    per-tensor-quantized weights, unless a folded BatchNormalization scaled
    each channel differently). A kind registered later is checked the same way.

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
    claimed: set[str] = set()
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
            tensor = _find_tensor(stats, names, size, weight_name, claimed) if constraints else None
            if tensor is not None:
                claimed.add(tensor.name)
            for kind, constraint in constraints.items():
                state = constraint.numpy_state()
                holds, found = constraint.kind.check(state, tensor, channels_rescaled=folded)
                expected = constraint.kind.expected(state)
                report.append(
                    ConstraintCheck(
                        base.name, weight_name, kind, expected, found, tensor.name if tensor else None, holds
                    )
                )
    return report
