"""DefaultNBitQuantizeScheme: 4-bit weights that compose with pruning and clustering."""

import keras
import numpy as np
import pytest
from keras import ops

import collabopt.keras as co
from collabopt.errors import InvalidArgumentError
from collabopt.layers import wrapper_chain
from collabopt.quantization import quantize_wrappers
from tests.conftest import rand, small_cnn

L = keras.layers


def _scheme(**kwargs):
    return co.DefaultNBitQuantizeScheme(**{"num_bits_weight": 4, "num_bits_activation": 8, **kwargs})


def _effective(qat, name):
    (wrapper,) = [w for w in quantize_wrappers(qat) if w.base_layer.name == name]
    return wrapper, ops.convert_to_numpy(wrapper.effective_weights(False)["kernel"])


def test_weights_4bit_per_channel_for_convs_per_tensor_for_dense():
    qat = co.quantize_model(small_cnn(), scheme=_scheme())
    conv, dense = qat.get_layer("quant_conv"), qat.get_layer("quant_dense")
    assert conv.weight_quantizers["kernel"].num_bits == 4 and conv.weight_quantizers["kernel"].per_axis
    assert dense.weight_quantizers["kernel"].num_bits == 4 and not dense.weight_quantizers["kernel"].per_axis
    assert conv.output_quantizers[0].num_bits == 8 and not conv.output_quantizers[0].symmetric
    flat = co.quantize_model(small_cnn(), scheme=_scheme(disable_per_axis=True))
    assert not flat.get_layer("quant_conv").weight_quantizers["kernel"].per_axis


def test_4bit_weights_take_at_most_15_symmetric_levels():
    model = small_cnn()
    qat = co.quantize_model(model, scheme=_scheme())
    qat(rand(4, 8, 8, 1), training=True)
    wrapper, kernel = _effective(qat, "conv")
    m = np.max(np.abs(ops.convert_to_numpy(wrapper.inner_weights()["kernel"])), axis=(0, 1, 2))
    levels = kernel / (m / 7)
    np.testing.assert_allclose(levels, np.round(levels), atol=1e-4)
    assert np.abs(np.round(levels)).max() <= 7
    assert max(np.unique(kernel[..., c]).size for c in range(kernel.shape[-1])) <= 15


def test_16bit_activations_are_symmetric():
    qat = co.quantize_model(small_cnn(), scheme=_scheme(num_bits_activation=16))
    out = qat.get_layer("quant_conv").output_quantizers[0]
    assert out.num_bits == 16 and out.symmetric


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"num_bits_weight": 1}, "num_bits_weight=1"),
        ({"num_bits_weight": 9}, "num_bits_weight=9"),
        ({"num_bits_weight": 4.0}, "num_bits_weight=4.0"),
        ({"num_bits_activation": 4}, "num_bits_activation=4"),
    ],
)
def test_bad_bit_widths_are_rejected(kwargs, match):
    with pytest.raises(InvalidArgumentError, match=match):
        co.DefaultNBitQuantizeScheme(**kwargs)


def test_scheme_config_round_trips():
    scheme = _scheme(disable_per_axis=True)
    again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(scheme))
    assert isinstance(again, co.DefaultNBitQuantizeScheme) and again.get_config() == scheme.get_config()


def test_4bit_qat_model_round_trips_through_keras_file(tmp_path):
    qat = co.quantize_model(small_cnn(), scheme=_scheme())
    x = rand(8, 8, 8, 1)
    qat(x, training=True)
    path = tmp_path / "q4.keras"
    qat.save(path)
    again = keras.models.load_model(path)
    for a, b in zip(qat.weights, again.weights):
        np.testing.assert_array_equal(ops.convert_to_numpy(a), ops.convert_to_numpy(b))
    np.testing.assert_array_equal(qat.predict(x, verbose=0), again.predict(x, verbose=0))
    assert again.get_layer("quant_conv").weight_quantizers["kernel"].num_bits == 4


def test_p4qat_keeps_every_pruned_zero():
    pruned = co.prune_low_magnitude(small_cnn(), pruning_schedule=co.ConstantSparsity(0.6, 0))
    pruned(rand(4, 8, 8, 1), training=True)
    qat = co.quantize_model(pruned, scheme=_scheme())
    qat.compile("adam", "mse")
    qat.fit(rand(32, 8, 8, 1), rand(32, 10), epochs=1, verbose=0)
    for name in ("conv", "dense"):
        wrapper, kernel = _effective(qat, name)
        (pruning,) = [w for w in wrapper_chain(wrapper) if hasattr(w, "masks")]
        mask = ops.convert_to_numpy(pruning.masks["kernel"])
        assert np.mean(mask == 0) >= 0.55 and np.all(kernel[mask == 0] == 0)


def test_c4qat_keeps_at_most_k_values_per_range_and_the_zero_centroid():
    model = small_cnn()
    pruned = co.prune_low_magnitude(model, pruning_schedule=co.ConstantSparsity(0.5, 0))
    pruned(rand(4, 8, 8, 1), training=True)
    clustered = co.cluster_weights(pruned, number_of_clusters=12, preserve_sparsity=True)
    qat = co.quantize_model(clustered, scheme=_scheme())
    qat.compile("adam", "mse")
    qat.fit(rand(32, 8, 8, 1), rand(32, 10), epochs=1, verbose=0)
    _, kernel = _effective(qat, "conv")
    # Per-tensor clusters under per-channel 4-bit ranges: <= 12 values in each channel.
    assert max(np.unique(kernel[..., c]).size for c in range(kernel.shape[-1])) <= 12
    _, dense = _effective(qat, "dense")
    assert np.unique(dense).size <= 12  # per-tensor range: <= 12 values in the whole kernel
    assert np.mean(kernel == 0) >= 0.5 and np.mean(dense == 0) >= 0.5


def test_embedding_keeps_8bit_table_and_the_rest_is_int4():
    """TFLite has no INT4 GATHER the converter can emit: the table stays int8, the Dense kernel is INT4."""
    import collabopt.tflite as ct

    tokens = keras.Input((6,), dtype="int32")
    x = keras.layers.GlobalAveragePooling1D()(keras.layers.Embedding(20, 8, name="emb")(tokens))
    model = keras.Model(tokens, keras.layers.Dense(3, name="fc")(x))
    qat = co.quantize_model(model, scheme=co.DefaultNBitQuantizeScheme(num_bits_weight=4))
    bits = {w.base_layer.name: q.num_bits for w in quantize_wrappers(qat) for q in w.weight_quantizers.values()}
    assert bits == {"emb": 8, "fc": 4}
    xs = np.random.default_rng(0).integers(0, 20, (32, 6)).astype("int32")
    qat.compile(optimizer="adam", loss="mse")
    qat.fit(xs, rand(32, 3), verbose=0)
    tflite = ct.convert(qat, "int8")
    assert tflite.float_islands() == []
    dtypes = {s.shape: s.dtype for s in tflite.inspect().weights()}
    assert dtypes[(20, 8)] == "int8" and dtypes[(3, 8)] == "int4"
    np.testing.assert_allclose(tflite.predict(xs), qat.predict(xs, verbose=0), atol=0.02)
