"""Clustering benchmark: step-time overhead, k-means++ init time, accuracy/size vs K.

    python benchmarks/clustering.py [--epochs 4] [--fine-tune-epochs 1] [--skip-peer]

(a) Training-step time of the reference CNN clustered (16 clusters, k-means++)
    over the same model in plain Keras 3, and TFMOT's cluster_weights over plain
    tf_keras in its own process, in the same run.
(b) Time to initialise 16 k-means++ centroids for a 1,000 x 1,000 Dense kernel.
(c) Fashion-MNIST reference CNN at 8 / 16 / 32 clusters, per-tensor and
    per-channel: float and int8 top-1 and gzip size.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import keras  # noqa: E402
import numpy as np  # noqa: E402

import collabopt.keras as co  # noqa: E402
import collabopt.tflite as ct  # noqa: E402
from collabopt import datasets  # noqa: E402
from collabopt.reference_models import compile_for_classification, reference_cnn  # noqa: E402
from common import overhead_section  # noqa: E402
from results_file import table, write_section  # noqa: E402


def overhead(skip_peer):
    keras.utils.set_random_seed(0)
    return overhead_section(
        "cluster_weights (16)",
        reference_cnn,
        lambda: co.cluster_weights(reference_cnn(), number_of_clusters=16),
        "cluster",
        skip_peer,
        table,
    )


def init_time():
    layer = keras.layers.Dense(1000)
    layer.build((None, 1000))
    t = time.perf_counter()
    co.cluster_weights([layer], number_of_clusters=16)  # a built layer: centroids are initialised here
    seconds = time.perf_counter() - t
    return (
        "### (b) k-means++ initialisation\n\n"
        f"16 clusters for a 1,000 x 1,000 Dense kernel (1M weights): {seconds:.2f} s "
        "(k-means on a 100k-weight sample, scikit-learn, then nearest-centroid assignment of all weights).\n"
    )


def assignment_time():
    """Nearest-centroid assignment: binary search on sorted centroids vs the N x K distance matrix."""
    import tensorflow as tf

    from collabopt.clustering import nearest_centroid

    rng = np.random.default_rng(0)
    rows = []
    for n, k in [(1_000_000, 16), (1_000_000, 256)]:
        values = tf.constant(rng.normal(size=(1, n)).astype("float32"))
        centroids = tf.constant(np.sort(rng.normal(size=(1, k))).astype("float32"))
        search = tf.function(lambda v, c: nearest_centroid(v, c))
        broadcast = tf.function(lambda v, c: tf.argmin(tf.abs(v[:, :, None] - c[:, None, :]), axis=-1, output_type=tf.int32))
        a, b = search(values, centroids).numpy(), broadcast(values, centroids).numpy()
        v, c = values.numpy()[0], centroids.numpy()[0]
        # Where they differ, both centroids must be equally near (a value on a midpoint, up to rounding).
        assert np.allclose(np.abs(v - c[a[0]]), np.abs(v - c[b[0]]), atol=1e-6)
        timings = {}
        for label, fn in (("binary search", search), ("N x K broadcast", broadcast)):
            fn(values, centroids)
            best = min(_timed(fn, values, centroids) for _ in range(5))
            timings[label] = best
        rows.append(
            {
                "weights": f"{n:,}",
                "K": k,
                "binary search ms": f"{1e3 * timings['binary search']:.1f}",
                "N x K broadcast ms": f"{1e3 * timings['N x K broadcast']:.1f}",
                "speed-up": f"{timings['N x K broadcast'] / timings['binary search']:.1f}x",
            }
        )
    return (
        "Per-step cost of reassigning every weight to its nearest centroid (what ClusterWeights does in "
        "each training step), best of 5; both give equally near centroids for every weight.\n\n" + table(rows) + "\n"
    )


def _timed(fn, *args):
    t = time.perf_counter()
    fn(*args).numpy()
    return time.perf_counter() - t


def cluster_where_it_fits(model, k, per_channel):
    """Clusters every layer whose weights (per channel, if per_channel) number at least k."""
    from collabopt.layers import num_channels, optimizable_variables, spec_for
    from collabopt.transform import map_layers

    def fits(layer):
        variables = optimizable_variables(layer)
        if not variables:
            return False
        for name, v in variables.items():
            count = int(np.prod(v.shape))
            if per_channel:
                count //= num_channels(spec_for(layer, name), tuple(v.shape))
            if count < k:
                return False
        return True

    return map_layers(
        model,
        lambda layer: co.cluster_weights(layer, number_of_clusters=k, cluster_per_channel=per_channel) if fits(layer) else None,
    )


def accuracy_table(epochs, fine_tune):
    (x, y), (xt, yt) = datasets.fashion_mnist()
    keras.utils.set_random_seed(0)
    dense = compile_for_classification(reference_cnn())
    dense.fit(x, y, epochs=epochs, batch_size=128, verbose=2)
    rep = x[:500]
    base = ct.convert(dense, "float32")
    rows = []

    def row(label, model):
        int8 = ct.convert(model, "int8", rep)
        kernels = [t for t in int8.inspect().weights() if t.dtype == "int8" and len(t.shape) >= 2]
        rows.append(
            {
                "model": label,
                "float top-1 %": f"{100 * model.evaluate(xt, yt, verbose=0)[1]:.2f}",
                "int8 top-1 %": f"{100 * int8.evaluate(xt, yt):.2f}",
                "max unique int8 values per channel": max(t.max_unique_per_channel for t in kernels),
                "int8 gzip bytes": f"{int8.size_report().gzip_bytes:,}",
                "vs float32 gzip": f"{int8.size_report(base).compression:.2f}x",
            }
        )
        print(rows[-1], flush=True)

    row("dense", dense)
    for k in (8, 16, 32):
        for per_channel in (False, True):
            keras.utils.set_random_seed(0)
            clustered = compile_for_classification(cluster_where_it_fits(dense, k, per_channel), learning_rate=1e-4)
            clustered.fit(x, y, epochs=fine_tune, batch_size=128, verbose=2)
            row(f"{k} clusters, {'per-channel' if per_channel else 'per-tensor'}", clustered)
    return (
        f"### (c) Fashion-MNIST reference CNN\n\nDense: {epochs} epochs on 60,000 images; each clustered model "
        f"starts from it (k-means++) and fine-tunes {fine_tune} epoch(s) at lr 1e-4. int8: post-training "
        "full-integer, 500 calibration images; the converter quantizes every kernel per channel, so the "
        "per-channel unique count is the bound that shows in the file. Per-channel rows leave unclustered the "
        "layers with fewer than K weights per channel (the first conv has 9).\n\n" + table(rows) + "\n"
    )


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--fine-tune-epochs", type=int, default=1)
    parser.add_argument("--skip-peer", action="store_true")
    parser.add_argument("--assignment-only", action="store_true", help="only the assignment-search section")
    args = parser.parse_args()
    write_section("clustering: assignment search", assignment_time())
    if args.assignment_only:
        return
    body = overhead(args.skip_peer) + "\n" + init_time() + "\n" + accuracy_table(args.epochs, args.fine_tune_epochs)
    write_section("clustering", body)


if __name__ == "__main__":
    main()
