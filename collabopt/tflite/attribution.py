"""Finding the tensors of a .tflite file that hold a trained weight: by name, else by content.

The converter often names a kernel after its layer, but not always: folded
constants are called ``arith.constant*`` (a Bidirectional RNN's forward and
backward kernels, of equal size, both), and a kernel may be stored transposed
(FULLY_CONNECTED keeps ``(out, in)``) or split along its output channels into
several tensors (one per gate). A weight is therefore looked for

1. by name: a tensor of its size named after its layer (and the sublayers of
   a path-addressed weight such as ``forward_gru/gru_cell/kernel``) whose
   content matches (among several, the best);
2. else by content: every unclaimed constant, read as rows of output
   channels (``(out, ...)`` or Keras's channels-last layout), is compared with
   every run of the weight's output channels it could hold. The score (0..1)
   is the agreement of its zero positions with the zeros the recorded
   constraints pin (when some constraint pins zeros), averaged with the
   cosine between its real (dequantized) values and the trained weight
   (per channel when export rescales channels, e.g. a folded
   BatchNormalization). The best scores are taken first; a tensor is never
   claimed twice, and a weight counts as found only when its pieces cover all
   of its output channels exactly once;
3. else the tensor named after it whose content did not match (a file
   exported from other weights, e.g. before pruning): the constraint kinds
   then report what it lacks.

The pieces of one weight are reassembled into one :class:`TensorStats` (rows =
output channels, one scale per channel where the pieces were quantized
separately), so every constraint kind checks them as it checks one tensor.
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np

from collabopt.tflite.inspection import TensorStats

#: Storage types a trained weight may have in the file.
WEIGHT_DTYPES = ("int8", "int4", "float32", "float16")
#: Lowest content score (0..1) at which a tensor counts as holding (part of) a weight.
MIN_SCORE = 0.6
#: Offsets kept per (weight, tensor, layout) when a tensor could be several runs of channels.
_OFFSETS_KEPT = 2


@dataclasses.dataclass
class Weight:
    """A trained weight to find in the file.

    Attributes:
        key: Identifies the weight in :func:`attribute`'s result.
        names: Names the converter may call its tensor after (layer and wrapper names).
        path: The weight's name in its layer (``"kernel"``, ``"query/kernel"``).
        rows: Its trained values as ``(output channels, values per channel)``.
        zero_rows: True where a recorded constraint pins the value to zero
            (same shape as ``rows``), or None when no constraint pins zeros.
        rescaled: True when export may scale each output channel differently.
    """

    key: object
    names: set
    path: str
    rows: np.ndarray
    zero_rows: np.ndarray | None = None
    rescaled: bool = False

    @property
    def channels(self) -> int:
        return int(self.rows.shape[0])


@dataclasses.dataclass(frozen=True)
class Piece:
    """A file tensor holding output channels ``start:stop`` of a weight.

    ``layout`` is ``"rows"`` when the tensor keeps the channels on its first
    axis (FULLY_CONNECTED's ``(out, in)``, CONV_2D's ``OHWI``) and
    ``"columns"`` when on its last (Keras's layout).
    """

    tensor: TensorStats
    start: int
    stop: int
    layout: str


def _mentions(tensor_name: str, names) -> bool:
    return any(re.search(rf"(?<![\w]){re.escape(n)}(?:_\d+)?(?=/|[^\w]|$)", tensor_name) for n in names)


def _usable(tensor: TensorStats) -> bool:
    return tensor.is_weight and tensor.values is not None and tensor.dtype in WEIGHT_DTYPES


def _views(tensor: TensorStats, per_channel: int, flat=None):
    """``(layout, stored, real)``: the tensor as ``(c, per_channel)`` channel rows, in each layout it may use.

    ``flat``: the tensor's ``(stored, real)`` values, flattened, if already computed.
    """
    stored, real = flat if flat is not None else _flat(tensor)
    if per_channel <= 0 or stored.size % per_channel:
        return []
    c = stored.size // per_channel
    views = [("rows", stored.reshape(c, per_channel), real.reshape(c, per_channel))]
    if c > 1 and per_channel > 1:
        views.append(("columns", stored.reshape(per_channel, c).T, real.reshape(per_channel, c).T))
    return views


def _flat(tensor: TensorStats):
    return np.asarray(tensor.values).reshape(-1), tensor.dequantized().reshape(-1)


def _windows(matrix: np.ndarray, c: int) -> np.ndarray:
    """Every run of ``c`` consecutive rows of ``matrix``: ``(offsets, c, ...)`` (a view, no copy)."""
    return np.lib.stride_tricks.sliding_window_view(matrix, c, axis=0).transpose(0, matrix.ndim, *range(1, matrix.ndim))


def _row_dots(rows: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """``out[i, a] = <rows[i], reference[a + i]>`` for each offset ``a``: ``(c, offsets)``."""
    return np.einsum("in,ain->ia", rows, _windows(reference, rows.shape[0]))


def _scores(weight: Weight, real: np.ndarray) -> np.ndarray:
    """Content score of ``real`` (``(c, n)`` channel rows) as channels ``a:a+c`` of ``weight``, per offset ``a``."""
    reference = weight.rows
    c = real.shape[0]
    if c > weight.channels:
        return np.zeros(0)
    dots = _row_dots(real, reference)  # (c, offsets)
    real_norms = np.linalg.norm(real, axis=1)
    ref_norms = _windows(np.linalg.norm(reference, axis=1), c).T  # (c, offsets)
    if weight.rescaled:  # each channel may carry its own factor (and sign)
        denominator = real_norms[:, None] * ref_norms
        both_zero = (real_norms[:, None] == 0) & (ref_norms == 0)
        cosine = np.where(denominator > 0, np.abs(dots) / np.where(denominator > 0, denominator, 1.0), both_zero)
        values = cosine.mean(axis=0)
    else:
        denominator = np.linalg.norm(real) * np.sqrt((ref_norms**2).sum(axis=0))
        values = np.where(denominator > 0, dots.sum(axis=0) / np.where(denominator > 0, denominator, 1.0), 0.0)
    zeros_ref = weight.zero_rows if weight.zero_rows is not None else weight.rows == 0
    if not zeros_ref.any():
        return values
    zeros = (real == 0).astype(np.float64)
    reference_zeros = zeros_ref.astype(np.float64)
    common = _row_dots(zeros, reference_zeros).sum(axis=0)
    window = _windows(reference_zeros.sum(axis=1), c).sum(axis=1)
    union = zeros.sum() + window - common
    jaccard = np.where(union > 0, common / np.where(union > 0, union, 1.0), 1.0)
    if weight.zero_rows is not None:  # recorded zeros: their positions count as much as the values
        return (values + jaccard) / 2
    return np.maximum(values, jaccard)


def _full_score(weight: Weight, tensor: TensorStats) -> float:
    views = _views(tensor, weight.rows.shape[1]) if _usable(tensor) else []
    return max((float(s[0]) for _, _, real in views if (s := _scores(weight, real)).size), default=-1.0)


def _by_name(stats, weight: Weight, claimed: set) -> list[TensorStats]:
    """Unclaimed tensors of the weight's size named after its layer (and sublayers), best content first."""
    named = [
        t
        for t in stats
        if t.is_weight
        and id(t) not in claimed
        and int(np.prod(t.shape or (1,))) == weight.rows.size
        and t.dtype in WEIGHT_DTYPES
        and _mentions(t.name, weight.names)
    ]
    for sublayer in weight.path.split("/")[:-1]:  # narrow to the sublayers a path-addressed weight names
        narrower = [t for t in named if _mentions(t.name, {sublayer})]
        named = narrower or named
    if len(named) <= 1:
        return named
    scores = [_full_score(weight, t) for t in named]
    return [named[i] for i in np.argsort(-np.asarray(scores), kind="stable")]


def _by_content(stats, weights: list[Weight], claimed: set) -> dict:
    candidates = [t for t in stats if _usable(t) and id(t) not in claimed and np.asarray(t.values).size > 1]
    flats = [_flat(t) for t in candidates] if weights else []
    options = []
    for w_index, weight in enumerate(weights):
        for t_index, tensor in enumerate(candidates):
            for layout, _, real in _views(tensor, weight.rows.shape[1], flats[t_index]):
                scores = _scores(weight, real)
                for offset in np.argsort(-scores, kind="stable")[:_OFFSETS_KEPT]:
                    if scores[offset] >= MIN_SCORE:
                        options.append((float(scores[offset]), w_index, t_index, int(offset), real.shape[0], layout))
    options.sort(key=lambda o: (-o[0], o[1], o[2]))
    covered = [np.zeros(w.channels, bool) for w in weights]
    pieces: list[list[Piece]] = [[] for _ in weights]
    taken: set[int] = set()
    for _, w_index, t_index, start, count, layout in options:
        if t_index in taken or covered[w_index][start : start + count].any():
            continue
        taken.add(t_index)
        covered[w_index][start : start + count] = True
        pieces[w_index].append(Piece(candidates[t_index], start, start + count, layout))
    found = {}
    for weight, weight_pieces, mask in zip(weights, pieces, covered):
        if weight_pieces and mask.all():
            found[weight.key] = sorted(weight_pieces, key=lambda p: p.start)
            claimed.update(id(p.tensor) for p in weight_pieces)
    return found


def attribute(stats, weights: list[Weight]) -> dict:
    """The file tensors holding each weight: ``{weight.key: [Piece, ...]}`` (weights not found are absent).

    Args:
        stats: The file's :class:`TensorStats` (``TFLiteModel.inspect()``).
        weights: The :class:`Weight` s to find; none gets a tensor another one got.
    """
    claimed: set[int] = set()
    found, named_only = {}, {}
    for weight in weights:
        named = _by_name(stats, weight, claimed)
        if not named:
            continue
        score = _full_score(weight, named[0])
        if score >= MIN_SCORE or score == -1.0:  # the content agrees, or there is no content to compare
            claimed.add(id(named[0]))
            found[weight.key] = [Piece(named[0], 0, weight.channels, "rows")]
        else:  # a tensor of another weight may carry this layer's name (a bias of the kernel's size)
            named_only[weight.key] = named
    found.update(_by_content(stats, [w for w in weights if w.key not in found], claimed))
    # Where the content matched nothing (e.g. a file exported before pruning), the named tensor is
    # still the weight's, and the kinds say what it lacks.
    for weight in weights:
        if weight.key not in found:
            tensor = next((t for t in named_only.get(weight.key, ()) if id(t) not in claimed), None)
            if tensor is not None:
                claimed.add(id(tensor))
                found[weight.key] = [Piece(tensor, 0, weight.channels, "rows")]
    return found


def _piece_rows(piece: Piece, per_channel: int):
    """The piece's stored values as ``(c, per_channel)`` rows, and each row's (scale, zero point) or None."""
    tensor = piece.tensor
    stored = dict((layout, s) for layout, s, _ in _views(tensor, per_channel))[piece.layout]
    c = stored.shape[0]
    integer = np.issubdtype(stored.dtype, np.integer)
    if not tensor.scales or not integer:
        return stored, ((), ())  # stored as real values
    zero_points = tensor.zero_points or (0,)
    if len(tensor.scales) == 1:
        return stored, ((tensor.scales[0],) * c, (zero_points[0],) * c)
    shape, axis = tuple(tensor.shape), tensor.quantized_dimension
    channel_axis = 0 if piece.layout == "rows" else len(shape) - 1
    if axis != channel_axis or len(tensor.scales) != c:
        return stored, None  # quantized along another axis: only real values compare
    points = tuple(zero_points) if len(zero_points) == c else (zero_points[0],) * c
    return stored, (tuple(tensor.scales), points)


def combined_stats(pieces: list[Piece], weight: Weight) -> TensorStats:
    """One :class:`TensorStats` for a weight held by ``pieces``: the tensor itself when one piece holds it all.

    Several pieces become one tensor of shape ``(channels, values per
    channel)``: stored values side by side with one scale and zero point per
    channel (a single one when every piece shares it); pieces of different
    storage types, or quantized along another axis, are compared by their
    real values.
    """
    if len(pieces) == 1:
        return pieces[0].tensor
    per_channel = weight.rows.shape[1]
    parts = [_piece_rows(p, per_channel) for p in pieces]
    dtypes = {p.tensor.dtype for p in pieces}
    quantized = [q for _, q in parts]
    if len(dtypes) == 1 and all(q is not None and q[0] for q in quantized):
        stored = np.concatenate([s for s, _ in parts])
        scales = tuple(s for q in quantized for s in q[0])
        zero_points = tuple(z for q in quantized for z in q[1])
        if len(set(scales)) == 1 and len(set(zero_points)) == 1 and not any(p.tensor.per_channel for p in pieces):
            scales, zero_points = scales[:1], zero_points[:1]
        dtype = dtypes.pop()
    elif len(dtypes) == 1 and all(q == ((), ()) for q in quantized):
        stored, scales, zero_points, dtype = np.concatenate([s for s, _ in parts]), (), (), dtypes.pop()
    else:
        real = [dict((layout, r) for layout, _, r in _views(p.tensor, per_channel))[p.layout] for p in pieces]
        stored, scales, zero_points, dtype = np.concatenate(real).astype(np.float32), (), (), "float32"
    points = np.asarray(zero_points or (0,)).reshape(-1, 1)
    rows = [np.unique(r).size for r in stored]
    return TensorStats(
        name=" + ".join(p.tensor.name for p in pieces),
        dtype=dtype,
        shape=tuple(stored.shape),
        is_weight=True,
        zeros_fraction=float(np.mean(stored == points)),
        unique_values=int(np.unique(stored).size),
        max_unique_per_channel=int(max(rows)),
        scales=scales,
        zero_points=zero_points,
        quantized_dimension=0,
        values=stored,
    )
