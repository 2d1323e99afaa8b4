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
