"""TFLiteModel.size_report(): where the raw bytes of a file go."""

import keras
import numpy as np

import collabopt.keras as co
import collabopt.tflite as ct
from tests.conftest import rand, small_cnn


def _parts(breakdown):
    return sum(n for _, n in breakdown.rows())


def _cnn_with_biases():
    """small_cnn with nonzero biases (the converter drops an all-zero bias)."""
    model = small_cnn()
    for layer in model.layers:
        if getattr(layer, "bias", None) is not None:
            layer.bias.assign(rand(*layer.bias.shape, seed=3))
    return model


def test_breakdown_accounts_for_every_raw_byte_float32():
    report = ct.convert(_cnn_with_biases(), "float32").size_report()
    b = report.breakdown
    assert _parts(b) == report.raw_bytes
    # conv 3x3x1x16 and dense 144x10 float32 kernels; biases 16 + 10 floats.
    assert b.weights_by_dtype == {"float32": 4 * (3 * 3 * 16 + 144 * 10)}
    assert b.biases == 4 * (16 + 10)
    assert b.quantization == 0 and b.metadata > 0 and b.tensor_names > 0 and b.graph > 0


def test_breakdown_of_int4_file_shows_packed_weights_and_quantization_params():
    qat = co.quantize_model(_cnn_with_biases(), scheme=co.DefaultNBitQuantizeScheme(num_bits_weight=4))
    co.calibrate(qat, rand(16, 8, 8, 1))
    report = ct.convert(qat, "int8").size_report()
    b = report.breakdown
    assert _parts(b) == report.raw_bytes
    assert b.weights_by_dtype == {"int4": (3 * 3 * 16 + 144 * 10) // 2}
    assert b.biases == 4 * (16 + 10)  # int32 biases
    assert b.quantization > 4 * 16  # at least the conv's 16 per-channel scales
    text = str(report)
    assert "weights int4" in text and "quantization params" in text


def test_breakdown_with_baseline_keeps_the_ratio_fields():
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(32)])
    base = ct.convert(model, "float32")
    small = ct.convert(model, "dynamic")
    report = small.size_report(base)
    assert report.raw_ratio > 1 and report.compression > 1
    assert report.breakdown.weights_by_dtype["int8"] == 64 * 32
    assert np.isclose(report.raw_ratio, base.size_report().raw_bytes / report.raw_bytes)
