import keras
import numpy as np
import pytest

import collabopt.keras as co
import collabopt.tflite as ct
from collabopt.errors import ConversionError
from collabopt.quantization import quantize_wrappers
from collabopt.reference_models import compile_for_classification
from tests.conftest import MatMul, rand, train_steps

L = keras.layers


def parity_net():
    """Conv+BN+ReLU, DepthwiseConv+BN+ReLU, a residual Add, a fused-ReLU conv, GAP, Dense."""
    i = keras.Input((8, 8, 1))
    h = L.Conv2D(16, 3, padding="same", use_bias=False, name="c1")(i)
    h = L.BatchNormalization(momentum=0.9, name="bn1")(h)
    h = L.ReLU(name="r1")(h)
    d = L.DepthwiseConv2D(3, padding="same", name="dw")(h)
    d = L.BatchNormalization(momentum=0.9, name="bn2")(d)
    d = L.ReLU(name="r2")(d)
    s = L.Add(name="add")([h, d])
    s = L.Conv2D(24, 1, activation="relu", name="pw")(s)
    s = L.MaxPooling2D(name="pool")(s)
    g = L.Flatten(name="flat")(s)
    return keras.Model(i, L.Dense(10, name="fc")(g))


@pytest.fixture(scope="module")
def trained(digits_data):
    keras.utils.set_random_seed(0)
    (x, y), _ = digits_data
    model = compile_for_classification(parity_net())
    model.fit(x, y, epochs=10, batch_size=64, verbose=0)
    qat = compile_for_classification(co.quantize_model(model), 5e-4)
    qat.fit(x, y, epochs=2, batch_size=64, verbose=0)
    return model, qat


@pytest.mark.slow
def test_int8_file_computes_what_the_qat_model_trained(trained, digits_data):
    _, qat = trained
    (_, _), (xt, yt) = digits_data
    tfl = ct.convert(qat, "int8")  # no representative data: ranges come from training
    assert tfl.float_islands() == []
    assert tfl.input_details[0]["dtype"] == np.int8
    keras_logits = qat.predict(xt, verbose=0)
    tfl_logits = tfl.predict(xt)
    assert np.mean(keras_logits.argmax(1) == tfl_logits.argmax(1)) >= 0.99
    step = tfl.output_details[0]["quantization"][0]
    assert np.max(np.abs(keras_logits - tfl_logits)) <= 4 * step
    # BN folded and ReLUs fused: no separate BN, MUL or RELU ops.
    assert tfl.ops().count("CONV_2D") == 2 and "RELU" not in tfl.ops() and "MUL" not in tfl.ops()


@pytest.mark.slow
def test_batchnorm_is_folded_into_the_stored_kernel(trained):
    float_model, qat = trained
    tfl = ct.convert(qat, "int8")
    wrapper = qat.get_layer("quant_c1")
    bn = wrapper.folded_batchnorm
    kernel = wrapper.base_layer.kernel.numpy()
    scale = bn.gamma.numpy() / np.sqrt(bn.moving_variance.numpy() + bn.epsilon)
    folded = kernel * scale  # (3, 3, 1, 16)
    (stored,) = [t for t in tfl.inspect() if t.is_weight and t.shape == (16, 3, 3, 1)]
    from collabopt.tflite import flatbuffer

    data = [t.data for t in flatbuffer.parse(tfl.content).tensors if t.name == stored.name][0]
    dequant = data.astype(np.float32) * np.asarray(stored.scales).reshape(-1, 1, 1, 1)
    expected = np.transpose(folded, (3, 0, 1, 2))
    assert np.max(np.abs(dequant - expected)) <= 0.5 * max(stored.scales) + 1e-6
    assert qat.get_layer("bn1").__class__.__name__ == "FoldedBatchNormalization"


def test_fresh_qat_model_predicts_like_the_float_model(digits_data):
    keras.utils.set_random_seed(0)
    (x, y), (xt, yt) = digits_data
    model = compile_for_classification(parity_net())
    model.fit(x, y, epochs=4, batch_size=64, verbose=0)
    qat = compile_for_classification(co.quantize_model(model))
    float_acc = model.evaluate(xt, yt, verbose=0)[1]
    assert qat.evaluate(xt, yt, verbose=0)[1] >= float_acc - 0.02


def test_save_and_load_keeps_configs_and_ranges(trained, tmp_path):
    _, qat = trained
    qat.save(tmp_path / "qat.keras")
    loaded = keras.saving.load_model(tmp_path / "qat.keras")  # no quantize_scope needed
    x = rand(16, 8, 8, 1)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), qat.predict(x, verbose=0))
    for a, b in zip(quantize_wrappers(qat), quantize_wrappers(loaded)):
        assert a.quantize_config.get_config() == b.quantize_config.get_config()
        for (la, _qa, sa), (lb, _qb, sb) in zip(a.range_states(), b.range_states()):
            assert la == lb and float(sa["min"].numpy()) == float(sb["min"].numpy())
    assert ct.convert(loaded, "int8").content == ct.convert(qat, "int8").content


def test_int16x8_scheme_exports_int16_activations(digits_data):
    (x, y), (xt, yt) = digits_data
    model = compile_for_classification(parity_net())
    model.fit(x, y, epochs=2, batch_size=64, verbose=0)
    qat = compile_for_classification(co.quantize_model(model, co.Default16x8QuantizeScheme()))
    qat.fit(x, y, epochs=1, batch_size=64, verbose=0)
    tfl = ct.convert(qat, "int16x8", x[:100])
    assert tfl.input_details[0]["dtype"] == np.int16
    activations = {t.dtype for t in tfl.inspect() if not t.is_weight and t.dtype not in ("int32",)}
    assert activations == {"int16"}
    assert all(t.dtype == "int8" for t in tfl.inspect().weights() if len(t.shape) >= 2)
    assert abs(tfl.evaluate(xt, yt) - qat.evaluate(xt, yt, verbose=0)[1]) <= 0.02


def test_selective_annotation_quantizes_only_what_was_annotated():
    inputs = keras.Input((6,))
    h = co.quantize_annotate_layer(L.Dense(8, activation="relu", name="q"))(inputs)
    out = L.Dense(3, name="f")(h)
    model = keras.Model(inputs, out)
    qat = co.quantize_apply(model)
    names = {w.base_layer.name for w in quantize_wrappers(qat)}
    assert names == {"q"}
    assert type(qat.get_layer("f")).__name__ == "Dense"
    assert qat.get_layer("quant_q").quantize_inputs == [True]  # fed by the model input


def test_separate_relu_layer_is_fused_like_a_fused_activation(digits_data):
    (x, y), _ = digits_data

    def build(separate):
        i = keras.Input((8, 8, 1))
        if separate:
            h = L.ReLU(name="relu")(L.Conv2D(8, 3, name="conv")(i))
        else:
            h = L.Conv2D(8, 3, activation="relu", name="conv")(i)
        return keras.Model(i, L.Dense(10, name="fc")(L.Flatten()(h)))

    ops = []
    for separate in (False, True):
        qat = compile_for_classification(co.quantize_model(build(separate)))
        qat.fit(x[:256], y[:256], epochs=1, verbose=0)
        conv = qat.get_layer("quant_conv")
        assert conv.quantize_outputs is (not separate)
        ops.append(ct.convert(qat, "int8").ops())
    assert ops[0] == ops[1]  # same int8 graph either way


def test_nested_model_is_quantized():
    inner = keras.Sequential([keras.Input((6,)), L.Dense(6, activation="relu", name="inner_fc")], name="block")
    i = keras.Input((6,))
    model = keras.Model(i, L.Dense(2, name="head")(inner(i)))
    qat = co.quantize_model(model)
    assert {w.base_layer.name for w in quantize_wrappers(qat)} == {"inner_fc", "head"}
    assert qat.get_layer("block").get_layer("quant_inner_fc").quantize_inputs == [True]
    qat.compile(optimizer="adam", loss="mse")
    qat.fit(rand(32, 6), rand(32, 2), verbose=0)
    assert ct.convert(qat, "int8").float_islands() == []


def test_densenet_transition_exports_full_int8():
    """DenseNet's transition: conv -> AveragePooling2D, whose output feeds a BN and a Concatenate.

    TFLite's int8 AVERAGE_POOL_2D must keep its input's scale; a range of its
    own fails the conversion ("violate the same scale constraint").
    """
    i = keras.Input((8, 8, 3))
    h = L.ReLU(name="r0")(L.BatchNormalization(name="bn0")(L.Conv2D(8, 3, padding="same", use_bias=False, name="c0")(i)))
    p = L.AveragePooling2D(2, strides=2, name="trans_pool")(L.Conv2D(8, 1, use_bias=False, name="trans_conv")(h))
    b = L.ReLU(name="r1")(L.BatchNormalization(name="bn1")(p))
    h = L.Concatenate(name="cat")([p, L.Conv2D(4, 3, padding="same", use_bias=False, name="c1")(b)])
    model = keras.Model(i, L.Dense(3, name="fc")(L.GlobalAveragePooling2D(name="gap")(h)))
    qat = co.quantize_model(model)
    qat.compile(optimizer="adam", loss="mse")
    qat.fit(rand(32, 8, 8, 3), rand(32, 3), verbose=0)
    assert ct.convert(qat, "int8").float_islands() == []


def test_dense_over_feature_maps_exports_full_int8():
    """ConvNeXt's block: LayerNorm, Dense on (batch, h, w, c), GELU, Dense, residual Add."""
    i = keras.Input((4, 4, 3))
    h = L.LayerNormalization(epsilon=1e-6, name="ln")(L.Conv2D(8, 2, strides=2, name="down")(i))
    d = L.Dense(8, name="pw2")(L.Dense(16, activation="gelu", name="pw1")(h))
    h = L.Add(name="add")([h, L.Activation("linear", name="identity")(d)])
    model = keras.Model(i, L.Dense(3, name="fc")(L.GlobalAveragePooling2D(name="gap")(h)))
    qat = co.quantize_model(model)
    qat.compile(optimizer="adam", loss="mse")
    qat.fit(rand(16, 4, 4, 3), rand(16, 3), verbose=0)
    tflite = ct.convert(qat, "int8")
    assert tflite.float_islands() == []
    assert tflite.ops().count("FULLY_CONNECTED") == 3


def test_residuals_written_as_operators_export_full_int8():
    """ConvNeXt writes its residual as ``inputs + x``: a plain op, not an Add layer."""
    i = keras.Input((4, 4, 3))
    h = L.Conv2D(8, 2, name="stem")(i)
    for block in range(2):
        h = h + L.Dense(8, name=f"pw{block}")(L.DepthwiseConv2D(3, padding="same", name=f"dw{block}")(h))
    gate = L.Dense(8, name="gate")(h)
    h = keras.ops.maximum(h * gate, h - gate)
    model = keras.Model(i, L.Dense(3, name="fc")(L.GlobalAveragePooling2D(name="gap")(h)))
    qat = co.quantize_model(model)
    merges = {layer.name: type(layer.layer).__name__ for layer in qat.layers if hasattr(layer, "layer")}
    assert sorted(v for v in merges.values() if v in ("Add", "Multiply", "Subtract", "Maximum")) == [
        "Add", "Add", "Maximum", "Multiply", "Subtract",
    ]
    qat.compile(optimizer="adam", loss="mse")
    qat.fit(rand(16, 4, 4, 3), rand(16, 3), verbose=0)
    tflite = ct.convert(qat, "int8")
    assert tflite.float_islands() == []
    assert {"ADD", "SUB", "MUL", "MAXIMUM"} <= set(tflite.ops())


def test_calibrate_sets_ranges_without_training():
    model = keras.Sequential([keras.Input((6,)), L.Dense(8, activation="relu", name="a"), L.Dense(2, name="b")])
    qat = co.quantize_model(model)
    with pytest.raises(ValueError, match="have seen no data"):
        ct.convert(qat, "int8")
    before = [w.numpy().copy() for w in qat.trainable_weights]
    co.calibrate(qat, rand(64, 6))
    for a, b in zip(before, qat.trainable_weights):
        np.testing.assert_array_equal(a, b.numpy())
    assert ct.convert(qat, "int8").float_islands() == []


def test_unsupported_layers_warn_or_raise():
    model = keras.Sequential([keras.Input((4, 3)), L.GroupNormalization(1, name="gn"), L.Dense(2, name="d")])
    with pytest.warns(UserWarning, match=r"left in float.*gn \(GroupNormalization\)"):
        qat = co.quantize_model(model)
    assert type(qat.get_layer("gn")).__name__ == "GroupNormalization"
    with pytest.raises(ValueError, match=r"cannot quantize gn \(GroupNormalization\)"):
        co.quantize_model(model, strict=True)


def test_custom_config_and_quantizers():
    class Scale(MatMul):
        def get_optimizable_weights(self):
            return [co.WeightSpec("w", (-1,), 0)]

    inputs = keras.Input((4,))
    config = co.QuantizeConfig(
        weights={"w": co.LastValueQuantizer(4, symmetric=True, narrow_range=True)},
        outputs=[co.AllValuesQuantizer(8)],
    )
    model = keras.Model(inputs, co.quantize_annotate_layer(Scale(3, name="scale"), config)(inputs))
    qat = co.quantize_apply(model)
    wrapper = qat.get_layer("quant_scale")
    w = wrapper.final_weights()["w"]
    assert len(np.unique(w)) <= 15  # 4-bit narrow range


@pytest.mark.parametrize(
    "make,match",
    [
        (lambda: co.LastValueQuantizer(num_bits=1), r"num_bits must be an integer in \[2, 16\]"),
        (lambda: co.MovingAverageQuantizer(num_bits=17), r"num_bits must be an integer in \[2, 16\]"),
        (lambda: co.MovingAverageQuantizer(per_axis=True), "per_axis=True is not supported"),
        (lambda: co.FixedQuantizer(init_min=1.0, init_max=2.0), "init_min <= 0 <= init_max"),
    ],
)
def test_bad_quantizers(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_bad_input_names_the_layer():
    model = keras.Sequential([keras.Input((6,)), L.Dense(4, name="d")])
    qat = co.quantize_model(model)
    with pytest.raises(ValueError, match=r"layers \['d'\] are already quantized"):
        co.quantize_model(qat)
    bad = co.QuantizeConfig(weights={"nope": co.LastValueQuantizer()})
    with pytest.raises(ValueError, match=r"layer 'd' \(Dense\): the quantize config names weights \['nope'\]"):
        co.quantize_apply(keras.Sequential([keras.Input((6,)), co.quantize_annotate_layer(L.Dense(4, name="d"), bad)]))
    unknown = L.GroupNormalization(1, name="gn")
    unknown.build((None, 4, 2))
    with pytest.raises(ValueError, match=r"layer 'gn' \(GroupNormalization\).*needs a QuantizeConfig"):
        co.quantize_annotate_layer(unknown)
    with pytest.raises(ValueError, match="has no annotated layers"):
        co.quantize_apply(model)
    with pytest.raises(ValueError, match="unknown constraint kinds"):
        co.quantize_model(model, preserve=("sparsity", "colour"))
    with co.quantize_scope():
        pass


def test_qat_trains_under_mirrored_strategy_and_converts(mirrored):
    with mirrored.scope():
        model = keras.Sequential([keras.Input((8, 8, 1)), L.Conv2D(8, 3, name="conv"), L.ReLU(name="relu"), L.Flatten(), L.Dense(10, name="fc")])
        qat = co.quantize_model(model)
        qat.compile(optimizer="adam", loss="mse")
    qat.fit(rand(32, 8, 8, 1), rand(32, 10), batch_size=8, epochs=1, verbose=0)
    wrapper = qat.get_layer("quant_relu")
    (_, quantizer, state) = wrapper.range_states()[0]
    assert float(state["initialized"].numpy()) == 1.0 and float(state["max"].numpy()) > 0
    assert ct.convert(qat, "int8").float_islands() == []


@pytest.mark.parametrize("rank", [1, 2])
def test_transposed_convolutions_export_full_int8(rank):
    """The converter transposes a transposed conv's kernel, so its kernel is quantized per tensor."""
    shape, conv, up = ((12, 3), L.Conv1D, L.Conv1DTranspose) if rank == 1 else ((8, 8, 3), L.Conv2D, L.Conv2DTranspose)
    i = keras.Input(shape)
    h = up(8, 3, strides=2, padding="same", name="up")(conv(8, 3, strides=2, padding="same", name="down")(i))
    model = keras.Model(i, L.Dense(3, name="fc")(L.Flatten()(h)))
    pruned = co.prune_low_magnitude(model, co.ConstantSparsity(0.5, 0, frequency=1))
    pruned(rand(4, *shape), training=True)
    qat = co.quantize_model(co.strip_pruning(pruned))
    qat.compile(optimizer="adam", loss="mse")
    qat.fit(rand(16, *shape), rand(16, 3), verbose=0)
    tflite = ct.convert(qat, "int8")
    assert tflite.float_islands() == [] and "TRANSPOSE_CONV" in tflite.ops()
    report = ct.verify(qat, tflite)
    assert report.all_hold and "up" in {c.layer for c in report}, str(report)


def test_average_of_branches_exports_full_int8_from_trained_ranges():
    """Average is ADD then MUL in TFLite: the sum between them gets its own trained range."""
    i = keras.Input((6, 6, 3))
    branches = [L.Conv2D(4, k, padding="same", name=f"b{k}")(i) for k in (1, 3, 5)]
    model = keras.Model(i, L.Dense(3, name="fc")(L.GlobalAveragePooling2D()(L.Average(name="avg")(branches))))
    qat = co.quantize_model(model)
    x = rand(16, 6, 6, 3)
    np.testing.assert_allclose(qat.predict(x, verbose=0), model.predict(x, verbose=0), atol=0.05)
    qat.compile(optimizer="adam", loss="mse")
    qat.fit(x, rand(16, 3), verbose=0)
    tflite = ct.convert(qat, "int8")
    assert tflite.float_islands() == []
    np.testing.assert_allclose(tflite.predict(x), qat.predict(x, verbose=0), atol=0.05)


@pytest.mark.parametrize("reshape", ["flatten", "reshape", "reshape_flatten"])
def test_untrained_layer_normalization_then_reshape_exports_full_int8(reshape):
    """gamma = 1 and beta = 0: the converter folds ``* 1`` and ``+ 0``; the export quantizes that tensor once.

    (Before: 'tfl.reshape' ... 'violate the same scale constraint', the two
    ranges of one tensor meeting at the reshape.)
    """
    keras.utils.set_random_seed(5)
    i = keras.Input((6, 4))
    h = L.LayerNormalization(name="ln")(L.Dense(4, name="proj")(i))
    h = {
        "flatten": lambda: L.Flatten(name="flat")(h),
        "reshape": lambda: L.Reshape((24,), name="rs")(h),
        "reshape_flatten": lambda: L.Flatten(name="flat")(L.Reshape((4, 6), name="rs")(h)),
    }[reshape]()
    qat = co.quantize_model(keras.Model(i, L.Dense(3, name="head")(h)))
    x = np.random.default_rng(5).random((16, 6, 4)).astype("float32") * 10.2 - 5
    qat(x, training=True)  # ranges only: gamma and beta keep their initial values
    qat(x[:8] * 2, training=True)
    tflite = ct.convert(qat, "int8")
    assert tflite.float_islands() == []
    np.testing.assert_allclose(tflite.predict(x), qat.predict(x, verbose=0), atol=0.15)


def test_layer_normalization_ranges_stay_finite_when_a_variance_quantizes_to_zero():
    """A near-constant row's variance rounds to 0 on the variance's int8 grid; RSQRT overflows, the range must not."""
    i = keras.Input((8,))
    qat = co.quantize_model(keras.Model(i, L.LayerNormalization(name="ln")(L.Dense(8, name="proj")(i))))
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(0, 30, (7, 8)), np.full((1, 8), 0.5) + rng.normal(0, 1e-3, (1, 8))]).astype("float32")
    qat(x, training=True)
    ranges = {w.path: float(w.numpy()) for w in qat.weights if w.path.endswith(("_min", "_max"))}
    assert all(np.isfinite(v) for v in ranges.values()), ranges
    assert np.all(np.isfinite(qat.predict(x, verbose=0)))
    assert ct.convert(qat, "int8").float_islands() == []


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_layer_normalization_then_flatten_exports_full_int8(seed):
    """The converter reads a range back in double and float32; ranges on a float32-exact grid agree.

    (Before: 'tfl.reshape' ... 'violate the same scale constraint' with scales
    differing in the last float32 bit.)
    """
    keras.utils.set_random_seed(seed)
    i = keras.Input((6, 4))
    h = L.Flatten(name="flat")(L.LayerNormalization(name="ln")(L.Dense(4, name="proj")(i)))
    model = keras.Model(i, L.Dense(3, name="head")(h))
    qat = co.quantize_model(model)
    x = np.random.default_rng(seed).random((16, 6, 4)).astype("float32") * 3
    qat(x, training=True)
    qat(x[:8] * 2, training=True)
    tflite = ct.convert(qat, "int8")
    assert tflite.float_islands() == []
    np.testing.assert_allclose(tflite.predict(x), qat.predict(x, verbose=0), atol=0.1)


@pytest.mark.parametrize("bidirectional", [False, True], ids=["gru", "bigru"])
def test_gru_returning_sequences_exports_full_int8_after_qat(bidirectional):
    # Each unrolled step's ADD is both a sequence element and the next state;
    # with the sequence's trained range as well, the converter left the ADDs
    # in float. Export leaves that output to calibration.
    gru = L.GRU(6, return_sequences=True, name="gru")
    model = keras.Sequential(
        [keras.Input((8, 5)), L.Bidirectional(gru, name="bigru") if bidirectional else gru, L.Flatten(), L.Dense(3)]
    )
    x = np.random.default_rng(0).normal(size=(16, 8, 5)).astype("float32")
    qat = co.quantize_model(model)
    train_steps(qat, x, np.arange(16) % 3)
    tflite = ct.convert(qat, "int8", representative_data=x)  # raises on a float op
    assert tflite.float_islands() == []
    agree = (tflite.predict(x).argmax(1) == qat.predict(x, verbose=0).argmax(1)).mean()
    assert agree >= 0.75, agree


@pytest.mark.parametrize("clustered", [False, True], ids=["qat", "cqat"])
def test_conv3d_trains_with_per_channel_weights_and_stays_a_named_float_op(clustered):
    """TF's per-channel fake-quant gradient takes rank <= 4; a Conv3D kernel is rank 5.

    LiteRT has no int8 CONV_3D (post-training int8 leaves it float too), so
    the file keeps it float: by default convert names it, and with
    ``allow_float_islands`` the rest of the model is int8.
    """
    i = keras.Input((4, 6, 6, 2))
    h = L.Conv3D(4, 3, padding="same", activation="relu", name="c3")(i)
    model = keras.Model(i, L.Dense(3, name="fc")(L.GlobalAveragePooling3D()(h)))
    if clustered:
        model = co.strip_clustering(co.cluster_weights(model, number_of_clusters=4))
    qat = co.quantize_model(model)
    qat(rand(2, 4, 6, 6, 2), training=True)  # an eager call
    qat.compile(optimizer="adam", loss="mse")
    # the kernel itself, or (CQAT) its centroids
    trained = [w for w in qat.get_layer("quant_c3").trainable_weights if w.path.endswith(("kernel", "centroids"))]
    before = [w.numpy().copy() for w in trained]
    qat.fit(rand(8, 4, 6, 6, 2), rand(8, 3), verbose=0)
    # the gradient reached them through the rank-5 fake quant
    assert trained and all(not np.array_equal(b, w.numpy()) for b, w in zip(before, trained))
    with pytest.raises(ConversionError, match="CONV_3D"):
        ct.convert(qat, "int8")
    tflite = ct.convert(qat, "int8", allow_float_islands=True)
    islands = tflite.float_islands()
    assert "CONV_3D" in {island["op"] for island in islands}
    assert all("c3" in name for island in islands for name in island["float_tensors"]), islands  # only the Conv3D
    if clustered:
        report = ct.verify(qat, tflite)
        assert report.all_hold and "c3" in {c.layer for c in report}, str(report)


@pytest.mark.parametrize(
    "augmentation",
    [L.RandomFlip, lambda: L.RandomRotation(0.1), lambda: L.RandomZoom(0.1), lambda: L.RandomContrast(0.2)],
    ids=["flip", "rotation", "zoom", "contrast"],
)
def test_augmentation_layers_export_full_int8_after_qat(augmentation):
    """Random augmentation is the identity at inference: no scale of its own, so no requantize in the file."""
    i = keras.Input((8, 8, 3))
    h = augmentation()(i)
    h = L.Conv2D(4, 3, activation="relu", name="c")(h)
    model = keras.Model(i, L.Dense(3, name="fc")(L.GlobalAveragePooling2D()(h)))
    qat = co.quantize_model(model)
    qat.compile(optimizer="adam", loss="mse")
    qat.fit(rand(8, 8, 8, 3), rand(8, 3), verbose=0)
    tflite = ct.convert(qat, "int8")
    assert tflite.float_islands() == [] and "DEQUANTIZE" not in tflite.ops()


def _attention_over_an_op(cls_token):
    """MultiHeadAttention(x, x) where x comes from plain ops (not layers), so both of its inputs need ranges."""
    from keras import ops

    i = keras.Input((6, 8))
    h = L.Dense(8, name="embed")(i)
    token = cls_token(h[:, :1, :])
    x = ops.concatenate([token, h], axis=1)
    a = L.MultiHeadAttention(2, 4, name="mha")(x, x)
    return keras.Model(i, L.Dense(3, name="fc")(L.GlobalAveragePooling1D()(a)))


def test_attention_value_given_positionally_gets_its_own_trained_range():
    model = _attention_over_an_op(lambda t: t * 0.0)
    qat = co.quantize_model(model)
    wrapper = qat.get_layer("quant_mha")
    assert wrapper.quantize_inputs == [True, True]  # query and value both come from an op
    x = rand(16, 6, 8)
    qat.compile(optimizer="adam", loss="mse")
    qat.fit(x, rand(16, 3), verbose=0)
    assert all(bool(q.is_initialized(state)) for _, q, state in wrapper.range_states())
    tflite = ct.convert(qat, "int8", representative_data=x)  # raises on any float op
    assert tflite.float_islands() == []


def test_a_converter_failure_without_a_message_is_explained():
    """TF 2.21's converter stops with an empty RuntimeError when it calibrates a QAT model holding ZEROS_LIKE."""
    from keras import ops

    qat = co.quantize_model(_attention_over_an_op(ops.zeros_like))
    x = rand(16, 6, 8)
    qat.compile(optimizer="adam", loss="mse")
    qat.fit(x, rand(16, 3), verbose=0)
    with pytest.raises(ConversionError, match=r"stopped with RuntimeError and no message.*ZEROS_LIKE"):
        ct.convert(qat, "int8", representative_data=x, allow_float_islands=True)
    islands = ct.convert(qat, "int8", allow_float_islands=True).float_islands()  # the route the message gives
    assert "ZEROS_LIKE" in {island["op"] for island in islands}


@pytest.mark.parametrize("merge", ["op", "layer"])
def test_a_layer_shared_between_call_sites_exports_full_int8(merge):
    """A siamese encoder: one wrapper, two calls; each input position gets one trained range."""
    from keras import ops

    a, b = keras.Input((8,), name="a"), keras.Input((8,), name="b")
    shared = L.Dense(8, activation="relu", name="shared")
    ea, eb = shared(a), shared(b)
    d = ops.abs(ea - eb) if merge == "op" else L.Subtract(name="sub")([ea, eb])
    model = keras.Model([a, b], L.Dense(2, name="fc")(d))
    qat = co.quantize_model(model)
    assert qat.get_layer("quant_shared").quantize_inputs == [True]
    x = [rand(16, 8, seed=1), rand(16, 8, seed=2)]
    qat.compile(optimizer="adam", loss="mse")
    qat.fit(x, rand(16, 2), verbose=0)
    tflite = ct.convert(qat, "int8", representative_data=x)  # raises on any float op
    assert tflite.float_islands() == []
    np.testing.assert_allclose(tflite.predict(x), qat.predict(x, verbose=0), atol=0.1)


def test_weightless_user_code_at_the_input_computes_in_int8_with_calibration():
    # A Lambda's ops take their ranges from calibration; a trained range on
    # its input only added a DEQUANTIZE / QUANTIZE pair before them.
    from tests.conftest import pcqat_trained

    L = keras.layers
    inputs = keras.Input((8, 8, 1))
    x = L.Lambda(lambda t: t * 2.0 - 1.0, name="scale")(inputs)
    x = L.GlobalAveragePooling2D()(L.Conv2D(8, 3, activation="relu")(x))
    model = keras.Model(inputs, L.Dense(4)(x))
    x = np.random.default_rng(0).random((8, 8, 8, 1)).astype("float32")
    qat = pcqat_trained(model, x, np.arange(8) % 4)
    tflite = ct.convert(qat, "int8", representative_data=x)
    assert tflite.float_islands() == []
    assert tflite.ops()[:2] == ["MUL", "SUB"]
    assert ct.verify(qat, tflite).all_hold


def test_an_all_zero_output_channel_keeps_its_bias_in_the_int8_file():
    """A weight range of 0 (a channel pruning emptied) once made the converter saturate that channel's int32 bias."""
    conv = keras.layers.Conv2D(4, 1)
    inputs = keras.Input((8, 8, 3))
    model = keras.Model(inputs, conv(inputs))
    kernel = np.random.default_rng(0).normal(size=(1, 1, 3, 4)).astype("float32")
    kernel[..., 0] = 0
    conv.kernel.assign(kernel)
    conv.bias.assign(np.array([1.0, -0.5, 0.3, 0.2], "float32"))
    x = np.random.default_rng(1).normal(size=(16, 8, 8, 3)).astype("float32")
    qat = co.quantize_model(model)
    co.calibrate(qat, x)
    got = ct.convert(qat, "int8").predict(x)
    np.testing.assert_allclose(got[..., 0], 1.0, atol=0.05)  # was 0.26
    assert np.abs(got - keras.ops.convert_to_numpy(qat(x))).max() < 0.1


@pytest.mark.parametrize("conv", ["conv1d", "conv2d"])
def test_a_relu_after_a_folded_batchnorm_fuses_into_the_conv(conv):
    """Conv -> BN -> ReLU: the conv's output is not quantized before the ReLU, which TFLite fuses into it.

    An extra range there left a separate RELU in Conv1D files (int8 Conv1D keyword spotter: 36 us
    against 10 us post-training, benchmarks/RESULTS.md "filter pruning: kws_conv1d").
    """
    from collabopt.tflite.flatbuffer import parse

    one_d = conv == "conv1d"
    inputs = keras.Input((32, 8) if one_d else (8, 8, 4))
    layer = L.Conv1D(16, 3, padding="same", name="c") if one_d else L.Conv2D(16, 3, padding="same", name="c")
    h = L.ReLU(name="r")(L.BatchNormalization(name="bn")(layer(inputs)))
    pool = L.GlobalAveragePooling1D() if one_d else L.GlobalAveragePooling2D()
    bn_out = L.BatchNormalization(name="bn_out")(L.Dense(4, name="fc")(pool(h)))  # a folded BN that is the model's output
    model = keras.Model(inputs, bn_out)
    x = rand(64, *inputs.shape[1:])
    qat = co.quantize_model(model)
    assert not qat.get_layer("quant_c").output_quantizers  # fused: the ReLU's range is the conv's
    assert len(qat.get_layer("quant_fc").output_quantizers) == 1  # its folded BN is the model's output: quantized
    qat.compile("adam", "mse")
    qat.fit(x, np.zeros((64, 4)), epochs=1, verbose=0)
    tfl = ct.convert(qat, "int8")
    ops_in_file = {op.op for op in parse(tfl.content).operators}
    assert "RELU" not in ops_in_file, ops_in_file
    np.testing.assert_allclose(tfl.predict(x[:16]), qat.predict(x[:16], verbose=0), atol=0.05 * float(np.ptp(qat.predict(x[:16], verbose=0))))
