"""collabopt.training: a compiled classifier's first fit traces its training step once, and trains as Keras does."""

import keras
import numpy as np
import pytest

import collabopt.keras as co
from collabopt.reference_models import compile_for_classification
from collabopt.training import build_optimizer, compile_classifier
from collabopt.tree import default_compile


class CountingModel(keras.Model):
    """A Functional model that counts how often Keras traces its training step (Python runs only when tracing)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.traces = 0

    def train_step(self, data):
        self.traces += 1
        return super().train_step(data)


def _counting(model):
    return CountingModel(model.inputs, model.outputs)


def _cnn(seed=0):
    keras.utils.set_random_seed(seed)
    L = keras.layers
    inputs = keras.Input((8, 8, 3))
    x = L.Conv2D(4, 3, name="conv")(inputs)
    x = L.BatchNormalization(name="bn")(x)
    x = L.ReLU()(x)
    x = L.Flatten()(x)
    return keras.Model(inputs, L.Dense(5, name="fc")(x))


def _data():
    rng = np.random.default_rng(0)
    return rng.random((96, 8, 8, 3)).astype("float32"), rng.integers(0, 5, 96)


@pytest.mark.parametrize(
    "compile_fn",
    [compile_classifier, compile_for_classification, default_compile],
    ids=["compile_classifier", "compile_for_classification", "tree.default_compile"],
)
@pytest.mark.parametrize("wrap", [None, "prune", "cluster", "quantize"])
def test_fit_traces_the_training_step_once(compile_fn, wrap):
    x, y = _data()
    model = _cnn()
    if wrap == "prune":
        model = co.prune_low_magnitude(model)
    elif wrap == "cluster":
        model = co.cluster_weights(model, number_of_clusters=4)
    elif wrap == "quantize":
        model = co.quantize_model(model)
    model = _counting(model)
    compile_fn(model, 1e-3)
    callbacks = [co.UpdatePruningStep()] if wrap == "prune" else []
    history = model.fit(x, y, batch_size=32, epochs=2, verbose=0, callbacks=callbacks)
    assert model.traces == 1
    assert sorted(history.history) == ["accuracy", "loss"]


def test_trains_exactly_as_keras_compile_does():
    x, y = _data()
    ours, theirs = _cnn(), _cnn()
    compile_classifier(ours, 1e-2)
    theirs.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    a = ours.fit(x, y, batch_size=32, epochs=2, verbose=0, shuffle=False).history
    b = theirs.fit(x, y, batch_size=32, epochs=2, verbose=0, shuffle=False).history
    np.testing.assert_allclose(a["loss"], b["loss"], rtol=1e-6)
    np.testing.assert_allclose(a["accuracy"], b["accuracy"])
    for u, v in zip(ours.get_weights(), theirs.get_weights()):
        np.testing.assert_allclose(u, v, rtol=1e-5, atol=1e-6)


def test_build_optimizer_leaves_what_it_cannot_build():
    unbuilt = keras.Sequential([keras.layers.Dense(2)])  # no input shape: no variables yet
    unbuilt.compile(optimizer="adam", loss="mse")
    assert not build_optimizer(unbuilt).optimizer.built
    unbuilt.fit(np.ones((4, 3)), np.ones((4, 2)), verbose=0)  # Keras builds it in fit, as before
    uncompiled = _cnn()
    assert build_optimizer(uncompiled) is uncompiled


def test_under_a_strategy_keras_builds_in_the_scope(mirrored):
    x, y = _data()
    with mirrored.scope():
        model = _cnn()
        compile_classifier(model, 1e-3)
    assert not model.optimizer.built  # left to Keras, which builds in the strategy's scope
    model.fit(x, y, batch_size=32, epochs=1, verbose=0)
    assert model.optimizer.built
