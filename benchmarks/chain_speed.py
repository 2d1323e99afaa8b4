"""Seconds per stage of prune -> cluster -> QAT -> int8 on real architectures, against plain Keras.

    python benchmarks/chain_speed.py [--models all | ResNet50,NASNetMobile,...] [--section NAME]

For each ``keras.applications`` family (``weights=None``, the smallest input
it builds at, a batch of 4 random images), in this one process and in one
run: a plain Keras eager training step and a post-training int8 conversion
(the baselines); then ``prune_low_magnitude`` (50%, mask updated every step),
sparsity-preserving ``cluster_weights`` (16 clusters) and ``quantize_model``,
each timed to wrap and per eager training step (the mean of 2 steps after
one untimed step), then ``convert(qat, "int8")`` from the trained ranges and
``verify``. Ratios are ours over plain Keras measured side by side: a QAT
step over a Keras step, the QAT int8 conversion over the PTQ one.

Eager steps are what a custom training loop pays per step; ``model.fit``
compiles the step, so there the per-layer Python cost is paid once.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(__file__))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import collabopt.keras as co  # noqa: E402
import collabopt.tflite as ct  # noqa: E402
from collabopt import reference_models as zoo  # noqa: E402
from results_file import table, write_section  # noqa: E402


#: The issue's bound on the whole chain per family, seconds.
CHAIN_TARGET_S = 180


def _step_fn(model):
    loss_fn = keras.losses.SparseCategoricalCrossentropy()
    optimizer = keras.optimizers.SGD(1e-3)

    def step(x, y):
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients([(g, v) for g, v in zip(grads, model.trainable_variables) if g is not None])

    return step


def _step_seconds(model, x, y, timed=2):
    """``(mean s of the timed steps, s of all steps)``: one untimed step first (it builds the optimizer and traces)."""
    step = _step_fn(model)
    first = time.perf_counter()
    step(x, y)  # creates the optimizer's slots and any lazily built state
    start = time.perf_counter()
    for _ in range(timed):
        step(x, y)
    end = time.perf_counter()
    return (end - start) / timed, end - first


def _timed(fn):
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def measure(name: str) -> dict:
    keras.utils.set_random_seed(0)
    model = zoo.application(name)
    rng = np.random.default_rng(0)
    x = rng.random((4,) + tuple(model.inputs[0].shape[1:])).astype("float32")
    y = rng.integers(0, 10, 4)
    _, ptq = _timed(lambda: ct.convert(model, "int8", representative_data=x))
    keras_step, _ = _step_seconds(model, x, y)
    pruned, prune_wrap = _timed(lambda: co.prune_low_magnitude(model, co.ConstantSparsity(0.5, 0, frequency=1)))
    prune_step, prune_steps = _step_seconds(pruned, x, y)
    clustered, cluster_wrap = _timed(
        lambda: co.cluster_weights(
            pruned, number_of_clusters=16, preserve_sparsity=True, cluster_centroids_init=co.CentroidInitialization.LINEAR
        )
    )
    cluster_step, cluster_steps = _step_seconds(clustered, x, y)
    qat, qat_wrap = _timed(lambda: co.quantize_model(clustered))
    qat_step, qat_steps = _step_seconds(qat, x, y)
    tflite, convert = _timed(lambda: ct.convert(qat, "int8"))
    report, verify = _timed(lambda: ct.verify(qat, tflite))
    assert report.all_hold, str(report)
    chain = ptq + prune_wrap + prune_steps + cluster_wrap + cluster_steps + qat_wrap + qat_steps + convert + verify
    return {
        "model": name,
        "chain s": f"{chain:.0f}" + ("" if chain <= CHAIN_TARGET_S else " (over)"),
        "Keras step s": f"{keras_step:.2f}",
        "prune wrap / step s": f"{prune_wrap:.1f} / {prune_step:.2f}",
        "cluster wrap / step s": f"{cluster_wrap:.1f} / {cluster_step:.2f}",
        "QAT wrap / step s": f"{qat_wrap:.1f} / {qat_step:.2f}",
        "QAT step / Keras step": f"{qat_step / keras_step:.1f}x",
        "PTQ int8 convert s": f"{ptq:.1f}",
        "QAT int8 convert s": f"{convert:.1f}",
        "QAT / PTQ convert": f"{convert / ptq:.2f}x",
        "verify s": f"{verify:.1f}",
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="all", help="comma-separated keras.applications families, or all (the default)")
    parser.add_argument("--section", default="chain on real models: seconds per stage")
    parser.add_argument("--note", default="", help="a line to add above the table (e.g. which commit was measured)")
    args = parser.parse_args()
    rows = []
    names = list(zoo.APPLICATIONS) if args.models == "all" else args.models.split(",")
    for name in names:
        print(f"[chain_speed] {name} ...", flush=True)
        rows.append(measure(name))
        print(rows[-1], flush=True)
    body = (
        "Eager steps on a batch of 4 at the family's smallest input; a step is the mean of 2 after one untimed "
        "step. Ratios are ours over plain Keras in the same run. \"chain s\" is the whole chain: PTQ int8, the "
        "three wrapping stages with their three steps each, the QAT int8 conversion and verify "
        f"(target {CHAIN_TARGET_S} s; \"(over)\" marks a family above it).\n\n"
        + (args.note + "\n\n" if args.note else "")
        + table(rows)
    )
    write_section(args.section, body)


if __name__ == "__main__":
    main()
