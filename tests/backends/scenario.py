"""Training runs on another Keras backend, started by tests/backends/test_cross_backend.py in a subprocess.

    KERAS_BACKEND=jax python -m tests.backends.scenario train pcqat OUT_DIR
    KERAS_BACKEND=jax XLA_FLAGS=--xla_force_host_platform_device_count=2 python -m tests.backends.scenario distributed OUT_DIR

``train`` fine-tunes a small CNN on digits with ``fit`` and then with this
backend's own training loop, and writes ``model.keras``, the weights
(``weights.npz``) and the float predictions on the test split
(``predictions.npy``). ``distributed`` trains pruning and clustering under
``keras.distribution.DataParallel`` and writes, per mask and centroid
variable, whether every device holds the same values (``replicas.json``).
"""

from __future__ import annotations

import json
import pathlib
import sys

import keras
import numpy as np

import collabopt.keras as co
from collabopt.datasets import digits
from tests.backends.test_every_backend import custom_loop

L = keras.layers


def _model():
    inputs = keras.Input((8, 8, 1))
    x = L.Conv2D(16, 3, padding="same", name="conv1")(inputs)
    x = L.BatchNormalization(name="bn1")(x)
    x = L.ReLU()(x)
    x = L.Conv2D(16, 3, padding="same", activation="relu", name="conv2")(x)
    x = L.MaxPooling2D()(x)
    x = L.Flatten()(x)
    return keras.Model(inputs, L.Dense(10, name="logits")(x))


def _compile(model, learning_rate=1e-3):
    model.compile(keras.optimizers.Adam(learning_rate), keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    return model


STAGES = {
    "pcqat": [
        lambda m: co.prune_low_magnitude(m, co.ConstantSparsity(0.5, 0, frequency=1)),
        lambda m: co.cluster_weights(m, number_of_clusters=8, preserve_sparsity=True),
        co.quantize_model,
    ],
    "filter_prune": [lambda m: co.prune_filters(m, 0.5)],
}


def train(technique: str, out: pathlib.Path) -> None:
    keras.utils.set_random_seed(0)
    (x, y), (xt, _) = digits()
    model = _compile(_model())
    model.fit(x, y, epochs=4, batch_size=32, verbose=0)
    for stage in STAGES[technique]:
        model = _compile(stage(model))
        pruning = [co.UpdatePruningStep()] if stage is STAGES["pcqat"][0] else []
        model.fit(x, y, epochs=1, batch_size=32, verbose=0, callbacks=pruning)
    custom_loop(model, steps=3, learning_rate=1e-4, data=(x[:32], y[:32]))
    model.save(out / "model.keras")
    np.savez(out / "weights.npz", *[keras.ops.convert_to_numpy(v) for v in model.weights])
    np.save(out / "predictions.npy", keras.ops.convert_to_numpy(model.predict(xt, verbose=0)))


def distributed(out: pathlib.Path) -> None:
    import jax

    devices = jax.devices("cpu")
    keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices))
    keras.utils.set_random_seed(0)
    (x, y), _ = digits()
    model = co.cluster_weights(
        co.prune_low_magnitude(_model(), co.ConstantSparsity(0.5, 0, frequency=1)), number_of_clusters=8, preserve_sparsity=True
    )
    _compile(model).fit(x[:512], y[:512], epochs=1, batch_size=32, verbose=0)
    report = {"devices": len(devices)}
    for variable in model.weights:
        name = variable.path
        if not any(key in name for key in ("mask", "centroids", "indices")):
            continue
        shards = [np.asarray(shard.data) for shard in variable.value.addressable_shards]
        report[name] = {"shards": len(shards), "identical": all(np.array_equal(shards[0], s) for s in shards[1:])}
    (out / "replicas.json").write_text(json.dumps(report))


if __name__ == "__main__":
    command, *rest = sys.argv[1:]
    if command == "train":
        train(rest[0], pathlib.Path(rest[1]))
    elif command == "distributed":
        distributed(pathlib.Path(rest[0]))
    else:
        raise SystemExit(f"unknown command {command!r}; {__doc__}")
