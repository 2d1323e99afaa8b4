"""Checking that the constraints recorded in training hold in the exported flatbuffer."""

from __future__ import annotations

import dataclasses

import numpy as np

from keras import ops

from collabopt.layers import base_layer, optimizable_variables, spec_for, to_channel_rows, wrapper_chain
from collabopt.layers.channels import cut_value, kept_channels
from collabopt.preserve import constraints_on, get_kind, zero_mask
from collabopt.tflite.attribution import Weight, attribute, combined_stats
from collabopt.tflite.model import as_tflite_model
from collabopt.transform import iter_layers
from collabopt.transform.shrink import removed_channel_cuts


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
        tensors: The flatbuffer tensors holding the weight: one, or several
            that each hold some of its output channels (e.g. one per gate of
            a recurrent kernel); ``tensor`` joins their names with ``" + "``.
    """

    layer: str
    weight: str
    kind: str
    expected: float
    found: float | None
    tensor: str | None
    holds: bool
    tensors: tuple[str, ...] = ()
    #: Number of values of the weight.
    size: int = 0
    #: Whether export removed filter-pruned channels (or the input rows
    #: reading them) from the weight: ``expected`` is still what training
    #: recorded, ``found`` and ``holds`` are for what the file keeps.
    channels_removed: bool = False


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
            if c.channels_removed:
                found += " (pruned channels removed)"
            rows.append((c.layer, c.weight, c.kind, recorded, found, "yes" if c.holds else "NO"))
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines = ["  ".join(v.ljust(w) for v, w in zip(r, widths)) for r in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        return "\n".join(lines)

    def reached_parameters(self) -> int:
        """How many weight values carry constraints that all hold in the file (each weight counted once)."""
        weights: dict[tuple, tuple[int, bool]] = {}
        for c in self:
            size, holds = weights.get((c.layer, c.weight), (c.size, True))
            weights[(c.layer, c.weight)] = (size, holds and c.holds)
        return sum(size for size, holds in weights.values() if holds)

    def reached_share(self, model) -> float:
        """The share of ``model``'s kernel parameters (:func:`kernel_parameters`) whose constraints hold in the file.

        ``model`` is the plain model the chain started from (or any model of
        the same architecture): a wrapped model also holds centroids.
        """
        total = kernel_parameters(model)
        return self.reached_parameters() / total if total else 0.0


def kernel_parameters(model) -> int:
    """Values of the trainable weights of rank >= 2 of ``model``: every kernel and embedding table.

    Biases (an attention layer's are ``(heads, dim)``) and scales are not kernels.

    >>> import keras
    >>> kernel_parameters(keras.Sequential([keras.Input((3,)), keras.layers.Dense(4)]))
    12
    """
    return int(
        sum(np.prod(v.shape) for v in model.trainable_weights if len(v.shape) >= 2 and not v.path.endswith("bias"))
    )


def _weight(key, layer, effective, base, weight_name, variable, names, folded, cut) -> Weight:
    """What :func:`attribute` needs to find one weight: its trained values and recorded zeros as channel rows.

    ``cut``: what export removed of the weight (filter-pruned channels, and
    the input rows that read them), so the rows are the weight as the file holds it.
    """
    spec = spec_for(base, weight_name)
    effective = effective.get(weight_name, variable)
    rows = to_channel_rows(cut_value(np.asarray(ops.convert_to_numpy(effective), np.float64), cut), spec)
    mask = zero_mask(layer, weight_name)
    zero_rows = None
    if mask is not None:
        mask = cut_value(np.broadcast_to(np.asarray(ops.convert_to_numpy(mask)), tuple(variable.shape)), cut)
        # Only the pinned zeros the trained weight still has: a later stage may
        # not keep an inner one (clustering without preserve_sparsity moves
        # pruned zeros), and stale zeros would hide the weight's tensor.
        zero_rows = (to_channel_rows(np.ascontiguousarray(mask), spec) == 0) & (rows == 0)
    return Weight(key, names, weight_name, rows, zero_rows, folded)


def verify(model, tflite) -> VerifyReport:
    """Reports, per layer and weight, whether each constraint recorded in training holds in ``tflite``.

    Each constraint kind checks itself (``ConstraintKind.check``) against the
    statistics of the file's tensor for the weight: e.g. sparsity holds when
    the tensor has at least the recorded fraction of zeros, clusters when it
    has at most K distinct values per channel (per tensor for
    per-tensor-quantized weights, unless a folded BatchNormalization scaled
    each channel differently). A kind registered later is checked the same way.

    The file's tensor for a weight is the one of its size named after its
    layer; where the converter renamed it (``arith.constant*`` for the
    folded kernels of a recurrent layer, a Dense kernel named after a folded
    BatchNormalization), stored it transposed, or split it into several
    tensors along its output channels (one per gate), it is found by content
    (:mod:`collabopt.tflite.attribution`): zero positions against the zeros
    the constraints pin, and real values against the trained weight. No
    tensor is attributed to two weights. Where export removed filter-pruned
    channels, each weight and constraint is compared as the file holds it:
    without those channels and the input rows that read them.

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
    removed = removed_channel_cuts(model)  # export drops filter-pruned channels: compare what is left
    entries, weights = [], []
    for layer in iter_layers(model):
        chain = wrapper_chain(layer)
        if not chain:
            continue
        base = base_layer(layer)
        names = {base.name} | {w.name for w in chain}
        folded_layer = any(getattr(w, "folded_batchnorm", None) is not None for w in chain)
        folded_names = set().union(*(getattr(w, "folded_weight_names", set()) for w in chain))
        effective = None
        for weight_name, variable in optimizable_variables(base).items():
            constraints = constraints_on(layer, weight_name)
            if not constraints:
                continue
            if effective is None:
                effective = chain[0].effective_weights(training=False)
            folded = folded_layer or weight_name in folded_names  # a folded BN scales its channels
            cut = removed.get(base.name, {}).get(weight_name, {})
            weight = _weight(len(weights), layer, effective, base, weight_name, variable, names, folded, cut)
            weights.append(weight)
            kept = kept_channels(tuple(variable.shape), spec_for(base, weight_name).channel_axes, cut)
            entries.append((base.name, weight_name, weight, folded, constraints, tuple(variable.shape), cut, kept))
    found = attribute(stats, weights)
    report = VerifyReport()
    for layer_name, weight_name, weight, folded, constraints, shape, cut, kept in entries:
        pieces = found.get(weight.key)
        tensor = combined_stats(pieces, weight) if pieces else None
        tensors = tuple(p.tensor.name for p in pieces) if pieces else ()
        for kind, constraint in constraints.items():
            state = constraint.numpy_state()
            expected = constraint.kind.expected(state)
            if cut:
                state = constraint.kind.without_channels(state, shape, cut, kept)
            holds, found_value = constraint.kind.check(state, tensor, channels_rescaled=folded)
            report.append(
                ConstraintCheck(
                    layer_name, weight_name, kind, expected, found_value, tensor.name if tensor else None, holds, tensors,
                    int(np.prod(weight.rows.shape)), bool(cut),
                )
            )
    return report
