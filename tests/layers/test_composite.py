"""Models built from composite layers: user blocks holding Conv/BN/Dense/attention sublayers, optimized inside.

The blocks are written as the Keras guides teach: sublayers created in
``__init__`` (attributes, a list, a block inside a block), no ``build``
method, nothing collabopt-specific. Each model goes through prune 50% ->
sparsity-preserving clustering -> QAT, a ``.keras`` round trip, and full
int8 with every constraint verified in the file, and the share of the
model's kernel parameters the chain reached is asserted.
"""

import numpy as np
import pytest

import keras

import collabopt.keras as co
import collabopt.tflite as ct
from collabopt.errors import InvalidArgumentError
from collabopt.layers import copy_layer, weight_specs
from tests.conftest import pcqat_trained, train_steps

L = keras.layers


@keras.saving.register_keras_serializable("collabopt_tests")
class ResidualBlock(L.Layer):
    """Two Conv2D + BatchNormalization sublayers and a residual add; no build method."""

    def __init__(self, filters, **kwargs):
        super().__init__(**kwargs)
        self.filters = filters
        self.conv1 = L.Conv2D(filters, 3, padding="same", use_bias=False)
        self.bn1 = L.BatchNormalization(momentum=0.9)
        self.conv2 = L.Conv2D(filters, 3, padding="same")
        self.bn2 = L.BatchNormalization(momentum=0.9)

    def call(self, x, training=None):
        h = keras.ops.relu(self.bn1(self.conv1(x), training=training))
        return keras.ops.relu(self.bn2(self.conv2(h), training=training) + x)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters}


@keras.saving.register_keras_serializable("collabopt_tests")
class ConvStack(L.Layer):
    """A list of sublayers."""

    def __init__(self, widths, **kwargs):
        super().__init__(**kwargs)
        self.widths = list(widths)
        self.convs = [L.Conv2D(w, 3, padding="same", activation="relu") for w in self.widths]

    def call(self, x):
        for conv in self.convs:
            x = conv(x)
        return x

    def get_config(self):
        return {**super().get_config(), "widths": self.widths}


@keras.saving.register_keras_serializable("collabopt_tests")
class ProjectedResidual(L.Layer):
    """A block nested in a block."""

    def __init__(self, filters, **kwargs):
        super().__init__(**kwargs)
        self.filters = filters
        self.inner = ResidualBlock(filters)
        self.proj = L.Conv2D(filters, 1)

    def call(self, x, training=None):
        return self.proj(self.inner(x, training=training))

    def get_config(self):
        return {**super().get_config(), "filters": self.filters}


@keras.saving.register_keras_serializable("collabopt_tests")
class AttentionBlock(L.Layer):
    """Pre-norm self-attention with a residual."""

    def __init__(self, dim, heads=2, **kwargs):
        super().__init__(**kwargs)
        self.dim, self.heads = dim, heads
        self.norm = L.LayerNormalization()
        self.attention = L.MultiHeadAttention(heads, dim // heads)

    def call(self, x):
        h = self.norm(x)
        return x + self.attention(h, h)

    def get_config(self):
        return {**super().get_config(), "dim": self.dim, "heads": self.heads}


@keras.saving.register_keras_serializable("collabopt_tests")
class MLPBlock(L.Layer):
    """LayerNormalization + GELU Dense + Dense with a residual."""

    def __init__(self, dim, **kwargs):
        super().__init__(**kwargs)
        self.dim = dim
        self.norm = L.LayerNormalization()
        self.up = L.Dense(2 * dim, activation="gelu")
        self.down = L.Dense(dim)

    def call(self, x):
        return x + self.down(self.up(self.norm(x)))

    def get_config(self):
        return {**super().get_config(), "dim": self.dim}


def residual_cnn(channels=3):
    inputs = keras.Input((12, 12, channels))
    x = L.Conv2D(8, 3, padding="same", name="stem")(inputs)
    x = ResidualBlock(8, name="res")(x)
    x = ConvStack([8, 8], name="stack")(x)
    x = ProjectedResidual(8, name="nested")(x)
    x = L.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, L.Dense(4, name="head")(x))


def block_transformer():
    inputs = keras.Input((8, 16))
    x = L.Dense(16, name="embed")(inputs)
    x = AttentionBlock(16, name="attention_block")(x)
    x = MLPBlock(16, name="mlp_block")(x)
    x = L.GlobalAveragePooling1D()(x)
    return keras.Model(inputs, L.Dense(4, name="head")(x))


def _data(model, batch=8):
    rng = np.random.default_rng(0)
    x = rng.random((batch,) + tuple(model.input_shape[1:])).astype("float32")
    return x, rng.integers(0, 4, batch)


def test_a_composite_layer_offers_the_weights_of_its_sublayers_by_attribute_path():
    model = residual_cnn()
    names = {layer.name: [s.name for s in weight_specs(layer) or ()] for layer in model.layers}
    assert names["res"] == ["conv1/kernel", "conv2/kernel"]
    assert names["stack"] == ["convs/0/kernel", "convs/1/kernel"]
    assert names["nested"] == ["inner/conv1/kernel", "inner/conv2/kernel", "proj/kernel"]
    assert [s.name for s in weight_specs(block_transformer().get_layer("attention_block"))] == [
        "attention/query/kernel", "attention/key/kernel", "attention/value/kernel", "attention/attention_output/kernel",
    ]  # fmt: skip


def test_copying_a_composite_builds_it_from_the_inputs_it_was_called_on():
    model = residual_cnn()
    block = model.get_layer("nested")
    copy = copy_layer(block)
    assert copy is not block and len(copy.weights) == len(block.weights) == 13
    for a, b in zip(copy.weights, block.weights):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))
    x = np.random.default_rng(1).random((2, 12, 12, 8)).astype("float32")
    np.testing.assert_allclose(copy(x), block(x), atol=1e-6)


class _WrongConfig(L.Layer):  # its config does not describe it
    def __init__(self, units, **kwargs):
        super().__init__(**kwargs)
        self.dense = L.Dense(units)

    def call(self, x):
        return self.dense(x)

    def get_config(self):
        return {**super().get_config(), "units": 5}


class _NoConfig(L.Layer):  # a constructor argument Keras cannot serialize
    def __init__(self, activation, **kwargs):
        super().__init__(**kwargs)
        self.activation = activation
        self.dense = L.Dense(3)

    def call(self, x):
        return self.activation(self.dense(x))


@pytest.mark.parametrize(
    "block", [lambda: _WrongConfig(3, name="fragile"), lambda: _NoConfig(lambda t: t * 2, name="fragile")],
    ids=["wrong_config", "no_config"],
)
def test_a_layer_that_cannot_be_copied_is_refused_by_name_and_the_model_is_untouched(block):
    inputs = keras.Input((2,))
    model = keras.Model(inputs, L.Dense(2, name="head")(block()(inputs)))
    with pytest.raises(InvalidArgumentError, match="'fragile' \\(_\\w+\\) could not be copied"):
        co.prune_low_magnitude(model, co.ConstantSparsity(0.5, 0))
    assert [type(layer).__name__ for layer in model.layers] == ["InputLayer", block().__class__.__name__, "Dense"]


@pytest.mark.slow
@pytest.mark.parametrize("build", [residual_cnn, block_transformer], ids=["residual_cnn", "transformer"])
def test_chain_reaches_every_kernel_inside_blocks_and_exports_full_int8(build, tmp_path):
    model = build()
    before = [keras.ops.convert_to_numpy(v).copy() for v in model.weights]
    x, y = _data(model)
    qat = pcqat_trained(model, x, y)
    for a, b in zip(before, model.weights):  # the input model is not modified
        np.testing.assert_array_equal(a, keras.ops.convert_to_numpy(b))

    path = str(tmp_path / "blocks.keras")
    qat.save(path)
    loaded = keras.models.load_model(path)
    for a, b in zip(qat.weights, loaded.weights):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))
    np.testing.assert_array_equal(qat.predict(x, verbose=0), loaded.predict(x, verbose=0))

    tflite = ct.convert(loaded, "int8", representative_data=x)  # raises on any float op
    assert tflite.float_islands() == []
    report = ct.verify(loaded, tflite)
    assert report.all_hold, str(report)
    assert {c.kind for c in report} == {"sparsity", "clusters"}
    # Every kernel of the model, inside the blocks too, is pruned and clustered in the file.
    assert report.reached_share(model) == pytest.approx(1.0), str(report)


def test_batchnorm_statistics_inside_a_block_train_under_pruning():
    model = residual_cnn()
    x, y = _data(model)
    pruned = co.prune_low_magnitude(model, co.ConstantSparsity(0.5, 0, frequency=1))
    block = co.strip_pruning(pruned).get_layer("res")  # a plain copy holding the current statistics
    start = keras.ops.convert_to_numpy(block.bn1.moving_mean).copy()
    train_steps(pruned, x, y, 2)
    moved = co.strip_pruning(pruned).get_layer("res")
    assert not np.allclose(keras.ops.convert_to_numpy(moved.bn1.moving_mean), start)
    kernel = keras.ops.convert_to_numpy(moved.conv1.kernel)
    assert np.mean(kernel == 0) == pytest.approx(0.5, abs=0.01)


def test_post_training_int8_of_blocks_with_layer_normalization_has_no_float_op():
    model = block_transformer()
    x, _ = _data(model)
    tflite = ct.convert(model, "int8", representative_data=x)
    assert tflite.float_islands() == [] and "NEG" not in tflite.ops()


def test_filter_pruning_treats_a_block_as_a_boundary_named_in_its_warning():
    inputs = keras.Input((12, 12, 3))
    x = L.Conv2D(8, 3, padding="same", name="c1")(inputs)
    x = L.Conv2D(8, 3, padding="same", name="c2")(x)
    x = ResidualBlock(8, name="res")(x)
    model = keras.Model(inputs, L.Dense(4, name="head")(L.GlobalAveragePooling2D()(x)))
    with pytest.warns(UserWarning, match="left alone c2 \\(they reach layer 'res' \\(ResidualBlock\\)"):
        pruned = co.prune_filters(model, pruning_ratio=0.5)
    stripped = co.strip_pruning(pruned)
    assert stripped.get_layer("c1").kernel.shape[-1] == 4  # pruned: its channels reach c2 only
    assert stripped.get_layer("c2").kernel.shape[-1] == 8  # kept: its channels enter the block


class Scale(L.Layer):  # a weight no technique knows
    def build(self, shape):
        self.w = self.add_weight(shape=(shape[-1], shape[-1]), name="w")

    def call(self, x):
        return x @ self.w


class PartlyKnown(L.Layer):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.dense = L.Dense(4)
        self.scale = Scale()
        self.gain = self.add_weight(shape=(4, 4), name="gain")

    def call(self, x):
        return self.scale(self.dense(x)) @ self.gain


def test_weights_inside_a_block_that_nothing_reaches_are_named():
    inputs = keras.Input((3,))
    model = keras.Model(inputs, PartlyKnown(name="blk")(inputs))
    with pytest.warns(UserWarning, match="left unchanged 2 weight\\(s\\) inside composite layers .*blk/scale/w, blk/gain"):
        pruned = co.prune_low_magnitude(model, co.ConstantSparsity(0.5, 0))
    assert [s.name for s in weight_specs(pruned.get_layer("prune_low_magnitude_blk").layer)] == ["dense/kernel"]


def test_qat_trains_a_range_for_each_tensor_between_sublayers_and_folds_batchnorm():
    from collabopt.layers.execution import composite_internal_tensors

    model = residual_cnn()
    x, y = _data(model)
    qat = co.quantize_model(model)
    train_steps(qat, x, y, 2)
    # bn1 and bn2 (the convs fold into them); not the block's output (a plain relu op's); a conv's
    # input when a plain op (relu) computes it.
    expected = {
        "res": ("bn1", "bn2", "conv2:input"),
        "stack": ("convs/0",),
        "nested": ("inner/bn1", "inner/bn2", "inner/conv2:input", "proj:input"),
    }
    for name, paths in expected.items():
        wrapper = qat.get_layer(f"quant_{name}")
        assert composite_internal_tensors(wrapper.base_layer) == paths
        internal = [(q, state) for label, q, state in wrapper.range_states() if label.startswith("internal")]
        assert len(internal) == len(paths)
        assert all(bool(keras.ops.convert_to_numpy(q.is_initialized(state))) for q, state in internal)
    folds = qat.get_layer("quant_res").internal_folds
    assert [(producer, bn) for _, producer, bn in folds] == [("conv1", "bn1"), ("conv2", "bn2")]
    # Stripped: the conv holds the folded, quantized kernel and its BN adds only the folded bias.
    bn = co.strip_quantization(qat).get_layer("res").bn1
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(bn.moving_mean), 0.0)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(bn.gamma), 1.0)


@pytest.mark.slow
@pytest.mark.parametrize(
    "technique",
    ["block_pruning", "2_by_4", "per_channel_clusters", "4_bit_qat"],
)
def test_other_techniques_reach_the_kernels_inside_blocks(technique):
    # 2:4 groups along input channels (4 at the input); blocks of 1x4 need rank-2 kernels (an MLP block).
    model = residual_cnn(channels=4) if technique == "2_by_4" else residual_cnn()
    if technique == "block_pruning":
        inputs = keras.Input((8, 16))
        x = L.GlobalAveragePooling1D()(MLPBlock(16, name="mlp_block")(L.Dense(16, name="embed")(inputs)))
        model = keras.Model(inputs, L.Dense(4, name="head")(x))
    x, y = _data(model)
    if technique == "block_pruning":
        optimized = co.prune_low_magnitude(model, co.ConstantSparsity(0.5, 0, frequency=1), block_size=(1, 4))
    elif technique == "2_by_4":
        optimized = co.prune_low_magnitude(model, sparsity_m_by_n=(2, 4))
    elif technique == "per_channel_clusters":
        optimized = co.cluster_weights(model, number_of_clusters=4, cluster_per_channel=True)
    else:
        optimized = co.quantize_model(model, co.DefaultNBitQuantizeScheme(num_bits_weight=4))
    train_steps(optimized, x, y, 2)
    tflite = ct.convert(optimized, "int8", representative_data=x)
    assert tflite.float_islands() == []
    report = ct.verify(optimized, tflite)
    if technique == "4_bit_qat":
        from collabopt.tflite.int4 import low_bit_weights

        # convert() checks that every 4-bit weight is stored as INT4 in the file.
        inside = [w for w in low_bit_weights(optimized) if w[0] in ("quant_res", "quant_stack", "quant_nested")]
        assert len(inside) == 7, low_bit_weights(optimized)
        assert "int4" in {t.dtype for t in tflite.inspect().weights()}
    else:
        assert report.all_hold and report.reached_share(model) == pytest.approx(1.0), str(report)


def test_mid_schedule_pruning_state_of_a_block_survives_a_reload(tmp_path):
    model = residual_cnn()
    x, y = _data(model)
    pruned = co.prune_low_magnitude(model, co.PolynomialDecay(0.0, 0.8, 0, 10, frequency=1))
    train_steps(pruned, x, y, 3)
    path = str(tmp_path / "mid.keras")
    pruned.save(path)
    loaded = keras.models.load_model(path)
    for a, b in zip(pruned.weights, loaded.weights):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))
    train_steps(pruned, x, y, 2)
    train_steps(loaded, x, y, 2)  # both go on from step 3 to the same masks
    for a, b in zip(pruned.weights, loaded.weights):
        if "mask" in a.path or "step" in a.path:
            np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))


def test_a_block_trains_under_mirrored_strategy(mirrored):
    with mirrored.scope():
        model = residual_cnn()
        pcqat = co.quantize_model(co.prune_low_magnitude(model, co.ConstantSparsity(0.5, 0, frequency=1)))
        pcqat.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = _data(model, batch=16)
    pcqat.fit(x, y, batch_size=8, epochs=1, verbose=0)
    wrapper = pcqat.get_layer("quant_res")
    assert all(bool(keras.ops.convert_to_numpy(q.is_initialized(s))) for _, q, s in wrapper.range_states())
    tflite = ct.convert(pcqat, "int8", representative_data=x)
    assert tflite.float_islands() == [] and ct.verify(pcqat, tflite).all_hold
