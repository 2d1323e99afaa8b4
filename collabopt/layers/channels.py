"""Views of a weight as (channels, values): per-channel operations in one place."""

from __future__ import annotations

import numpy as np
from keras import ops

from collabopt.layers.registry import WeightSpec


def _normalize(axes, rank):
    return tuple(sorted(a % rank for a in axes))


def channel_permutation(spec: WeightSpec, rank: int) -> tuple[int, ...]:
    """Axis order that moves ``spec.channel_axes`` to the front (in order)."""
    front = _normalize(spec.channel_axes, rank)
    return front + tuple(a for a in range(rank) if a not in front)


def num_channels(spec: WeightSpec, shape) -> int:
    """Number of output channels of a weight with this ``shape``."""
    rank = len(shape)
    return int(np.prod([shape[a] for a in _normalize(spec.channel_axes, rank)]))


def to_channel_rows(weight, spec: WeightSpec):
    """Reshapes ``weight`` to ``(channels, values_per_channel)`` (tensor or numpy)."""
    shape = tuple(weight.shape)
    perm = channel_permutation(spec, len(shape))
    moved = ops.transpose(weight, perm) if not isinstance(weight, np.ndarray) else weight.transpose(perm)
    c = num_channels(spec, shape)
    return ops.reshape(moved, (c, -1)) if not isinstance(weight, np.ndarray) else moved.reshape(c, -1)


def from_channel_rows(rows, spec: WeightSpec, shape):
    """Inverse of :func:`to_channel_rows` for a weight of ``shape``."""
    shape = tuple(int(s) for s in shape)
    perm = channel_permutation(spec, len(shape))
    moved_shape = tuple(shape[a] for a in perm)
    inverse = tuple(np.argsort(perm))
    if isinstance(rows, np.ndarray):
        return rows.reshape(moved_shape).transpose(inverse)
    return ops.transpose(ops.reshape(rows, moved_shape), inverse)


def cut_value(value, cut: dict):
    """``value`` (numpy) with the entries ``cut`` (``{negative axis: keep mask}``) drops removed."""
    for axis, keep in cut.items():
        value = np.compress(keep, value, axis=axis)
    return value


def kept_channels(shape, channel_axes, cut: dict) -> np.ndarray:
    """Indices of the per-channel entries (channels indexed by ``channel_axes`` of a weight of ``shape``) that ``cut`` keeps.

    >>> import numpy as np
    >>> from collabopt.layers.channels import kept_channels
    >>> kept_channels((3, 3, 4, 2), (2, 3), {-2: np.array([True, False, True, False])})
    array([0, 1, 4, 5])
    """
    rank = len(shape)
    axes = sorted(a - rank if a >= 0 else a for a in channel_axes)  # the order of to_channel_rows
    ids = np.arange(int(np.prod([shape[a] for a in axes]))).reshape([shape[a] for a in axes])
    for position, axis in enumerate(axes):
        if axis in cut:
            ids = np.compress(cut[axis], ids, axis=position)
    return ids.reshape(-1)
