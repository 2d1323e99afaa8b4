"""Mask functions: which weights to zero for a target sparsity.

All functions take the weight to rank (already multiplied by the current mask,
so pruned weights stay pruned) and return a 0/1 mask of the weight's shape.
The per-layer magnitude mask zeroes exactly ``round(sparsity * size)``
weights (ranking breaks ties), so a kernel's sparsity equals the target.
"""

from __future__ import annotations

import numpy as np
import keras
from keras import ops

POOLING_TYPES = ("AVG", "MAX")


def _rank_mask(scores, sparsity):
    """1 for all but the ``round(sparsity * n)`` smallest scores of a flat tensor.

    Ties at the threshold are zeroed lowest index first, so exactly
    ``round(sparsity * n)`` entries are 0. Linear time: the threshold is the
    k-th smallest score (a selection, not a sort; sorting ResNet50's kernels
    twice per step was most of a pruned training step).

    >>> import numpy as np
    >>> np.asarray(_rank_mask(np.array([3.0, 1.0, 1.0, 2.0, 1.0], "float32"), 0.4)).tolist()
    [1.0, 0.0, 0.0, 1.0, 1.0]
    """
    n = int(scores.shape[0])
    k = ops.cast(ops.round(ops.cast(sparsity, "float32") * n), "int32")
    k = ops.clip(k, 0, n)
    threshold = _kth_smallest(scores, ops.maximum(k - 1, 0))
    below = ops.less(scores, threshold)
    tied = ops.equal(scores, threshold)
    # Of the scores equal to the threshold, zero the first ``k - #below``.
    needed = k - ops.sum(ops.cast(below, "int32"))
    tie_rank = ops.cumsum(ops.cast(tied, "int32"))
    zeroed = ops.logical_or(below, ops.logical_and(tied, ops.less_equal(tie_rank, needed)))
    zeroed = ops.logical_and(zeroed, ops.greater(k, 0))
    return ops.cast(ops.logical_not(zeroed), "float32")


def _kth_smallest(values, k):
    """The ``k``-th smallest entry (0-based) of a 1-D tensor.

    On TensorFlow, ``NthElement`` (std::nth_element: linear time) has no
    keras.ops counterpart; other backends sort.
    """
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return tf.raw_ops.NthElement(input=values, n=k)
    return ops.take(ops.sort(values), k)


def magnitude_mask(weight, sparsity):
    """Zeroes the ``round(sparsity * size)`` smallest-magnitude weights."""
    flat = ops.reshape(ops.abs(weight), (-1,))
    return ops.reshape(_rank_mask(flat, sparsity), ops.shape(weight))


def block_mask(weight, sparsity, block_size, pooling_type="AVG"):
    """Zeroes whole ``block_size`` blocks of a rank-2 weight, ranked by pooled magnitude.

    Blocks are scored by the average (``"AVG"``) or maximum (``"MAX"``)
    magnitude of their entries and ``round(sparsity * blocks)`` whole blocks
    are zeroed. The pruning wrapper only accepts blocks that tile the weight
    (``check_weight``), so the reached sparsity is the target to the nearest
    whole block; a weight with partial edge blocks is padded here for safety.
    """
    rows, cols = (int(s) for s in weight.shape)
    bh, bw = block_size
    ph, pw = -rows % bh, -cols % bw
    padded = ops.pad(ops.abs(weight), [[0, ph], [0, pw]])
    blocks = ops.reshape(padded, ((rows + ph) // bh, bh, (cols + pw) // bw, bw))
    pooled = ops.mean(blocks, axis=(1, 3)) if pooling_type == "AVG" else ops.max(blocks, axis=(1, 3))
    block = ops.reshape(_rank_mask(ops.reshape(pooled, (-1,)), sparsity), ops.shape(pooled))
    full = ops.repeat(ops.repeat(block, bh, axis=0), bw, axis=1)
    return full[:rows, :cols]


def m_by_n_mask(weight, m, n, input_axis):
    """Keeps the ``m`` largest-magnitude weights of every ``n`` consecutive ones along ``input_axis``."""
    rank = len(weight.shape)
    axis = input_axis % rank
    perm = [a for a in range(rank) if a != axis] + [axis]
    moved = ops.transpose(ops.abs(weight), perm)
    moved_shape = ops.shape(moved)
    groups = ops.reshape(moved, (-1, n))
    order = ops.argsort(ops.argsort(-groups, axis=-1), axis=-1)  # 0 = largest in its group
    keep = ops.cast(ops.less(order, m), "float32")
    inverse = list(np.argsort(perm))
    return ops.transpose(ops.reshape(keep, moved_shape), inverse)
