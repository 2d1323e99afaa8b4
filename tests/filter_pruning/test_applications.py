"""Filter pruning on keras.applications models (random weights, tiny inputs)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import collabopt.keras as co
import collabopt.tflite as ct

APPLICATIONS = {
    "MobileNetV2": lambda: keras.applications.MobileNetV2(input_shape=(32, 32, 3), alpha=0.35, weights=None, classes=10, classifier_activation=None),
    "ResNet50": lambda: keras.applications.ResNet50(input_shape=(32, 32, 3), weights=None, classes=10, classifier_activation=None),
    "EfficientNetB0": lambda: keras.applications.EfficientNetB0(input_shape=(32, 32, 3), weights=None, classes=10, classifier_activation=None),
}


def _train_steps(model, x, y, steps=2):
    """A couple of eager SGD steps (what fit does, without tracing a graph for a 200-layer model)."""
    optimizer = keras.optimizers.SGD(0.01)
    loss_fn = keras.losses.SparseCategoricalCrossentropy()
    for _ in range(steps):
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients([(g, v) for g, v in zip(grads, model.trainable_variables) if g is not None])


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(APPLICATIONS))
def test_application_prunes_strips_and_converts(name):
    model = APPLICATIONS[name]()
    x = np.random.default_rng(0).uniform(-1, 1, (4, 32, 32, 3)).astype("float32")
    y = np.arange(4) % 10
    pruned = co.prune_filters(model, pruning_ratio=0.5)
    _train_steps(pruned, x, y)
    assert int(next(l for l in pruned.layers if isinstance(l, co.PruneFilters)).pruning_step.numpy()) == 2
    small = co.strip_pruning(pruned)
    expected = keras.ops.convert_to_numpy(pruned(x, training=False))
    # Removed channels contribute exact zeros; what differs is float32 summation order over
    # hundreds of channels in 50-200 layers, relative to the logits' scale.
    scale = np.abs(expected).max()
    np.testing.assert_allclose(keras.ops.convert_to_numpy(small(x, training=False)), expected, atol=1e-5 * max(scale, 1.0))
    assert small.count_params() < 0.6 * model.count_params()
    assert co.count_macs(small) < 0.6 * co.count_macs(model)
    assert not any(isinstance(l, co.PruneFilters) for l in small.layers)
    tfl = ct.convert(small, "float32")
    np.testing.assert_allclose(tfl.predict(x[:2]), expected[:2], atol=1e-4 * max(scale, 1.0))
