"""Wrappers, techniques and schedules on whatever Keras backend this process runs.

The TensorFlow suite runs this module as it is; CI runs it again with
``KERAS_BACKEND=jax`` and ``KERAS_BACKEND=torch`` (README: "Other
backends"). Nothing here exports: the route from a JAX or PyTorch model to a
TFLite file is ``tests/backends/test_cross_backend.py``.
"""

import os

import keras
import numpy as np
import pytest

import collabopt.keras as co
from collabopt.layers import wrapper_chain

#: Runs unchanged on JAX and PyTorch too (CI: KERAS_BACKEND=jax / torch; see README).
# (slow: about 1 min on 2 cores; the inner loop leaves it to CI and tests/other_backends.sh)
pytestmark = [pytest.mark.every_backend, pytest.mark.slow]

BACKEND = keras.backend.backend()
L = keras.layers


def _model(depthwise=True):
    inputs = keras.Input((8, 8, 4))
    x = L.Conv2D(8, 3, padding="same", name="conv")(inputs)
    x = L.BatchNormalization(name="bn")(x)
    x = L.ReLU()(x)
    if depthwise:  # (2:4 sparsity needs an input-channel axis, which a depthwise kernel has not)
        x = L.DepthwiseConv2D(3, padding="same", name="dw")(x)
    x = L.Conv2D(8, 1, name="pw")(x)
    x = L.Flatten()(x)
    return keras.Model(inputs, L.Dense(10, name="logits")(x))


def _data(n=64):
    rng = np.random.default_rng(0)
    return rng.normal(size=(n, 8, 8, 4)).astype("float32"), rng.integers(0, 10, n)


def _compile(model):
    model.compile(keras.optimizers.Adam(1e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def _fit(model, epochs=1, callbacks=()):
    x, y = _data()
    _compile(model).fit(x, y, epochs=epochs, batch_size=16, verbose=0, callbacks=list(callbacks))
    return model


def custom_loop(model, steps=3, learning_rate=1e-3, data=None):
    """A training loop written for this process's backend, as a user of that backend writes it (one batch, ``steps`` times)."""
    x, y = data if data is not None else _data(16)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    optimizer = keras.optimizers.SGD(learning_rate)
    optimizer.build(model.trainable_variables)
    if BACKEND == "jax":
        import jax

        def loss_and_updates(trainable, non_trainable):
            logits, non_trainable = model.stateless_call(trainable, non_trainable, x, training=True)
            return loss_fn(y, logits), non_trainable

        trainable = [v.value for v in model.trainable_variables]
        non_trainable = [v.value for v in model.non_trainable_variables]
        optimizer_state = [v.value for v in optimizer.variables]
        step = jax.jit(jax.value_and_grad(loss_and_updates, has_aux=True))
        for _ in range(steps):
            (_, non_trainable), grads = step(trainable, non_trainable)
            trainable, optimizer_state = optimizer.stateless_apply(optimizer_state, grads, trainable)
        for variable, value in zip(model.trainable_variables, trainable):
            variable.assign(value)
        for variable, value in zip(model.non_trainable_variables, non_trainable):
            variable.assign(value)
    elif BACKEND == "torch":
        for _ in range(steps):
            model.zero_grad()
            loss = loss_fn(y, model(x, training=True))
            loss.backward()
            grads = [v.value.grad for v in model.trainable_variables]
            optimizer.apply(grads, model.trainable_variables)
    else:
        import tensorflow as tf

        for _ in range(steps):
            with tf.GradientTape() as tape:
                loss = loss_fn(y, model(x, training=True))
            optimizer.apply(tape.gradient(loss, model.trainable_variables), model.trainable_variables)
    return model


def _layer(model, base_name):
    return next(l for l in model.layers if wrapper_chain(l) and wrapper_chain(l)[-1].layer.name == base_name)


def _kernel(model, base_name="conv"):
    return _layer(model, base_name).final_weights()["kernel"]


def _reloaded(model, tmp_path):
    path = os.path.join(tmp_path, "m.keras")
    model.save(path)
    return keras.models.load_model(path)


def _assert_reload_bitwise(model, tmp_path):
    reloaded = _reloaded(model, tmp_path)
    for a, b in zip(model.weights, reloaded.weights):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b), err_msg=a.path)
    x, _ = _data(4)
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(model(x, training=False)), keras.ops.convert_to_numpy(reloaded(x, training=False))
    )
    return reloaded


TECHNIQUES = {
    "prune": lambda m: co.prune_low_magnitude(m, co.ConstantSparsity(0.5, 0, frequency=1)),
    "prune_2_4": lambda m: co.prune_low_magnitude(
        _model(depthwise=False), co.ConstantSparsity(0.5, 0, frequency=1), sparsity_m_by_n=(2, 4)
    ),
    "filter_prune": lambda m: co.prune_filters(m, 0.5),
    "cluster": lambda m: co.cluster_weights(m, number_of_clusters=4),
    "cluster_per_channel": lambda m: co.cluster_weights(m, number_of_clusters=4, cluster_per_channel=True),
    "cluster_avg": lambda m: co.cluster_weights(m, number_of_clusters=4, cluster_gradient_aggregation="AVG"),
    "qat": lambda m: co.quantize_model(m),
    "qat_4bit": lambda m: co.quantize_model(m, scheme=co.DefaultNBitQuantizeScheme(num_bits_weight=4)),
    "qat_16x8": lambda m: co.quantize_model(m, scheme=co.Default16x8QuantizeScheme()),
    "pcqat": lambda m: co.quantize_model(
        co.cluster_weights(co.prune_low_magnitude(m, co.ConstantSparsity(0.5, 0, frequency=1)), number_of_clusters=4, preserve_sparsity=True)
    ),
}


def _check(name, model):
    """The property each technique promises, read from the trained model."""
    kernel = _kernel(model)
    if name.startswith("prune") or name == "pcqat":
        assert np.mean(kernel == 0) >= 0.5 - 1e-6
    if name == "prune_2_4":
        rows = np.moveaxis(kernel, 2, -1).reshape(-1, 4)  # groups of 4 along the input axis
        assert np.all((rows != 0).sum(-1) <= 2)
    if name == "filter_prune":
        pruned = next(w for w in wrapper_chain(_layer(model, "conv")) if w.pruned_output_channels() is not None)
        assert pruned.pruned_output_channels().sum() == 4
        assert np.all(kernel[..., pruned.pruned_output_channels()] == 0)
    if name.startswith("cluster"):
        if name == "cluster_per_channel":
            assert max(len(np.unique(kernel[..., c])) for c in range(kernel.shape[-1])) <= 4
        else:
            assert len(np.unique(kernel)) <= 4
    if name.startswith("qat") or name == "pcqat":
        quantized = _layer(model, "conv")
        assert quantized.collabopt_quantized
        state = {k: keras.ops.convert_to_numpy(v) for k, v in quantized._states.items()}
        assert any(np.any(v != 0) for v in state.values())  # ranges trained from data


@pytest.mark.parametrize("name", sorted(TECHNIQUES))
def test_technique_trains_with_fit_saves_and_reloads_bitwise(name, tmp_path):
    model = _fit(TECHNIQUES[name](_model()), epochs=1, callbacks=[co.UpdatePruningStep()] if name.startswith("prune") else ())
    _check(name, model)
    _assert_reload_bitwise(model, tmp_path)


@pytest.mark.parametrize("name", ["prune", "filter_prune", "cluster", "qat", "pcqat"])
def test_technique_trains_in_this_backends_custom_loop(name):
    model = TECHNIQUES[name](_model())
    before = [keras.ops.convert_to_numpy(v).copy() for v in model.trainable_variables]
    custom_loop(model)
    after = [keras.ops.convert_to_numpy(v) for v in model.trainable_variables]
    assert any(not np.array_equal(a, b) for a, b in zip(before, after))  # it trained
    _check(name, model)


def test_pruning_schedule_resumes_mid_schedule_after_a_reload(tmp_path):
    schedule = co.PolynomialDecay(0.0, 0.75, begin_step=0, end_step=8, frequency=1)
    model = _fit(co.prune_low_magnitude(_model(), schedule), callbacks=[co.UpdatePruningStep()])  # 4 steps
    wrapper = _layer(model, "conv")
    assert int(keras.ops.convert_to_numpy(wrapper.pruning_step)) == 4
    middle = np.mean(_kernel(model) == 0)
    assert 0.1 < middle < 0.75
    reloaded = _assert_reload_bitwise(model, tmp_path)
    _fit(reloaded, epochs=2, callbacks=[co.UpdatePruningStep()])  # steps 4..12: the schedule ends at 8
    assert abs(np.mean(_kernel(reloaded) == 0) - 0.75) < 0.01


def test_filter_pruning_ratio_ramps_and_resumes_after_a_reload(tmp_path):
    model = _fit(co.prune_filters(_model(), co.PolynomialRatio(0.0, 0.5, 0, 8)))  # 4 steps: half way
    wrapper = next(w for w in wrapper_chain(_layer(model, "conv")) if w.pruned_output_channels() is not None)
    assert 0 < wrapper.pruned_output_channels().sum() < 4
    reloaded = _assert_reload_bitwise(model, tmp_path)
    _fit(reloaded, epochs=2)
    wrapper = next(w for w in wrapper_chain(_layer(reloaded, "conv")) if w.pruned_output_channels() is not None)
    assert wrapper.pruned_output_channels().sum() == 4


def test_sparsity_preserving_clustering_keeps_the_mask_exactly():
    pruned = _fit(co.prune_low_magnitude(_model(), co.ConstantSparsity(0.5, 0, frequency=1)), callbacks=[co.UpdatePruningStep()])
    mask = _kernel(pruned) != 0
    clustered = _fit(co.cluster_weights(pruned, number_of_clusters=4, preserve_sparsity=True), epochs=2)
    kernel = _kernel(clustered)
    np.testing.assert_array_equal(kernel != 0, mask)
    assert len(np.unique(kernel)) <= 4


def test_strip_gives_plain_layers_that_compute_the_same():
    x, _ = _data(4)
    pruned = _fit(co.prune_low_magnitude(_model(), co.ConstantSparsity(0.5, 0, frequency=1)), callbacks=[co.UpdatePruningStep()])
    plain = co.strip_pruning(pruned)
    assert not any(wrapper_chain(l) for l in plain.layers)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(plain(x)), keras.ops.convert_to_numpy(pruned(x, training=False)), rtol=1e-5, atol=1e-5
    )
