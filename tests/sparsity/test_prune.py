
import keras
import numpy as np
import pytest
import tensorflow as tf

import collabopt.keras as co
import collabopt.tflite as ct
from collabopt.preserve import constraints_on
from tests.conftest import MatMul, rand, small_cnn

#: Runs unchanged on JAX and PyTorch too (CI: KERAS_BACKEND=jax / torch; see README).
pytestmark = pytest.mark.every_backend

L = keras.layers


def _fit(model, x, y, steps, batch_size=8, loss="mse"):
    model.compile(optimizer="adam", loss=loss)
    model.fit(x[: steps * batch_size], y[: steps * batch_size], batch_size=batch_size, epochs=1, verbose=0, shuffle=False)


def _wrappers(model):
    from collabopt.sparsity import pruning_wrappers

    return pruning_wrappers(model)


def _sparsity(wrapper, name="kernel"):
    return 1.0 - float(np.mean(wrapper.masks[name].numpy()))


def test_sparsity_follows_the_schedule_step_by_step():
    model = keras.Sequential([keras.Input((16,)), L.Dense(32, name="d")])
    schedule = co.PolynomialDecay(0.0, 0.8, begin_step=0, end_step=8, power=1, frequency=2)
    pruned = co.prune_low_magnitude(model, schedule)
    pruned.compile(optimizer="sgd", loss="mse")
    (wrapper,) = _wrappers(pruned)
    x, y = rand(1, 16), rand(1, 32)
    seen = []
    for _ in range(10):
        pruned.train_on_batch(x, y)
        seen.append(round(_sparsity(wrapper), 4))
    # Mask updates at steps 0, 2, 4, 6, 8 to round(s(t) * 512) / 512 and holds in between.
    expected = []
    current = 0.0
    for step in range(10):
        if step % 2 == 0 and step <= 8:
            current = round(round(min(step / 8, 1) * 0.8 * 512) / 512, 4)
        expected.append(current)
    assert seen == expected
    assert co.pruning_step(pruned) == 10


LAYERS = [
    ("conv1d", lambda: L.Conv1D(8, 3, name="conv1d"), (12, 4), "kernel"),
    ("conv2d", lambda: L.Conv2D(8, 3, name="conv2d"), (6, 6, 4), "kernel"),
    ("conv3d", lambda: L.Conv3D(4, 2, name="conv3d"), (4, 4, 4, 2), "kernel"),
    ("dense", lambda: L.Dense(8, name="dense"), (12,), "kernel"),
    ("separable_pointwise", lambda: L.SeparableConv2D(8, 3, name="sep"), (6, 6, 4), "pointwise_kernel"),
    ("separable_depthwise", lambda: L.SeparableConv2D(8, 3, name="sep"), (6, 6, 4), "depthwise_kernel"),
    ("depthwise", lambda: L.DepthwiseConv2D(3, name="dw"), (6, 6, 4), "kernel"),
    ("conv2d_transpose", lambda: L.Conv2DTranspose(4, 3, name="convt"), (5, 5, 4), "kernel"),
]


@pytest.mark.parametrize("label,factory,shape,weight", LAYERS, ids=[l[0] for l in LAYERS])
def test_exact_target_sparsity_after_training(label, factory, shape, weight):
    inputs = keras.Input(shape)
    out = L.Flatten()(factory()(inputs))
    model = keras.Model(inputs, L.Dense(3, name="head")(out))
    pruned = co.prune_low_magnitude(model, co.ConstantSparsity(0.6, 0, frequency=3))
    x, y = rand(64, *shape), rand(64, 3)
    _fit(pruned, x, y, steps=8)
    stripped = co.strip_pruning(pruned)
    layer = [l for l in stripped.layers if l.name != "head" and l.weights][0]
    value = getattr(layer, weight).numpy()
    assert np.sum(value == 0) == round(0.6 * value.size)


def test_embedding_exact_sparsity():
    model = keras.Sequential([keras.Input((5,), dtype="int32"), L.Embedding(50, 8, name="emb"), L.Flatten(), L.Dense(2)])
    pruned = co.prune_low_magnitude(model, co.ConstantSparsity(0.75, 0, frequency=1))
    x = np.random.default_rng(0).integers(0, 50, (32, 5))
    _fit(pruned, x, rand(32, 2), steps=4)
    emb = co.strip_pruning(pruned).get_layer("emb").embeddings.numpy()
    assert np.sum(emb == 0) == 300


def test_two_four_pattern_in_every_group():
    inputs = keras.Input((6, 6, 8))
    model = keras.Model(inputs, L.Dense(16, name="fc")(L.Conv2D(12, 3, name="conv")(inputs)))
    pruned = co.prune_low_magnitude(model, sparsity_m_by_n=(2, 4))
    _fit(pruned, rand(32, 6, 6, 8), rand(32, 4, 4, 16), steps=3)
    stripped = co.strip_pruning(pruned)
    conv = stripped.get_layer("conv").kernel.numpy()  # (3, 3, in=8, out=12)
    groups = np.moveaxis(conv, 2, -1).reshape(-1, 4)
    assert np.all(np.count_nonzero(groups, axis=1) <= 2)
    fc = stripped.get_layer("fc").kernel.numpy()  # (in=12, out=16): groups along axis 0
    assert np.all(np.count_nonzero(fc.T.reshape(-1, 4), axis=1) <= 2)


def test_block_sparsity_zeroes_whole_blocks():
    model = keras.Sequential([keras.Input((8,)), L.Dense(12, name="fc")])
    pruned = co.prune_low_magnitude(model, co.ConstantSparsity(0.5, 0, frequency=1), block_size=(2, 3), block_pooling_type="MAX")
    _fit(pruned, rand(16, 8), rand(16, 12), steps=2)
    kernel = co.strip_pruning(pruned).get_layer("fc").kernel.numpy()
    blocks = kernel.reshape(4, 2, 4, 3).transpose(0, 2, 1, 3).reshape(16, 6)
    nonzero_per_block = np.count_nonzero(blocks, axis=1)
    assert set(nonzero_per_block.tolist()) <= {0, 6}
    assert np.sum(nonzero_per_block == 0) == 8


def _nested_residual_model():
    block_in = keras.Input((8, 8, 4))
    h = L.Conv2D(4, 3, padding="same", name="block_conv")(block_in)
    block = keras.Model(block_in, L.ReLU(name="block_relu")(h), name="block")
    inputs = keras.Input((8, 8, 4))
    x = L.Conv2D(4, 3, padding="same", name="stem")(inputs)
    x = L.Add(name="residual")([x, block(x)])
    x = L.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, L.Dense(3, name="head")(x))


def test_nested_and_residual_models():
    model = _nested_residual_model()
    before = [w.numpy().copy() for w in model.weights]
    pruned = co.prune_low_magnitude(model, co.ConstantSparsity(0.5, 0, frequency=1))
    names = {w.base_layer.name for w in _wrappers(pruned)}
    assert names == {"stem", "block_conv", "head"}
    _fit(pruned, rand(32, 8, 8, 4), rand(32, 3), steps=3)
    assert all(_sparsity(w) == pytest.approx(0.5, abs=0.02) for w in _wrappers(pruned))
    for a, b in zip(before, model.weights):  # the input model is untouched
        np.testing.assert_array_equal(a, b.numpy())
    stripped = co.strip_pruning(pruned)
    assert not _wrappers(stripped)
    assert stripped.get_layer("block").get_layer("block_conv").kernel.numpy().size


def test_save_and_load_mid_schedule_resumes_bitwise(tmp_path):
    def build():
        keras.utils.set_random_seed(1)
        model = keras.Sequential([keras.Input((10,)), L.Dense(16, name="a"), L.Dense(4, name="b")])
        pruned = co.prune_low_magnitude(model, co.PolynomialDecay(0.0, 0.7, 0, 12, frequency=3))
        pruned.compile(optimizer="sgd", loss="mse")
        return pruned

    x, y = rand(8, 10), rand(8, 4)
    straight = build()
    for _ in range(12):
        straight.train_on_batch(x, y)

    resumed = build()
    for _ in range(5):
        resumed.train_on_batch(x, y)
    path = tmp_path / "mid.keras"
    resumed.save(path)
    loaded = keras.saving.load_model(path)  # no custom_objects, no scope
    assert co.pruning_step(loaded) == 5
    for a, b in zip(resumed.weights, loaded.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), resumed.predict(x, verbose=0))
    for _ in range(7):
        loaded.train_on_batch(x, y)
    for a, b in zip(_wrappers(straight), _wrappers(loaded)):
        np.testing.assert_array_equal(a.masks["kernel"].numpy(), b.masks["kernel"].numpy())


@pytest.mark.tensorflow_only('a tf.GradientTape loop')
def test_custom_training_loop_prunes_without_callbacks():
    model = keras.Sequential([keras.Input((6,)), L.Dense(8, name="d")])
    pruned = co.prune_low_magnitude(model, co.ConstantSparsity(0.5, begin_step=2, frequency=1))
    optimizer = keras.optimizers.SGD(0.1)
    x, y = rand(4, 6), rand(4, 8)

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean((pruned(x, training=True) - y) ** 2)
        grads = tape.gradient(loss, pruned.trainable_variables)
        optimizer.apply_gradients(zip(grads, pruned.trainable_variables))

    (wrapper,) = _wrappers(pruned)
    step()
    step()
    assert _sparsity(wrapper) == 0.0
    step()
    assert _sparsity(wrapper) == 0.5
    assert co.pruning_step(pruned) == 3


def test_mirrored_strategy_gives_the_same_masks_as_one_device(mirrored):
    x, y = rand(64, 12), rand(64, 6)

    def train(strategy):
        with strategy.scope():
            keras.utils.set_random_seed(3)
            model = keras.Sequential([keras.Input((12,)), L.Dense(10, name="a"), L.Dense(6, name="b")])
            pruned = co.prune_low_magnitude(model, co.PolynomialDecay(0.0, 0.6, 0, 6, frequency=2))
            pruned.compile(optimizer="sgd", loss="mse")
        pruned.fit(x, y, batch_size=16, epochs=2, verbose=0, shuffle=False)
        return [w.masks["kernel"].numpy() for w in _wrappers(pruned)]

    two = train(mirrored)
    single = train(tf.distribute.OneDeviceStrategy(tf.config.list_logical_devices("CPU")[0].name))
    for a, b in zip(two, single):
        np.testing.assert_array_equal(a, b)
    assert 1 - two[0].mean() == pytest.approx(0.6, abs=0.01)


@pytest.mark.tensorflow_only('exports to TFLite')
def test_int8_flatbuffer_keeps_the_zeros():
    model = small_cnn()
    pruned = co.prune_low_magnitude(model, co.ConstantSparsity(0.5, 0, frequency=1))
    x = rand(64, 8, 8, 1)
    _fit(pruned, x, rand(64, 10), steps=4)
    tfl = ct.convert(pruned, "int8", x)
    kernels = [t for t in tfl.inspect().weights() if t.dtype == "int8" and len(t.shape) >= 2]
    assert len(kernels) == 2
    assert all(t.zeros_fraction >= 0.5 for t in kernels)


def test_strip_keeps_names_and_exact_zeros():
    model = small_cnn()
    pruned = co.prune_low_magnitude(model, co.ConstantSparsity(0.5, 0, frequency=1))
    _fit(pruned, rand(32, 8, 8, 1), rand(32, 10), steps=2)
    stripped = co.strip_pruning(pruned)
    assert [l.name for l in stripped.layers] == [l.name for l in model.layers]
    kernel = stripped.get_layer("dense").kernel.numpy()
    mask = [w for w in _wrappers(pruned) if w.base_layer.name == "dense"][0].masks["kernel"].numpy()
    np.testing.assert_array_equal(kernel == 0, mask == 0)
    x = rand(5, 8, 8, 1)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(stripped(x)), keras.ops.convert_to_numpy(pruned(x)), atol=1e-6)


class Custom(MatMul):
    def get_prunable_weights(self):
        return [self.w]


def test_prunable_layer_protocol():
    inputs = keras.Input((8,))
    model = keras.Model(inputs, Custom(8, name="custom")(inputs))
    pruned = co.prune_low_magnitude(model, co.ConstantSparsity(0.5, 0, frequency=1))
    (wrapper,) = _wrappers(pruned)
    assert list(wrapper.masks) == ["w"]
    _fit(pruned, rand(16, 8), rand(16, 8), steps=2)
    assert _sparsity(wrapper, "w") == 0.5


def test_pruning_a_single_layer_for_subclassed_models():
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.fc = co.prune_low_magnitude(L.Dense(8), co.ConstantSparsity(0.5, 0, frequency=1))

        def call(self, x, training=None):  # Keras passes training=True only if call accepts it
            return self.fc(x, training=training)

    net = Net()
    _fit(net, rand(16, 4), rand(16, 8), steps=2)
    assert _sparsity(net.fc) == 0.5


def test_sparsity_constraint_is_recorded_and_derived_after_strip():
    model = keras.Sequential([keras.Input((8,)), L.Dense(8, name="d")])
    pruned = co.prune_low_magnitude(model, co.ConstantSparsity(0.5, 0, frequency=1))
    _fit(pruned, rand(8, 8), rand(8, 8), steps=1)
    (wrapper,) = _wrappers(pruned)
    recorded = constraints_on(wrapper, "kernel")["sparsity"]
    assert recorded.state["mask"] is wrapper.masks["kernel"]
    stripped = co.strip_pruning(pruned).get_layer("d")
    kept = co.PreserveWrapper(stripped, {"kernel": ["sparsity"]})
    kept.build((None, 8))
    np.testing.assert_array_equal(constraints_on(kept, "kernel")["sparsity"].state["mask"].numpy(), wrapper.masks["kernel"].numpy())
    dense = L.Dense(4)
    dense.build((None, 8))
    with pytest.warns(UserWarning, match="no exact zeros"):
        co.PreserveWrapper(dense, {"kernel": ["sparsity"]}).build((None, 8))


def test_pruning_summaries_write_events(tmp_path):
    model = co.prune_low_magnitude(small_cnn(), co.ConstantSparsity(0.5, 0, frequency=1))
    model.compile(optimizer="sgd", loss="mse")
    model.fit(rand(16, 8, 8, 1), rand(16, 10), epochs=1, verbose=0, callbacks=[co.UpdatePruningStep(), co.PruningSummaries(tmp_path)])
    assert list(tmp_path.glob("events.out.tfevents.*"))


def test_unsupported_layers_pass_through_with_one_warning():
    model = keras.Sequential([keras.Input((4, 3)), L.GroupNormalization(1, name="gn"), L.Dense(2, name="d")])
    with pytest.warns(UserWarning, match=r"left unchanged 1 layer\(s\).*gn \(GroupNormalization\)"):
        pruned = co.prune_low_magnitude(model)
    assert {w.base_layer.name for w in _wrappers(pruned)} == {"d"}


# --- bad input ---------------------------------------------------------------


def _before(model):
    return [w.numpy().copy() for w in model.weights]


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"sparsity_m_by_n": (4, 2)}, r"sparsity_m_by_n=\(4, 2\): m must be <= n"),
        ({"sparsity_m_by_n": (2, 3)}, r"layer 'conv' \(Conv2D\).*n to divide the 1 input channels"),
        ({"block_size": (2, 2)}, r"layer 'conv' \(Conv2D\).*block_size=\(2, 2\) needs a rank-2 weight"),
        ({"block_size": (0, 2)}, "block_size must be a pair of integers >= 1"),
        ({"block_pooling_type": "MIN"}, "block_pooling_type must be one of"),
        ({"pruning_schedule": 0.5}, "pruning_schedule must be a PruningSchedule"),
        ({"pruning_policy": object()}, "pruning_policy must have an allow_pruning"),
    ],
)
def test_bad_arguments_leave_the_model_untouched(kwargs, match):
    model = small_cnn()
    before = _before(model)
    with pytest.raises(ValueError, match=match):
        co.prune_low_magnitude(model, **kwargs)
    for a, b in zip(before, model.weights):
        np.testing.assert_array_equal(a, b.numpy())
    assert not _wrappers(model)


def test_pruning_twice_and_explicit_unprunable_layer():
    pruned = co.prune_low_magnitude(small_cnn())
    with pytest.raises(ValueError, match="layer 'conv' is already pruned"):
        co.prune_low_magnitude(pruned)
    with pytest.raises(ValueError, match=r"layer 'pool' \(MaxPooling2D\) has nothing it can transform"):
        co.prune_low_magnitude([L.Dense(3), L.MaxPooling2D(name="pool")])


def test_xnnpack_policy_prunes_only_pointwise_convs():
    inputs = keras.Input((8, 8, 4))
    x = L.Conv2D(8, 3, padding="same", name="spatial")(inputs)
    x = L.Conv2D(8, 1, name="pointwise")(x)
    model = keras.Model(inputs, L.Dense(2, name="head")(L.GlobalAveragePooling2D()(x)))
    pruned = co.prune_low_magnitude(model, pruning_policy=co.PruneForLatencyOnXNNPack())
    assert {w.base_layer.name for w in _wrappers(pruned)} == {"pointwise"}


@pytest.mark.tensorflow_only("counts the ops of a traced TensorFlow step")
def test_the_mask_update_is_no_part_of_the_backward_pass():
    """One conditional mask update per weight in a traced training step, and no gradient of it.

    The mask is a step function of the weights; differentiating its cond
    would add a gradient cond per weight and make the forward one keep its
    intermediates (the sorted magnitudes) for it.
    """
    model = keras.Sequential([keras.Input((6, 6, 3)), keras.layers.Conv2D(8, 3), keras.layers.Flatten(), keras.layers.Dense(4)])
    pruned = co.prune_low_magnitude(model, co.ConstantSparsity(0.5, 0, frequency=1))

    def step(x):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(pruned(x, training=True))
        return tape.gradient(loss, pruned.trainable_variables)

    graph = tf.function(step).get_concrete_function(tf.TensorSpec((2, 6, 6, 3))).graph
    conds = [op for op in graph.get_operations() if op.type in ("If", "StatelessIf")]
    assert len(conds) == 2, [op.name for op in conds]  # the two kernels' updates, forward only
    grads = step(tf.random.uniform((2, 6, 6, 3)))
    assert all(g is not None for g in grads)
    for layer in pruned.layers[::2]:  # the masks were updated in the step: half of each kernel is zero
        assert np.mean(keras.ops.convert_to_numpy(layer.masks["kernel"]) == 0) == pytest.approx(0.5, abs=0.05)
