"""Execution forms: each layer run as TFLite's ops computes exactly what the layer computes."""

import keras
import numpy as np
import pytest

from collabopt.layers import call_with_weights, optimizable_variables
from collabopt.layers import execution

L = keras.layers


def _x(*shape):
    return np.random.default_rng(0).standard_normal(shape).astype("float32")


CASES = [
    (lambda: L.Conv1D(4, 3, activation="relu"), (2, 10, 3)),
    (lambda: L.Conv1D(4, 3, padding="causal", dilation_rate=2), (2, 10, 3)),
    (lambda: L.Conv1D(4, 3, strides=2, padding="same", activation="swish"), (2, 10, 3)),
    (lambda: L.DepthwiseConv1D(3, depth_multiplier=2, padding="same"), (2, 10, 3)),
    (lambda: L.SeparableConv1D(5, 3, activation="gelu"), (2, 10, 3)),
    (lambda: L.SeparableConv2D(5, 3, strides=2, padding="same"), (2, 8, 8, 3)),
    (lambda: L.LayerNormalization(), (2, 5, 6)),
    (lambda: L.LayerNormalization(axis=[1, 2], center=False), (2, 5, 6)),
    (lambda: L.BatchNormalization(), (2, 4, 4, 3)),
    (lambda: L.Normalization(mean=0.5, variance=2.0), (2, 6)),
    (lambda: L.Rescaling(1 / 127.5, offset=-1), (2, 6)),
    (lambda: L.Dense(4, activation="softmax"), (2, 6)),
    (lambda: L.Dense(4), (2, 3, 3, 6)),  # ConvNeXt's pointwise layers: constant reshapes around a 2-D matmul
    (lambda: L.EinsumDense("btd,de->bte", output_shape=(None, 4), bias_axes="e", activation="gelu"), (2, 5, 6)),
    (lambda: L.Conv2D(4, 3, activation="hard_swish"), (2, 6, 6, 3)),
    (lambda: L.DepthwiseConv2D(3, activation="sigmoid"), (2, 6, 6, 3)),
]


@pytest.mark.parametrize("make,shape", CASES, ids=[f"case{i}" for i in range(len(CASES))])
def test_tflite_form_computes_the_layer(make, shape):
    layer = make()
    x = _x(*shape)
    expected = keras.ops.convert_to_numpy(layer(x))
    for variable in layer.weights:  # non-trivial statistics and parameters
        variable.assign(np.abs(_x(*variable.shape)) + 0.5 if "variance" in variable.path else _x(*variable.shape))
    expected = keras.ops.convert_to_numpy(layer(x))
    assert execution.has_tflite_form(layer)
    seen = []
    got = call_with_weights(layer, x, {}, between=lambda t, i: seen.append(i) or t, tflite_form=True)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(got), expected, rtol=1e-5, atol=1e-5)
    assert sorted(set(seen)) == list(range(len(execution.internal_tensors(layer))))


def test_one_d_kernels_take_their_rank_4_form():
    conv = L.Conv1D(4, 3)
    x = _x(2, 10, 3)
    expected = keras.ops.convert_to_numpy(conv(x))
    kernel = execution.to_execution_form(conv, optimizable_variables(conv))["kernel"]
    assert tuple(kernel.shape) == (1, 3, 3, 4)
    got = call_with_weights(conv, x, {"kernel": kernel}, tflite_form=True)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(got), expected, rtol=1e-5, atol=1e-5)


def test_subclasses_keep_their_own_call():
    class Doubled(L.Dense):
        def call(self, inputs):
            return 2.0 * super().call(inputs)

    assert not execution.has_tflite_form(Doubled(3, activation="softmax"))
    assert execution.internal_tensors(Doubled(3, activation="softmax")) == ()
