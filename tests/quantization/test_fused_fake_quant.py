"""The fused (XLA) training path of fake quantization on TensorFlow: TF's grid and gradient, without TF's slow op."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import collabopt.keras as co
import collabopt.fused as fusing
from collabopt.quantization import fake_quant
from collabopt.quantization.quantizers import Quantizer

pytestmark = pytest.mark.tensorflow_only


def _gradient(fn, x):
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = fn(x)
        loss = tf.reduce_sum(y * tf.cos(y))
    return y.numpy(), tape.gradient(loss, x).numpy()


@pytest.mark.parametrize("per_channel", [True, False], ids=["per_channel", "per_tensor"])
def test_training_path_is_tfs_grid_and_gradient(per_channel):
    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(size=(3, 3, 32, 256)).astype(np.float32))
    assert fusing.fused_on_tensorflow(x)
    if per_channel:
        lo = tf.reduce_min(tf.reshape(x, (-1, 256)), 0) * 0.7
        hi = tf.reduce_max(tf.reshape(x, (-1, 256)), 0) * 0.7

        def quantize(t, training):
            return fake_quant.fake_quant_per_channel(t, lo, hi, (-1,), 8, True, training=training)
    else:
        lo, hi = tf.constant(-1.3), tf.constant(2.1)

        def quantize(t, training):
            return fake_quant.fake_quant(t, lo, hi, 8, False, training=training)

    fused, fused_grad = _gradient(lambda t: quantize(t, True), x)
    reference, reference_grad = _gradient(lambda t: quantize(t, False), x)
    step = float(np.max(np.diff(np.unique(reference)))) if not per_channel else 1.0
    # The same grid: values agree to float32 rounding; a value on a rounding boundary may land one step over.
    close = np.isclose(fused, reference, rtol=0, atol=1e-6)
    assert close.mean() > 0.999
    assert np.all(np.abs(fused - reference)[~close] <= 1.01 * step)
    # Straight through inside the nudged range, zero outside: TF's gradient (up to the upstream's own rounding).
    np.testing.assert_allclose(fused_grad, reference_grad, rtol=0, atol=1e-5)
    assert np.mean(fused_grad == 0) == pytest.approx(np.mean(reference_grad == 0), abs=1e-3)


def _training_op_types(model, x):
    function = tf.function(lambda a: tf.gradients(tf.reduce_sum(model(a, training=True)), model.trainable_variables))
    return {op.type for op in function.get_concrete_function(tf.TensorSpec(x.shape, tf.float32)).graph.get_operations()}


def test_a_large_layer_trains_without_tfs_per_element_fake_quant_ops():
    model = keras.Sequential([keras.Input((8, 8, 64)), keras.layers.Conv2D(256, 3), keras.layers.ReLU()])
    qat = co.quantize_model(model)
    x = np.random.default_rng(0).random((4, 8, 8, 64)).astype(np.float32)
    types = _training_op_types(qat, x)
    assert "FakeQuantWithMinMaxVarsPerChannel" not in types and "FakeQuantWithMinMaxVarsPerChannelGradient" not in types
    # Inference (and so export) keeps TF's op, which the TFLite converter reads.
    inference = tf.function(lambda a: qat(a, training=False)).get_concrete_function(tf.TensorSpec(x.shape, tf.float32))
    assert "FakeQuantWithMinMaxVarsPerChannel" in {op.type for op in inference.graph.get_operations()}


def test_fused_and_op_by_op_qat_train_alike(monkeypatch):
    """One fit of the same QAT model with each path: the same loss, weights within float32 rounding."""
    results = []
    for fused in (True, False):
        _set_fused(monkeypatch, fused)
        keras.utils.set_random_seed(0)
        model = keras.Sequential([
            keras.Input((8, 8, 3)), keras.layers.Conv2D(16, 3), keras.layers.BatchNormalization(), keras.layers.ReLU(),
            keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(4),
        ])  # fmt: skip
        qat = co.quantize_model(model)
        qat.compile(optimizer=keras.optimizers.SGD(0.01), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        rng = np.random.default_rng(1)
        history = qat.fit(rng.random((64, 8, 8, 3)).astype("float32"), rng.integers(0, 4, 64), batch_size=16, verbose=0)
        results.append((history.history["loss"][0], [w.copy() for w in qat.get_weights()]))
    (loss_a, weights_a), (loss_b, weights_b) = results
    assert loss_a == pytest.approx(loss_b, rel=1e-3)
    for a, b in zip(weights_a, weights_b):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4)


def _set_fused(monkeypatch, fused):
    """Every tensor takes the fused path (eager and traced), or none does."""
    for threshold in ("FUSED_MIN_ELEMENTS", "TRACED_WEIGHT_MIN_ELEMENTS"):
        monkeypatch.setattr(fusing, threshold, 1 if fused else 1 << 40)



class _Owner(keras.layers.Layer):
    """Holds a quantizer's state variables."""


@pytest.mark.parametrize(
    "quantizer",
    [
        co.MovingAverageQuantizer(),
        co.AllValuesQuantizer(),
        co.MovingAverageQuantizer(symmetric=True, narrow_range=True),
    ],
    ids=["moving_average", "all_values", "symmetric"],
)
def test_an_activation_range_and_its_fake_quant_as_one_kernel_match_the_op_by_op_step(quantizer):
    """Four training steps (the first sets the range): outputs, gradients and stored ranges as op by op, to float32 rounding."""
    rng = np.random.default_rng(0)
    batches = [tf.constant(rng.normal(size=(16, 64, 64)).astype(np.float32) * scale) for scale in (1.0, 3.0, 0.5, 2.0)]
    assert fusing.fused_on_tensorflow(batches[0])
    runs = []
    for call in (type(quantizer).__call__, Quantizer.__call__):  # the fused path, the op-by-op one
        state = quantizer.build(_Owner(), "act", ())
        out = []
        for x in batches:
            y, grad = _gradient(lambda u, call=call, state=state: call(quantizer, u, state, training=True), x)
            out.append((y, grad, float(state["min"].numpy()), float(state["max"].numpy())))
        runs.append(out)
    for (y, grad, lo, hi), (y_ref, grad_ref, lo_ref, hi_ref) in zip(*runs):
        assert lo == pytest.approx(lo_ref, rel=1e-6) and hi == pytest.approx(hi_ref, rel=1e-6)
        close = np.isclose(y, y_ref, rtol=0, atol=1e-5)
        assert close.mean() > 0.999
        np.testing.assert_allclose(grad, grad_ref, rtol=0, atol=1e-4)


@pytest.mark.parametrize("layer", ["conv", "dense"])
def test_a_large_weights_range_and_fake_quant_in_a_training_step_are_one_kernel(layer):
    """A large weight's min, max and fake quant, and a large activation's, run inside XLA kernels: no reduction op is left."""
    base, shape = {
        "conv": (keras.layers.Conv2D(256, 3), (16, 16, 64)),  # kernel 3x3x64x256; input 4x16x16x64, output 4x14x14x256
        "dense": (keras.layers.Dense(512), (64, 256)),  # kernel 256x512; input 4x64x256, output 4x64x512
    }[layer]
    qat = co.quantize_model(keras.Sequential([keras.Input(shape), base]))
    x = np.random.default_rng(0).random((4, *shape)).astype(np.float32)
    left = _training_op_types(qat, x) & {"Min", "Max", "FakeQuantWithMinMaxVarsPerChannel", "FakeQuantWithMinMaxVars"}
    assert not left, left
    wrapper = qat.layers[0]
    traced = tf.function(lambda: wrapper.effective_weights(True))()
    reference = wrapper.effective_weights(False)  # inference: TF's per-channel op on the same range
    for name, value in reference.items():
        close = np.isclose(traced[name].numpy(), value.numpy(), rtol=0, atol=1e-6)
        assert close.mean() > 0.999, name
