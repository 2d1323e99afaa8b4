import gzip

import keras
import numpy as np
import pytest
import tensorflow as tf

import collabopt.tflite as ct
from tests.conftest import rand, small_cnn


@pytest.fixture(scope="module")
def cnn_and_data():
    keras.utils.set_random_seed(0)
    return small_cnn(), rand(64, 8, 8, 1)


def test_float32_matches_keras(cnn_and_data):
    model, x = cnn_and_data
    tfl = ct.convert(model, "float32")
    np.testing.assert_allclose(tfl.predict(x), model.predict(x, verbose=0), atol=1e-5)
    assert all(t.dtype == "float32" for t in tfl.inspect().weights())


def test_float16_has_float16_weights(cnn_and_data):
    model, x = cnn_and_data
    tfl = ct.convert(model, "float16")
    assert {t.dtype for t in tfl.inspect().weights()} == {"float16"}
    np.testing.assert_allclose(tfl.predict(x), model.predict(x, verbose=0), atol=2e-2)


def test_dynamic_has_int8_weights_and_float_io(cnn_and_data):
    model, x = cnn_and_data
    tfl = ct.convert(model, "dynamic")
    kernels = [t for t in tfl.inspect().weights() if len(t.shape) >= 2]
    assert any(t.dtype == "int8" for t in kernels)
    assert tfl.input_details[0]["dtype"] == np.float32


def test_int8_is_fully_integer(cnn_and_data):
    model, x = cnn_and_data
    tfl = ct.convert(model, "int8", x)
    assert tfl.input_details[0]["dtype"] == np.int8
    assert tfl.output_details[0]["dtype"] == np.int8
    assert tfl.float_islands() == []
    kernels = [t for t in tfl.inspect().weights() if len(t.shape) >= 2]
    assert kernels and all(t.dtype == "int8" for t in kernels)


def test_int8_float_io_has_only_boundary_conversions(cnn_and_data):
    model, x = cnn_and_data
    tfl = ct.convert(model, "int8", x, int8_io=False)
    assert tfl.input_details[0]["dtype"] == np.float32
    assert tfl.float_islands() == []
    assert "QUANTIZE" in tfl.ops() and "DEQUANTIZE" in tfl.ops()


def test_int16x8_has_int16_activations(cnn_and_data):
    model, x = cnn_and_data
    tfl = ct.convert(model, "int16x8", x)
    assert tfl.input_details[0]["dtype"] == np.int16
    stats = tfl.inspect()
    activations = [t for t in stats if not t.is_weight and t.dtype in ("int16", "int8", "float32")]
    assert activations and all(t.dtype == "int16" for t in activations)
    kernels = [t for t in stats.weights() if len(t.shape) >= 2]
    assert all(t.dtype == "int8" for t in kernels)


@pytest.mark.slow
def test_int8_accuracy_within_two_points_on_digits(trained_digits_cnn, digits_data):
    (x, _), (xt, yt) = digits_data
    float_acc = trained_digits_cnn.evaluate(xt, yt, verbose=0)[1]
    int8 = ct.convert(trained_digits_cnn, "int8", x)
    assert float_acc > 0.9
    assert int8.evaluate(xt, yt) >= float_acc - 0.02


def test_size_report(cnn_and_data, tmp_path):
    model, x = cnn_and_data
    tfl = ct.convert(model, "int8", x)
    base = ct.convert(model, "float32")
    report = tfl.size_report(base)
    assert report.raw_bytes == len(tfl.content)
    assert report.gzip_bytes == len(gzip.compress(tfl.content, 9))
    assert 0 < report.zip_bytes
    assert report.compression == pytest.approx(base.size_report().gzip_bytes / report.gzip_bytes)
    path = tfl.save(tmp_path / "m.tflite")
    assert ct.load(path).content == tfl.content


def test_inspect_counts_zeros_and_unique_values_exactly():
    dense = keras.layers.Dense(4, use_bias=False, name="hand")
    model = keras.Sequential([keras.Input((6,)), dense])
    kernel = np.zeros((6, 4), "float32")
    kernel[0] = [1.0, 2.0, 3.0, 4.0]
    kernel[1] = [1.0, 1.0, 2.0, 2.0]
    dense.kernel.assign(kernel)  # 16 of 24 zeros; values {0,1,2,3,4}
    tfl = ct.convert(model, "float32")
    (stat,) = [t for t in tfl.inspect().weights() if t.shape in ((4, 6), (6, 4))]
    assert stat.zeros_fraction == pytest.approx(16 / 24)
    assert stat.unique_values == 5
    # TFLite stores the FC kernel as (out, in): channel rows are columns of ours.
    assert stat.max_unique_per_channel == max(len(np.unique(kernel[:, j])) for j in range(4))
    assert "hand" in str(tfl.inspect())


def test_predict_any_batch_size(cnn_and_data):
    model, x = cnn_and_data
    tfl = ct.convert(model, "int8", x)
    assert tfl.predict(x[:1]).shape == (1, 10)
    assert tfl.predict(x, batch_size=7).shape == (64, 10)
    assert tfl.latency(runs=5) > 0


def test_representative_data_forms(cnn_and_data):
    model, x = cnn_and_data
    ds = tf.data.Dataset.from_tensor_slices((x, np.zeros(len(x)))).batch(8)
    for data in (ds, [x[:8], x[8:16]], (b for b in [x[:4]])):
        assert ct.convert(model, "int8", data).float_islands() == []


def test_bad_input(cnn_and_data):
    model, x = cnn_and_data
    with pytest.raises(ValueError, match="mode='int4' is not supported; accepted: float32"):
        ct.convert(model, "int4")
    with pytest.raises(ValueError, match="needs representative_data"):
        ct.convert(model, "int8")
    with pytest.raises(ValueError, match=r"expects batches of shape \(None, 8, 8, 1\).*received an array of shape \(4, 8, 8\)"):
        ct.convert(model, "int8", x[:4, ..., 0])
    with pytest.raises(ValueError, match="expects numeric data"):
        ct.convert(model, "int8", np.array([["a"] * 8] * 8)[None, ..., None])
    with pytest.raises(ValueError, match="not a TFLite flatbuffer"):
        ct.TFLiteModel(b"0123456789")


class Erfinv(keras.layers.Layer):  # no TFLite builtin at all
    def call(self, t):
        return tf.math.erfinv(t)


class LogGamma(keras.layers.Layer):  # decomposed into float-only builtins
    def call(self, t):
        return tf.math.lgamma(t)


def _model_with(layer):
    inputs = keras.Input((4,))
    return keras.Model(inputs, layer(keras.layers.Dense(4, name="fc")(inputs)))


def test_conversion_failure_names_the_layer_and_op():
    with pytest.raises(ct.ConversionError, match=r"layers involved: \['odd_layer'\].*tf\.Erfinv"):
        ct.convert(_model_with(Erfinv(name="odd_layer")), "int8", rand(8, 4))


def test_int8_float_islands_are_an_error_unless_allowed():
    model = _model_with(LogGamma(name="gamma_layer"))
    with pytest.raises(ct.ConversionError, match=r"computing in float.*layers involved: \['gamma_layer'\]"):
        ct.convert(model, "int8", rand(8, 4))
    mixed = ct.convert(model, "int8", rand(8, 4), allow_float_islands=True)
    assert mixed.float_islands()


def test_post_training_int8_of_layer_normalization_has_no_float_op():
    """Keras' LayerNormalization computes through NEG, which TFLite keeps float; export runs its integer form."""
    i = keras.Input((6, 8))
    h = keras.layers.LayerNormalization(name="ln")(keras.layers.Dense(8, name="proj")(i))
    model = keras.Model(i, keras.layers.Dense(3, name="head")(keras.layers.GlobalAveragePooling1D()(h)))
    x = rand(64, 6, 8)
    tflite = ct.convert(model, "int8", x)
    assert tflite.float_islands() == []
    assert "NEG" not in tflite.ops() and "SQUARED_DIFFERENCE" in tflite.ops()
    float_file = ct.convert(model, "float32")  # other modes keep Keras' own form
    np.testing.assert_allclose(float_file.predict(x), model.predict(x, verbose=0), atol=1e-5)
    assert [type(layer).__name__ for layer in model.layers].count("LayerNormalization") == 1  # input untouched
