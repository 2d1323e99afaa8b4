import keras
import numpy as np
import pytest

from collabopt.transform import iter_layers, map_layers
from tests.conftest import rand, small_cnn

L = keras.layers


class Doubler(keras.layers.Layer):
    """A stand-in replacement: wraps a layer and doubles its output."""

    def __init__(self, inner, **kw):
        super().__init__(**kw)
        self.inner = inner

    def call(self, x):
        return self.inner(x) * 2.0


def _weights(model):
    return [w.numpy().copy() for w in model.weights]


def _assert_same_weights(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


def test_sequential_copy_keeps_names_and_weights_and_input():
    model = small_cnn()
    before = _weights(model)
    copy = map_layers(model, lambda layer: None)
    assert [l.name for l in copy.layers] == [l.name for l in model.layers]
    _assert_same_weights(_weights(copy), before)
    x = rand(3, 8, 8, 1)
    np.testing.assert_array_equal(copy(x), model(x))
    assert copy.layers[0] is not model.layers[0]


def test_functional_multi_io_residual_and_shared_layer():
    a, b = keras.Input((6,), name="a"), keras.Input((6,), name="b")
    shared = L.Dense(6, name="shared")
    h = L.Add(name="residual")([shared(a), a])
    g = shared(b)
    out1 = L.Dense(2, name="head1")(h)
    out2 = L.Dense(3, name="head2")(L.Concatenate(name="cat")([h, g]))
    model = keras.Model([a, b], [out1, out2])
    before = _weights(model)
    calls = []

    def fn(layer):
        calls.append(layer.name)
        return None

    copy = map_layers(model, fn)
    assert calls.count("shared") == 1
    new_shared = copy.get_layer("shared")
    assert len(new_shared._inbound_nodes) == 2  # still shared between two call sites
    xa, xb = rand(4, 6), rand(4, 6, seed=1)
    for p, q in zip(copy([xa, xb]), model([xa, xb])):
        np.testing.assert_array_equal(p, q)
    _assert_same_weights(_weights(model), before)


def test_nested_models_are_rewritten_recursively():
    inner_seq = keras.Sequential([keras.Input((6,)), L.Dense(6, name="inner_dense")], name="inner_seq")
    i = keras.Input((6,))
    inner_fn = keras.Model(i, L.Dense(6, name="fn_dense")(i), name="inner_fn")
    x = keras.Input((6,))
    out = L.Dense(2, name="top")(inner_fn(inner_seq(x)))
    model = keras.Model(x, out)
    seen = []
    copy = map_layers(model, lambda layer: seen.append(layer.name))
    assert {"inner_dense", "fn_dense", "top"} <= set(seen)
    assert "inner_seq" not in seen  # nested models are descended into, not handed to fn
    np.testing.assert_array_equal(copy(rand(2, 6)), model(rand(2, 6)))
    assert [l.name for l in iter_layers(copy)] == [l.name for l in iter_layers(model)]


def test_replacement_is_used_and_input_untouched():
    model = small_cnn()
    before = _weights(model)
    copy = map_layers(model, lambda l: Doubler(l, name=f"doubled_{l.name}") if l.name == "dense" else None)
    assert "doubled_dense" in [l.name for l in copy.layers]
    x = rand(2, 8, 8, 1)
    np.testing.assert_allclose(copy(x), 2 * model(x), rtol=1e-6)
    _assert_same_weights(_weights(model), before)
    assert "dense" in [l.name for l in model.layers]


def test_subclassed_model_error_explains_the_alternative():
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.d = L.Dense(2)

        def call(self, x):
            return self.d(x)

    net = Net()
    net(rand(1, 3))
    with pytest.raises(ValueError, match="subclassed keras.Model.*Apply the collabopt wrapper to individual layers"):
        map_layers(net, lambda l: None)


def test_unbuilt_model_is_rejected():
    with pytest.raises(ValueError, match="not built"):
        map_layers(keras.Sequential([L.Dense(2)]), lambda l: None)


class _Halve(keras.layers.Layer):
    """A weightless custom layer whose config cannot rebuild it (it takes a required argument)."""

    def __init__(self, factor, **kwargs):
        super().__init__(**kwargs)
        self.factor = factor

    def call(self, x):
        return x * self.factor


def test_weightless_user_layers_pass_through_every_transform():
    import collabopt.keras as co
    import collabopt.tflite as ct

    L = keras.layers
    i = keras.Input((8, 8, 3))
    h = L.Conv2D(8, 3, name="c")(i)
    h = L.Lambda(lambda t: t * 0.5, name="lam")(h)
    h = _Halve(0.5, name="halve")(h)
    h = L.Flatten()(L.ReLU()(h))
    model = keras.Model(i, L.Dense(4, name="d")(h))
    x = np.random.default_rng(0).random((16, 8, 8, 3)).astype("float32")
    pruned = co.prune_low_magnitude(model, co.ConstantSparsity(0.5, 0, frequency=1))
    pruned(x, training=True)
    clustered = co.cluster_weights(pruned, number_of_clusters=8, preserve_sparsity=True)
    clustered(x, training=True)
    qat = co.quantize_model(clustered)
    qat(x, training=True)
    tflite = ct.convert(qat, "int8")
    assert tflite.float_islands() == [] and ct.verify(qat, tflite).all_hold
    stripped = co.strip_pruning(pruned)
    assert [type(layer).__name__ for layer in stripped.layers][2:4] == ["Lambda", "_Halve"]
    np.testing.assert_allclose(stripped.predict(x, verbose=0), pruned.predict(x, verbose=0), atol=1e-5)


def test_merge_ops_as_layers_rebuilds_two_tensor_operators_only():
    i = keras.Input((4,))
    a, b = L.Dense(4, name="a")(i), L.Dense(4, name="b")(i)
    out = keras.ops.maximum(a + b, a * 3.0) - b
    model = keras.Model(i, out)
    seen = []
    rewritten = map_layers(model, lambda layer: seen.append(layer.name), merge_ops_as_layers=True)
    kinds = sorted(type(l).__name__ for l in rewritten.layers if type(l).__name__ in ("Add", "Maximum", "Subtract"))
    assert kinds == ["Add", "Maximum", "Subtract"]  # ``a * 3.0`` has a constant operand: still a plain op
    assert {"add", "maximum", "subtract"} <= set(seen)  # fn received each new merge layer
    x = rand(5, 4)
    np.testing.assert_allclose(rewritten.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-6)
    plain = map_layers(model, lambda layer: None)
    assert not any(type(l).__name__ == "Add" for l in plain.layers)  # off by default
