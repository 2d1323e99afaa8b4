"""Weights trained at 4 bits are stored as INT4 tensors holding exactly the trained integers."""

import re

import keras
import numpy as np
import pytest
from keras import ops

import collabopt.keras as co
import collabopt.tflite as ct
from collabopt.errors import ConversionError, InvalidArgumentError, InvalidFileError
from collabopt.layers import wrapper_chain
from collabopt.quantization import quantize_wrappers
from collabopt.reference_models import compile_for_classification
from collabopt.tflite import flatbuffer
from collabopt.tflite.int4 import check_int4_storage, low_bit_weights

L = keras.layers
SCHEME4 = co.DefaultNBitQuantizeScheme(num_bits_weight=4, num_bits_activation=8)


def net():
    """Conv2D, DepthwiseConv2D and Dense, each carrying a kernel to store as INT4."""
    i = keras.Input((8, 8, 1))
    h = L.Conv2D(8, 3, padding="same", activation="relu", name="conv")(i)
    h = L.DepthwiseConv2D(3, padding="same", activation="relu", name="dw")(h)
    h = L.MaxPooling2D(name="pool")(h)
    h = L.Flatten(name="flat")(h)
    return keras.Model(i, L.Dense(10, name="fc")(h))


def trained_int4_ints(wrapper, name="kernel"):
    """The 4-bit integers the QAT model trains with: round(w_q / scale), scale = max|w| / 7 per range."""
    spec = wrapper.spec(name)
    quantizer = wrapper.weight_quantizers[name]
    raw = ops.convert_to_numpy(wrapper.inner_weights()[name])
    if wrapper.folded_batchnorm is not None:
        raw = ops.convert_to_numpy(wrapper._fold(ops.convert_to_tensor(raw), name))
    fq = ops.convert_to_numpy(wrapper.effective_weights(False)[name])
    if quantizer.per_axis:
        axes = tuple(a % raw.ndim for a in spec.channel_axes)
        other = tuple(a for a in range(raw.ndim) if a not in axes)
        m = np.max(np.abs(raw), axis=other, keepdims=True)
    else:
        m = np.max(np.abs(raw))
    return np.round(fq / (m / 7)).astype(np.int8)


@pytest.fixture(scope="module")
def qat4(digits_data):
    keras.utils.set_random_seed(0)
    (x, y), _ = digits_data
    model = compile_for_classification(net())
    model.fit(x, y, epochs=3, batch_size=64, verbose=0)
    qat = compile_for_classification(co.quantize_model(model, scheme=SCHEME4), 5e-4)
    qat.fit(x, y, epochs=2, batch_size=64, verbose=0)
    return qat, ct.convert(qat, "int8")


def _names(tensor_name, layer):
    """Whether a flatbuffer tensor name belongs to ``layer`` (Keras appends ``_<n>`` to scope names)."""
    return re.search(rf"(?<![\w]){re.escape(layer)}(?:_\d+)?/", tensor_name) is not None


def _weight(tfl, layer):
    graph = flatbuffer.parse(tfl.content)
    (tensor,) = [t for t in graph.tensors if t.data is not None and _names(t.name, layer) and t.data.ndim >= 2]
    return tensor


def _stats(tfl, layer):
    (stats,) = [t for t in tfl.inspect().weights() if _names(t.name, layer) and len(t.shape) >= 2]
    return stats


def test_unpack_int4_low_nibble_first():
    # Bytes 0xFF, 0x00, 0x41, 0x81: LiteRT's UnpackPackedIntToInt8 reads low nibble, then high.
    raw = np.array([-1, 0, 65, -127], np.int8).tobytes()
    assert flatbuffer.unpack_int4(raw, 8).tolist() == [-1, -1, 0, 0, 1, 4, 1, -8]
    assert flatbuffer.unpack_int4(raw[:2], 3).tolist() == [-1, -1, 0]
    with pytest.raises(InvalidFileError, match="INT4 buffer of 1 bytes"):
        flatbuffer.unpack_int4(raw[:1], 3)


@pytest.mark.slow
def test_conv_depthwise_dense_kernels_are_int4(qat4):
    _, tfl = qat4
    for layer in ("quant_conv", "quant_dw", "quant_fc"):
        assert _stats(tfl, layer).dtype == "int4", layer
        values = _weight(tfl, layer).data
        assert -7 <= values.min() and values.max() <= 7
    assert tfl.float_islands() == []
    # Packed two per byte: 8*3*3*1 conv values take 36 bytes.
    assert _weight(tfl, "quant_conv").nbytes == 8 * 9 // 2


@pytest.mark.slow
def test_stored_integers_are_the_trained_4bit_weights(qat4):
    qat, tfl = qat4
    wrappers = {w.base_layer.name: w for w in quantize_wrappers(qat)}
    layouts = {
        "conv": lambda k: np.transpose(k, (3, 0, 1, 2)),  # (h, w, in, out) -> (out, h, w, in)
        "dw": lambda k: k.reshape(1, k.shape[0], k.shape[1], -1),  # (h, w, in, mult) -> (1, h, w, in*mult)
        "fc": lambda k: k.T,  # (in, out) -> (out, in)
    }
    for name, layout in layouts.items():
        expected = layout(trained_int4_ints(wrappers[name]))
        stored = _weight(tfl, f"quant_{name}")
        np.testing.assert_array_equal(stored.data, expected, err_msg=name)
    # Conv and depthwise are per channel, Dense per tensor.
    assert len(_weight(tfl, "quant_conv").scales) == 8 and len(_weight(tfl, "quant_dw").scales) == 8
    assert len(_weight(tfl, "quant_fc").scales) == 1


@pytest.mark.slow
def test_int4_file_predicts_like_the_qat_model(qat4, digits_data):
    qat, tfl = qat4
    _, (xt, yt) = digits_data
    keras_guess = qat.predict(xt, verbose=0).argmax(1)
    assert np.mean(keras_guess == tfl.predict(xt).argmax(1)) >= 0.99
    assert abs(tfl.evaluate(xt, yt) - np.mean(keras_guess == yt)) <= 0.01


@pytest.mark.slow
def test_int4_halves_the_weight_bytes_of_the_int8_file(qat4, digits_data):
    keras.utils.set_random_seed(0)
    (x, y), _ = digits_data
    qat8 = compile_for_classification(co.quantize_model(net()))
    qat8.fit(x[:256], y[:256], epochs=1, batch_size=64, verbose=0)
    int8_weights = [t for t in ct.convert(qat8, "int8").inspect().weights() if t.dtype == "int8"]
    _, tfl4 = qat4
    int4_weights = [t for t in tfl4.inspect().weights() if t.dtype == "int4"]
    assert sorted(t.shape for t in int8_weights) == sorted(t.shape for t in int4_weights)
    assert tfl4.size_report().breakdown.weights_by_dtype["int4"] * 2 - len(int4_weights) <= (
        ct.convert(qat8, "int8").size_report().breakdown.weights_by_dtype["int8"]
    )


@pytest.mark.slow
def test_zeros_and_clusters_survive_in_int4_tensors(digits_data):
    keras.utils.set_random_seed(0)
    (x, y), _ = digits_data
    model = compile_for_classification(net())
    model.fit(x, y, epochs=2, batch_size=64, verbose=0)
    pruned = compile_for_classification(
        co.prune_low_magnitude(model, pruning_schedule=co.ConstantSparsity(0.5, 0))
    )
    pruned.fit(x, y, epochs=1, batch_size=64, verbose=0)
    clustered = compile_for_classification(co.cluster_weights(pruned, number_of_clusters=6, preserve_sparsity=True))
    clustered.fit(x, y, epochs=1, batch_size=64, verbose=0)
    pc4 = compile_for_classification(co.quantize_model(clustered, scheme=SCHEME4), 5e-4)
    pc4.fit(x, y, epochs=1, batch_size=64, verbose=0)
    tfl = ct.convert(pc4, "int8")
    wrappers = {w.base_layer.name: w for w in quantize_wrappers(pc4)}
    for name in ("conv", "fc"):
        stats = _stats(tfl, f"quant_{name}")
        assert stats.dtype == "int4"
        assert stats.zeros_fraction >= 0.5 - 1e-6
        assert stats.max_unique_per_channel <= 6
        stored = _weight(tfl, f"quant_{name}").data
        (pruning,) = [w for w in wrapper_chain(wrappers[name]) if hasattr(w, "masks")]
        mask = ops.convert_to_numpy(pruning.masks["kernel"])
        layout = (lambda k: np.transpose(k, (3, 0, 1, 2))) if name == "conv" else (lambda k: k.T)
        assert np.all(stored[layout(mask) == 0] == 0)
    assert ct.verify(pc4, tfl).all_hold


def test_check_int4_storage_names_missing_layers():
    model = keras.Sequential([keras.Input((4,)), L.Dense(3, name="d")])
    qat = co.quantize_model(model, scheme=SCHEME4)
    assert low_bit_weights(qat) == [("quant_d", "kernel", 4)]
    float_file = ct.convert(model, "float32")
    with pytest.raises(ConversionError, match=r"quant_d"):
        check_int4_storage(flatbuffer.parse(float_file.content), qat)
    check_int4_storage(flatbuffer.parse(float_file.content), model)  # nothing at 4 bits: nothing to check


def test_sparse_conversion_of_int4_weights_is_refused():
    model = keras.Sequential([keras.Input((4,)), L.Dense(3, name="d")])
    qat = co.quantize_model(model, scheme=SCHEME4)
    co.calibrate(qat, np.random.default_rng(0).random((8, 4), np.float32))
    with pytest.raises(InvalidArgumentError, match=r"sparse=True.*quant_d"):
        ct.convert(qat, "int8", sparse=True)
