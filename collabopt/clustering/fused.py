"""ClusterWeights' training step on TensorFlow for large weights: assignment and gather fused by XLA.

Each training step reassigns every weight to its nearest centroid and
gathers the centroids back. Run op by op, TensorFlow's ``searchsorted`` and
``gather`` are single-threaded, and the centroids' gradient (the gather's)
becomes an ``unsorted_segment_sum`` over every weight: on ResNet50's 23.5
million weights the three took about a second per step, more than the
network's own forward and backward pass. Here one XLA-compiled pass finds the
nearest centroid and its value, and the centroids' gradient is a weighted
``bincount`` of the flat (channel, centroid) index. The pass walks the sorted
midpoints as a chain of selects (a value above midpoint j takes centroid
j + 1 of the sorted order): the same index as the binary search, and an
elementwise loop XLA vectorizes, where gathering from the centroids per
weight took 3-5 times longer (a 3x3x512x512 kernel, 16 centroids: 2.7
against 8.4 ms; 128 centroids: 19 against 78 ms). The chain compiles to a
larger kernel, and XLA compiles one per input shape: small per-tensor weights
(fewer than :data:`PADDED_BELOW` elements) count the midpoints and gather
instead, on the flat weight padded to a power of two, so that weights of
similar size share a kernel (:func:`padded_size`; MobileNetV2's clustered
training peak 1185 -> 895 MiB).
"""

from __future__ import annotations

import functools

import numpy as np

from collabopt.fused import xla_kernel


@functools.lru_cache(maxsize=None)
def _kernel(perm: tuple | None, rows: int, masked: bool, chain: bool):
    """``(weight, centroids, effective centroids[, mask]) -> (values, indices, flat index)``, all in the weight's layout.

    ``perm`` moves the channel axes to the front (None: one row, per tensor);
    centroids are ``(rows, K)``. With ``masked``, centroid 0 is the pinned
    zero: kept weights go to the nearest of the others, masked ones to it.
    ``chain``: walk the midpoints as a chain of selects (faster; a larger
    kernel), else count them and gather.
    """
    import tensorflow as tf

    @xla_kernel
    def kernel(weight, centroids, effective, mask=None):
        shape = tf.shape(weight)
        moved = tf.transpose(weight, perm) if perm is not None else weight
        values_rows = tf.reshape(moved, (rows, -1))
        first = 1 if masked else 0  # centroid 0 is the pinned zero when masked
        candidates = centroids[:, first:]
        order = tf.argsort(candidates, axis=-1)
        ordered = tf.gather(candidates, order, batch_dims=1)
        ordered_effective = tf.gather(effective[:, first:], order, batch_dims=1)
        midpoints = (ordered[:, 1:] + ordered[:, :-1]) / 2.0
        # The sorted position is searchsorted(midpoints, value, side="left"):
        # the number of midpoints below the value (a NaN is below none).
        if chain:
            index = tf.broadcast_to(order[:, :1] + first, tf.shape(values_rows))
            values = tf.broadcast_to(ordered_effective[:, :1], tf.shape(values_rows))
            for j in range(candidates.shape[-1] - 1):
                above = values_rows > midpoints[:, j : j + 1]
                index = tf.where(above, order[:, j + 1 : j + 2] + first, index)
                values = tf.where(above, ordered_effective[:, j + 1 : j + 2], values)
        else:
            position = tf.reduce_sum(tf.cast(values_rows[:, :, None] > midpoints[:, None, :], tf.int32), axis=-1)
            index = tf.gather(order, position, batch_dims=1) + first
            values = tf.gather(ordered_effective, position, batch_dims=1)
        if masked:
            pruned = tf.equal(tf.reshape(tf.transpose(mask, perm) if perm is not None else mask, (rows, -1)), 0)
            index = tf.where(pruned, tf.zeros_like(index), index)
            values = tf.where(pruned, tf.broadcast_to(effective[:, :1], tf.shape(values)), values)
        k = tf.shape(effective)[-1]
        flat = index + tf.range(rows)[:, None] * k if rows > 1 else None  # per tensor, the index is the flat index

        def back(t):
            if perm is None:
                return tf.reshape(t, shape)
            moved_shape = tf.gather(shape, perm)
            return tf.transpose(tf.reshape(t, moved_shape), np.argsort(perm))

        return back(values), back(index), (back(flat) if flat is not None else None)

    return kernel


#: A per-tensor weight of fewer elements than this runs as a flat vector padded to a power of two (:func:`padded_size`).
PADDED_BELOW = 1 << 16


def padded_size(size: int) -> int:
    """The length a per-tensor weight of ``size`` elements is padded to in a fused training step.

    XLA compiles a kernel for every input shape, and each costs memory
    (compiling it, and holding it): MobileNetV2 has some fifty distinct
    weight shapes. Padded to the next power of two (at least 1024), small
    weights share about ten kernels, at the cost of a few spare elements;
    weights of :data:`PADDED_BELOW` elements or more keep their own.

    >>> padded_size(432), padded_size(5000), padded_size(1 << 20)
    (1024, 8192, 1048576)
    """
    if size >= PADDED_BELOW:
        return size
    return max(1024, 1 << (size - 1).bit_length())


def clustered_for_training(weight, centroids, effective, mask, perm, rows: int):
    """``(clustered weight, indices)`` for one training step, fused.

    The clustered weight has the value ``effective[indices]`` and the
    gradients of the op-by-op pipeline: the straight-through gradient to
    ``weight``, and to ``effective`` the sum of the gradients of the weights
    assigned to each centroid (``cluster_gradient_aggregation="SUM"``).

    Args:
        weight: The weight handed in by the inner chain (float32).
        centroids: ``(rows, K)`` centroids the weights are assigned to.
        effective: ``(rows, K)`` centroids the clustered weight takes (the
            zero centroid pinned); gradients flow into it.
        mask: The sparsity mask to keep (zeros go to centroid 0), or None.
        perm: The axis order moving the channel axes first (None: per tensor).
        rows: Channels (1 per tensor).
    """
    import tensorflow as tf

    size = int(np.prod(weight.shape))
    chain = size >= PADDED_BELOW
    kernel = _kernel(None if perm is None else tuple(int(a) for a in perm), int(rows), mask is not None, chain)
    bucket = padded_size(size) if perm is None else size

    def laid_out(t):  # padded: the flat tensor, so that the weights of one bucket share the kernel
        return tf.pad(tf.reshape(t, (-1,)), [[0, bucket - size]]) if bucket != size else t

    arguments = [laid_out(tf.stop_gradient(weight)), tf.stop_gradient(centroids), tf.stop_gradient(effective)]
    if mask is not None:
        arguments.append(laid_out(tf.cast(mask, weight.dtype)))
    values, indices, flat = kernel(*arguments)
    # Static shapes and raw ops where they are known: every op here is one
    # more node per clustered weight in a traced step's graph, and a graph's
    # nodes are most of a compiled step's resident memory (measured: about
    # 40 KiB per node on MobileNetV2).
    shape = weight.shape if weight.shape.is_fully_defined() else tf.shape(weight)
    if bucket != size:
        values, indices = (tf.reshape(tf.slice(t, [0], [size]), shape) for t in (values, indices))
    flat = indices if flat is None else flat

    @tf.custom_gradient
    def attach(w, c):
        def gradient(dy):
            # tf.math.bincount's argument checks are some twenty ops; the
            # flat indices are in [0, K * rows) by construction.
            dc = tf.raw_ops.DenseBincount(
                input=tf.reshape(flat, (-1,)), size=int(np.prod(c.shape)), weights=tf.reshape(dy, (-1,)), binary_output=False
            )
            return dy, tf.reshape(tf.cast(dc, c.dtype), c.shape)

        return tf.identity(values), gradient

    return attach(weight, effective), indices
