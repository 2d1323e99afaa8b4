"""Filter pruning chained with clustering and QAT, exported to TFLite."""

import keras
import numpy as np
import pytest

import collabopt.keras as co
import collabopt.tflite as ct
from collabopt.layers import wrapper_chain
from collabopt.preserve import constraints_on
from collabopt.tflite.flatbuffer import parse
from tests.conftest import rand
from tests.filter_pruning.models import ALL


def _fit(model, x, y, epochs=1):
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, batch_size=8, epochs=epochs, verbose=0)
    return model


def _data(model, n=32):
    x = rand(n, *model.input_shape[1:])
    y = np.random.default_rng(1).integers(0, model.output_shape[-1], n)
    return x, y


@pytest.mark.slow
def test_prune_strip_cluster_quantize_exports_full_int8():
    model = ALL["depthwise"]()
    x, y = _data(model)
    pruned = _fit(co.prune_filters(model, 0.5), x, y)
    small = co.strip_pruning(pruned)
    clustered = _fit(co.cluster_weights(small, number_of_clusters=8), x, y)
    qat = _fit(co.quantize_model(clustered), x, y)
    tfl = ct.convert(qat, "int8")  # raises ConversionError on a float island
    assert not tfl.float_islands()
    kernels = [t for t in tfl.inspect().weights() if t.dtype == "int8" and len(t.shape) == 4]
    assert kernels and max(t.shape[0] for t in kernels if t.shape[0] != 1) <= 6  # 12 -> 6 pointwise filters
    assert max(t.max_unique_per_channel for t in kernels) <= 8
    np.testing.assert_allclose(tfl.predict(x[:4]), qat.predict(x[:4], verbose=0), atol=0.35)


@pytest.mark.slow
def test_prune_then_quantize_without_strip_exports_the_smaller_graph():
    """convert() of quantize_model(prune_filters(m)) removes the pruned channels: the file of the strip-first route."""
    model = ALL["depthwise"]()
    x, y = _data(model)
    pruned = _fit(co.prune_filters(model, 0.5), x, y)
    qat = _fit(co.quantize_model(pruned), x, y)
    conv = next(l for l in qat.layers if l.name.endswith("conv1"))
    recorded = constraints_on(conv, "kernel")
    assert {"channels", "sparsity"} <= set(recorded)
    tfl = ct.convert(qat, "int8")
    graph = parse(tfl.content)
    shapes = {t.data.shape for t in graph.tensors if t.data is not None}
    assert (4, 3, 3, 1) in shapes and (8, 3, 3, 1) not in shapes  # conv1 keeps 4 of its 8 filters
    strip_first = _fit(co.quantize_model(co.strip_pruning(pruned)), x, y)
    kept = {t.data.shape for t in parse(ct.convert(strip_first, "int8").content).tensors if t.data is not None}
    assert shapes == kept
    assert abs(tfl.size_report().raw_bytes - ct.convert(strip_first, "int8").size_report().raw_bytes) <= 0.02 * tfl.size_report().raw_bytes
    report = ct.verify(qat, tfl)
    assert report.all_hold and any(c.kind == "channels" and c.channels_removed for c in report), report
    assert not tfl.float_islands()
    agree = np.mean(tfl.predict(x).argmax(-1) == keras.ops.convert_to_numpy(qat(x)).argmax(-1))
    assert agree >= 0.995, agree


@pytest.mark.slow
def test_sparsity_preserving_clustering_keeps_the_pruned_channels():
    model = ALL["depthwise"]()
    x, y = _data(model)
    pruned = co.prune_filters(model, 0.5)
    clustered = _fit(co.cluster_weights(pruned, number_of_clusters=8, preserve_sparsity=True), x, y)
    conv = next(l for l in clustered.layers if l.name.endswith("conv1"))
    kernel = conv.final_weights()["kernel"]
    pruned_channels = conv.layer.pruned_output_channels()
    assert np.all(kernel[..., pruned_channels] == 0) and np.any(kernel[..., ~pruned_channels] != 0)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["float32", "float16", "dynamic", "int8", "int16x8"])
def test_stripped_model_converts_to_every_mode(mode):
    model = ALL["depthwise"]()
    x, y = _data(model)
    small = co.strip_pruning(_fit(co.prune_filters(model, 0.5), x, y))
    tfl = ct.convert(small, mode, representative_data=x if mode in ("int8", "int16x8") else None)
    tol = 1e-4 if mode == "float32" else 0.5
    np.testing.assert_allclose(tfl.predict(x[:4]), small.predict(x[:4], verbose=0), atol=tol)


@pytest.mark.slow
def test_pruned_channels_of_a_conv_without_batchnorm_leave_the_file_after_qat():
    # No BN to fold: the pruned channels' zero output came from their bias
    # alone, trained under QAT; the file drops them and keeps the others' biases.
    x_in = keras.Input((8, 8, 1))
    h = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv")(x_in)
    h = keras.layers.GlobalAveragePooling2D(name="gap")(h)
    model = keras.Model(x_in, keras.layers.Dense(3, name="logits")(h))
    model.get_layer("conv").bias.assign(np.linspace(0.1, 0.8, 8).astype("float32"))
    x, y = _data(model)
    qat = _fit(co.quantize_model(_fit(co.prune_filters(model, 0.5), x, y)), x, y)
    conv = qat.get_layer("quant_conv")
    pruned_channels = next(p for w in wrapper_chain(conv) if (p := w.pruned_output_channels()) is not None)
    assert pruned_channels.sum() == 4
    tfl = ct.convert(qat, "int8")
    graph = parse(tfl.content)
    op = next(o for o in graph.operators if o.op == "CONV_2D")
    bias = graph.tensors[op.inputs[2]].data
    assert bias.shape == (4,) and np.all(bias != 0)  # the pruned channels are gone, the others keep their bias
    np.testing.assert_allclose(tfl.predict(x), keras.ops.convert_to_numpy(qat(x)), atol=0.05 * np.ptp(keras.ops.convert_to_numpy(qat(x))))


def _biased_cnn():
    """A conv with a bias and a fused ReLU, then conv -> BN -> ReLU (QAT folds the BN), on 8x8 digits."""
    L = keras.layers
    inputs = keras.Input((8, 8, 1))
    x = L.Conv2D(16, 3, padding="same", activation="relu", name="c1")(inputs)
    x = L.Conv2D(16, 3, padding="same", name="c2")(x)
    x = L.ReLU()(L.BatchNormalization()(x))
    x = L.Flatten()(L.MaxPooling2D()(x))
    return keras.Model(inputs, L.Dense(10)(x))


@pytest.mark.slow
def test_qat_on_a_filter_pruned_model_computes_what_its_int8_file_computes(digits_data):
    """The pruned channels' biases and folded BN corrections train under QAT; they output zeros in both."""
    (x, y), (xt, _) = digits_data
    model = _fit(_biased_cnn(), x, y, epochs=3)
    pruned = _fit(co.prune_filters(model, co.ConstantRatio(0.5)), x, y, epochs=1)
    qat = _fit(co.quantize_model(pruned), x, y, epochs=2)
    for name in ("c1", "c2"):
        layer = next(l for l in qat.layers if l.name.endswith(name))
        assert any(w.pruned_output_channels() is not None and w.pruned_output_channels().sum() == 8 for w in wrapper_chain(layer))
    tfl = ct.convert(qat, "int8")
    assert not tfl.float_islands()
    got, expected = tfl.predict(xt), qat.predict(xt, verbose=0)
    assert np.mean(got.argmax(-1) == expected.argmax(-1)) >= 0.995
    # Within int8 rounding of the logits (the pruned channels' trained biases
    # once made the file differ by 3.5% of the logit range).
    assert np.abs(got - expected).max() < 0.015 * np.ptp(expected)


def test_strip_quantization_of_a_filter_pruned_qat_model_removes_the_pruned_channels():
    inputs = keras.Input((16,))
    model = keras.Model(inputs, keras.layers.Dense(4)(keras.layers.Dense(8, name="fc")(inputs)))
    model.get_layer("fc").bias.assign(np.linspace(-1, 1, 8).astype("float32"))
    x = rand(16, 16)
    qat = co.quantize_model(co.prune_filters(model, co.ConstantRatio(0.5)))
    qat(x, training=True)
    plain = co.strip_quantization(qat)
    fc = plain.get_layer("fc")
    assert fc.units == 4 and not wrapper_chain(fc)  # the pruned channels are removed, as strip_pruning removes them
    np.testing.assert_allclose(keras.ops.convert_to_numpy(plain(x)), keras.ops.convert_to_numpy(qat(x)), atol=0.1)  # was 0.91 off


def test_direct_chain_removes_channels_inside_a_nested_sequential():
    """A group inside a nested Sequential block (conv, folded BN, depthwise) leaves the direct chain's file too."""
    L = keras.layers
    inputs = keras.Input((8, 8, 1))
    x = L.Conv2D(8, 3, padding="same", name="stem")(inputs)
    block = keras.Sequential(
        [keras.Input((8, 8, 8)), L.Conv2D(8, 3, padding="same", name="b_conv"), L.BatchNormalization(name="b_bn"), L.ReLU(),
         L.DepthwiseConv2D(3, padding="same", name="b_dw"), L.ReLU(), L.Conv2D(8, 1, name="b_project")],
        name="block",
    )
    x = L.Add()([x, block(x)])
    model = keras.Model(inputs, L.Dense(3, name="logits")(L.GlobalAveragePooling2D()(x)))
    x_data, y = _data(model)
    pruned = co.prune_filters(model, co.ConstantRatio(0.5))
    direct = _fit(co.quantize_model(pruned), x_data, y)
    strip_first = _fit(co.quantize_model(co.strip_pruning(pruned)), x_data, y)

    def shapes(qat):
        return sorted(t.data.shape for t in parse(ct.convert(qat, "int8").content).tensors if t.data is not None)

    assert shapes(direct) == shapes(strip_first)
    assert (4, 3, 3, 4) in shapes(direct)  # b_conv: 4 of 8 filters, reading 4 of stem's 8 channels
