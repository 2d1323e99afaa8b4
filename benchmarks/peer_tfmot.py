"""The TFMOT peer, run in its own process (importing TFMOT switches TensorFlow to legacy Keras).

    TF_USE_LEGACY_KERAS=1 python benchmarks/peer_tfmot.py step_time --technique prune --steps 60
Prints one JSON line. Builds the same reference CNN as collabopt.reference_models
in tf_keras.
"""

from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402
import tensorflow_model_optimization as tfmot  # noqa: E402

L = keras.layers


def reference_cnn(input_shape=(28, 28, 1), num_classes=10):
    inputs = keras.Input(input_shape)
    x = inputs
    for i, filters in enumerate((16, 32), start=1):
        x = L.Conv2D(filters, 3, padding="same", use_bias=False, name=f"block{i}_conv")(x)
        x = L.BatchNormalization(momentum=0.9, name=f"block{i}_bn")(x)
        x = L.ReLU(name=f"block{i}_relu")(x)
        x = L.MaxPooling2D(name=f"pool{i}")(x)
    x = L.Flatten()(x)
    x = L.Dense(64, activation="relu", name="fc1")(x)
    return keras.Model(inputs, L.Dense(num_classes, name="logits")(x))


def wrap(model, technique):
    if technique == "none":
        return model, []
    if technique == "prune":
        schedule = tfmot.sparsity.keras.ConstantSparsity(0.5, 0, frequency=100)
        return tfmot.sparsity.keras.prune_low_magnitude(model, pruning_schedule=schedule), [
            tfmot.sparsity.keras.UpdatePruningStep()
        ]
    if technique == "cluster":
        return tfmot.clustering.keras.cluster_weights(
            model, number_of_clusters=16, cluster_centroids_init=tfmot.clustering.keras.CentroidInitialization.KMEANS_PLUS_PLUS
        ), []
    if technique == "quantize":
        return tfmot.quantization.keras.quantize_model(model), []
    raise ValueError(technique)


def step_time(technique, steps, batch_size, repeats):
    rng = np.random.default_rng(0)
    x = rng.random((steps * batch_size, 28, 28, 1), dtype=np.float32)
    y = rng.integers(0, 10, steps * batch_size)
    model, callbacks = wrap(reference_cnn(), technique)
    model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x[: 5 * batch_size], y[: 5 * batch_size], batch_size=batch_size, epochs=1, verbose=0, callbacks=callbacks)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        model.fit(x, y, batch_size=batch_size, epochs=1, verbose=0, callbacks=callbacks)
        times.append((time.perf_counter() - t) / steps)
    return min(times)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("what", choices=["step_time"])
    parser.add_argument("--technique", default="prune")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    tf.random.set_seed(0)
    plain = step_time("none", args.steps, args.batch_size, args.repeats)
    wrapped = step_time(args.technique, args.steps, args.batch_size, args.repeats)
    print(json.dumps({"tfmot_version": tfmot.__version__, "plain_s": plain, "wrapped_s": wrapped}))


if __name__ == "__main__":
    main()
