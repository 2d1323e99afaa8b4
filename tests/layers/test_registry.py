import keras
import numpy as np
import pytest

from collabopt import layers as co_layers
from collabopt.transform import copy_layer
from tests.conftest import rand

#: Runs unchanged on JAX and PyTorch too (CI: KERAS_BACKEND=jax / torch; see README).
pytestmark = pytest.mark.every_backend

L = keras.layers

# (layer factory, input shape) for every built-in supported class.
SUPPORTED = [
    (lambda: L.Dense(5, activation="relu"), (3, 7)),
    (lambda: L.Conv1D(4, 3, activation="relu"), (2, 9, 3)),
    (lambda: L.Conv2D(4, 3, padding="same"), (2, 6, 6, 3)),
    (lambda: L.Conv3D(4, 2), (2, 4, 4, 4, 2)),
    (lambda: L.DepthwiseConv2D(3, depth_multiplier=2), (2, 6, 6, 3)),
    (lambda: L.DepthwiseConv1D(3), (2, 9, 3)),
    (lambda: L.SeparableConv2D(5, 3, depth_multiplier=2), (2, 6, 6, 3)),
    (lambda: L.SeparableConv1D(5, 3), (2, 9, 3)),
    (lambda: L.Conv2DTranspose(4, 3, strides=2), (2, 5, 5, 3)),
    (lambda: L.Conv1DTranspose(4, 3), (2, 5, 3)),
    (lambda: L.Conv3DTranspose(2, 2), (2, 3, 3, 3, 2)),
    (lambda: L.Embedding(11, 4), None),
]


def _input(shape):
    if shape is None:
        return np.random.default_rng(0).integers(0, 11, (3, 5))
    return rand(*shape)


@pytest.mark.parametrize("factory,shape", SUPPORTED, ids=lambda v: getattr(v, "__name__", str(v)))
def test_own_weights_give_exact_layer_output(factory, shape):
    layer = factory()
    x = _input(shape)
    expected = layer(x)
    weights = co_layers.optimizable_variables(layer)
    assert weights, f"{type(layer).__name__} has no optimizable weights"
    got = co_layers.call_with_weights(layer, x, {k: v.value for k, v in weights.items()})
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(got), keras.ops.convert_to_numpy(expected))


@pytest.mark.parametrize("factory,shape", SUPPORTED, ids=lambda v: getattr(v, "__name__", str(v)))
def test_replacement_weights_equal_a_clone_holding_them(factory, shape):
    layer = factory()
    x = _input(shape)
    layer(x)
    replaced = {k: v.numpy() * 0.5 + 0.1 for k, v in co_layers.optimizable_variables(layer).items()}
    clone = copy_layer(layer)
    for name, value in replaced.items():
        co_layers.optimizable_variables(clone)[name].assign(value)
    got = co_layers.call_with_weights(layer, x, replaced)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(got), keras.ops.convert_to_numpy(clone(x)), rtol=1e-6, atol=1e-6)
    # The layer's own variables are untouched.
    for name, var in co_layers.optimizable_variables(layer).items():
        assert not np.array_equal(var.numpy(), replaced[name])


@pytest.mark.tensorflow_only('a tf.GradientTape')
def test_gradient_reaches_the_source_of_the_replacement():
    import tensorflow as tf

    layer = L.Dense(3)
    x = rand(4, 2)
    layer(x)
    mask = np.array([[1, 0, 1], [0, 1, 1]], "float32")
    with tf.GradientTape() as tape:
        y = co_layers.call_with_weights(layer, x, {"kernel": layer.kernel * mask})
        loss = tf.reduce_sum(y**2)
    grad = tape.gradient(loss, layer.kernel)
    assert np.all(grad.numpy()[mask == 0] == 0) and np.any(grad.numpy()[mask == 1] != 0)


def test_channel_axes():
    depthwise = L.DepthwiseConv2D(3, depth_multiplier=2)
    depthwise.build((None, 5, 5, 3))
    spec = co_layers.spec_for(depthwise, "kernel")
    w = depthwise.kernel.numpy()
    rows = co_layers.to_channel_rows(w, spec)
    assert rows.shape == (6, 9)
    # output channel c = in * multiplier + m
    np.testing.assert_array_equal(rows[1 * 2 + 1], w[:, :, 1, 1].reshape(-1))
    np.testing.assert_array_equal(co_layers.from_channel_rows(rows, spec, w.shape), w)
    transpose = L.Conv2DTranspose(4, 3)
    transpose.build((None, 5, 5, 3))
    assert co_layers.to_channel_rows(transpose.kernel.numpy(), co_layers.spec_for(transpose, "kernel")).shape == (4, 27)


def test_passthrough_and_unsupported():
    assert co_layers.weight_specs(L.MaxPooling2D()) == ()
    assert co_layers.is_passthrough(L.Add())
    unknown = L.GroupNormalization(groups=1)  # has weights, and no registry entry
    unknown.build((None, 4, 2))
    assert co_layers.weight_specs(unknown) is None
    assert not co_layers.is_passthrough(unknown)


def test_sublayer_weights_are_addressed_by_path():
    attention = L.MultiHeadAttention(2, 4, name="att")
    x = keras.Input((5, 8))
    attention(x, x)
    specs = {s.name: s for s in co_layers.weight_specs(attention)}
    assert sorted(specs) == ["attention_output/kernel", "key/kernel", "query/kernel", "value/kernel"]
    assert co_layers.get_variable(attention, specs["query/kernel"]).path == "att/query/kernel"
    # query "abc,cde->abde": kernel (8, 2, 4); heads and key_dim reach the output, c is contracted
    assert specs["query/kernel"].channel_axes == (-2, -1) and specs["query/kernel"].input_axis == -3
    assert specs["query/kernel"].per_channel_quantization is False
    lstm = L.Bidirectional(L.LSTM(3), name="bi")
    lstm.build((None, 4, 2))
    names = [s.name for s in co_layers.weight_specs(lstm)]
    assert len(names) == 4 and all(n.endswith(("/kernel", "/recurrent_kernel")) for n in names)
    einsum = L.EinsumDense("btd,de->bte", output_shape=(None, 6))
    einsum.build((None, 3, 4))
    assert co_layers.spec_for(einsum, "kernel").channel_axes == (-1,)


class Scale(keras.layers.Layer):
    def build(self, shape):
        self.w = self.add_weight(shape=(shape[-1], 4), name="w")

    def call(self, x):
        return keras.ops.matmul(x, self.w)

    def get_optimizable_weights(self):
        return [co_layers.WeightSpec("w", channel_axes=(-1,), input_axis=0)]


def test_custom_layer_protocol():
    layer = Scale()
    x = rand(2, 3)
    layer(x)
    assert [s.name for s in co_layers.weight_specs(layer)] == ["w"]
    got = co_layers.call_with_weights(layer, x, {"w": np.ones((3, 4), "float32")})
    np.testing.assert_allclose(got, x @ np.ones((3, 4)), rtol=1e-6)


def test_register_layer_for_a_custom_class():
    class Plain(keras.layers.Layer):
        def build(self, shape):
            self.table = self.add_weight(shape=(shape[-1], 2), name="table")

        def call(self, x):
            return keras.ops.matmul(x, self.table)

    co_layers.register_layer(Plain, [co_layers.WeightSpec("table", (-1,), 0)])
    layer = Plain()
    layer(rand(1, 3))
    assert list(co_layers.optimizable_variables(layer)) == ["table"]
    with pytest.raises(ValueError, match="Layer subclass"):
        co_layers.register_layer(int, [])


def test_unknown_weight_name_is_named_in_the_error():
    layer = L.Dense(2)
    layer.build((None, 3))
    with pytest.raises(ValueError, match=r"layer '.*' \(Dense\) has no optimizable weight 'bias'"):
        co_layers.call_with_weights(layer, rand(1, 3), {"bias": np.zeros(2, "float32")})


@pytest.mark.parametrize("technique", ["prune", "cluster", "quantize"])
def test_a_lora_enabled_kernel_is_refused_by_every_technique(technique):
    """With LoRA, ``kernel`` is computed (kernel + a @ b): optimizing the variable under it would not reach it."""
    import collabopt.keras as co

    model = keras.Sequential([keras.Input((4,)), L.Dense(4, name="fc")])
    model.get_layer("fc").enable_lora(2)
    apply = {
        "prune": lambda m: co.prune_low_magnitude(m, co.ConstantSparsity(0.5, 0)),
        "cluster": lambda m: co.cluster_weights(m, number_of_clusters=2),
        "quantize": co.quantize_model,
    }[technique]
    with pytest.raises(ValueError, match=r"layer 'fc' \(Dense\): weight 'kernel' is not a variable.*enable_lora"):
        apply(model)
