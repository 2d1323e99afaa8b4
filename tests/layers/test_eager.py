"""collabopt.layers.eager: an eager training call runs a wrapper's transforms as traced functions, with the same results."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import collabopt.keras as co
from collabopt.layers import eager, wrapper_chain
from collabopt.transform import iter_layers

L = keras.layers


@pytest.fixture(autouse=True)
def _trace_from_the_first_call(monkeypatch):
    """Every eager training call takes the traced path (the default waits TRACE_AFTER_CALLS calls)."""
    monkeypatch.setattr(eager, "TRACE_AFTER_CALLS", 0)


def _model(seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((8, 8, 3))
    x = L.Conv2D(8, 3, name="conv")(inputs)
    x = L.BatchNormalization(name="bn")(x)
    x = L.ReLU()(x)
    x = L.DepthwiseConv2D(3, name="dw")(x)
    x = L.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, L.Dense(5, name="fc")(x))


def _pcqat(model):
    pruned = co.prune_low_magnitude(model, co.ConstantSparsity(0.5, 0))
    clustered = co.cluster_weights(pruned, number_of_clusters=4, preserve_sparsity=True)
    return co.quantize_model(clustered)


WRAP = {
    "prune": lambda m: co.prune_low_magnitude(m, co.ConstantSparsity(0.5, 0)),
    "cluster": lambda m: co.cluster_weights(m, number_of_clusters=4),
    "quantize": co.quantize_model,
    "pcqat": _pcqat,
}


def _data(n=16):
    rng = np.random.default_rng(0)
    return rng.random((n, 8, 8, 3)).astype("float32"), rng.integers(0, 5, n)


def _eager_steps(model, batches):
    """Losses and final variables of plain eager GradientTape steps (no tf.function)."""
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    optimizer = keras.optimizers.SGD(0.1)  # linear in the gradients: rounding stays rounding
    losses = []
    for x, y in batches:
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        assert all(g is not None for g in grads)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        losses.append(float(loss))
    return losses, [v.numpy() for v in model.variables]


def _outermost_wrappers(model):
    return [layer for layer in iter_layers(model) if wrapper_chain(layer)]


@pytest.mark.parametrize("technique", sorted(WRAP))
def test_eager_steps_match_the_op_by_op_steps(technique, monkeypatch):
    x, y = _data(24)
    batches = [(x[:16], y[:16]), (x[16:], y[16:]), (x[:16], y[:16])]  # two batch sizes
    traced = _eager_steps(WRAP[technique](_model()), batches)
    monkeypatch.setattr(eager, "ENABLED", False)
    plain = _eager_steps(WRAP[technique](_model()), batches)
    np.testing.assert_allclose(traced[0], plain[0], rtol=1e-5)
    for a, b in zip(traced[1], plain[1]):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def _normalized_model(seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((6, 8))
    x = L.LayerNormalization(name="ln")(L.Dense(8, name="up")(inputs))
    x = L.GlobalAveragePooling1D()(x)
    return keras.Model(inputs, L.Dense(5, name="fc")(x))


def test_a_layer_with_internal_ranges_traces_its_whole_call_with_the_same_results(monkeypatch):
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(24, 6, 8)).astype("float32"), rng.integers(0, 5, 24)
    batches = [(x[:16], y[:16]), (x[16:], y[16:]), (x[:16], y[:16])]
    model = co.quantize_model(_normalized_model())
    traced = _eager_steps(model, batches)
    ln = model.get_layer("quant_ln")
    assert ln.internal_quantizers  # a range for each tensor inside the LayerNormalization's TFLite form
    assert set(eager.traced_functions(ln)) == {"call"}
    assert eager.traced_functions(ln)["call"].experimental_get_tracing_count() <= 2
    monkeypatch.setattr(eager, "ENABLED", False)
    plain = _eager_steps(co.quantize_model(_normalized_model()), batches)
    np.testing.assert_allclose(traced[0], plain[0], rtol=1e-5)
    for a, b in zip(traced[1], plain[1]):  # weights and every range, the internal ones included
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_each_wrapper_traces_its_transforms_once():
    x, y = _data(24)
    model = _pcqat(_model())
    _eager_steps(model, [(x[:16], y[:16]), (x[16:], y[16:]), (x[:16], y[:16])])
    wrappers = _outermost_wrappers(model)
    assert wrappers
    for w in wrappers:
        functions = eager.traced_functions(w)
        assert functions["weights"].experimental_get_tracing_count() == 1, w.name
        # two batch sizes: at most one more trace, with the batch dimension left unknown
        assert functions["outputs"].experimental_get_tracing_count() <= 2, w.name


def test_a_wrapper_traces_only_after_its_first_calls(monkeypatch):
    monkeypatch.setattr(eager, "TRACE_AFTER_CALLS", 2)
    x, y = _data()
    model = _pcqat(_model())
    _eager_steps(model, [(x, y)] * 2)  # a short loop (a test, a calibration) never traces
    assert not any(eager.traced_functions(w) for w in _outermost_wrappers(model))
    _eager_steps(model, [(x, y)])
    assert all(eager.traced_functions(w) for w in _outermost_wrappers(model))


def test_pruning_masks_and_ranges_are_kept_on_the_traced_path():
    x, y = _data()
    model = _pcqat(_model())
    _eager_steps(model, [(x, y)] * 3)
    stripped = co.strip_quantization(model)
    kernel = stripped.get_layer("conv").kernel.numpy()
    assert np.mean(kernel == 0) >= 0.5
    assert len(np.unique(kernel[kernel != 0])) <= 4 * 8  # clustered per channel at most: unique values bounded


def test_inference_and_traced_calls_keep_the_plain_call():
    x, _ = _data()
    model = co.quantize_model(_model())
    model(x, training=False)
    tf.function(lambda t: model(t, training=True))(x)
    assert not any(eager.traced_functions(w) for w in _outermost_wrappers(model))


def test_under_a_strategy_the_plain_call_runs(mirrored):
    x, _ = _data()
    with mirrored.scope():
        model = co.quantize_model(_model())
        mirrored.run(lambda: model(x, training=True))
    assert not any(eager.traced_functions(w) for w in _outermost_wrappers(model))


def test_no_retracing_warning_across_many_wrappers(caplog):
    x, y = _data()
    model = co.quantize_model(_model())
    _eager_steps(model, [(x, y)] * 2)
    assert "retracing" not in caplog.text


def test_the_traced_functions_do_not_keep_a_model_alive():
    import gc
    import weakref

    x, y = _data()
    model = co.quantize_model(_model())
    _eager_steps(model, [(x, y)])
    ref = weakref.ref(_outermost_wrappers(model)[0])
    del model
    gc.collect()
    assert ref() is None
