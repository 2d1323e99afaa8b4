"""TFLiteModel.size_report(): where the raw bytes of a file go."""

import keras
import numpy as np
import collabopt.keras as co
import collabopt.tflite as ct
from tests.conftest import rand, small_cnn
import random
import pytest
from collabopt.errors import CollaboptError, InvalidArgumentError, InvalidFileError, InvalidTypeError





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





@pytest.fixture(scope="module")
def int8_bytes():
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((8, 8, 1)), keras.layers.Conv2D(4, 3, name="conv"), keras.layers.Flatten(), keras.layers.Dense(3, name="fc")]
    )
    x = np.random.default_rng(0).random((16, 8, 8, 1)).astype("float32")
    return ct.convert(model, "int8", x).content


def test_load_names_the_missing_file(tmp_path):
    with pytest.raises(InvalidFileError, match="no such .tflite file: .*missing.tflite"):
        ct.load(tmp_path / "missing.tflite")
    with pytest.raises(InvalidFileError, match="it is a folder"):
        ct.load(tmp_path)
    with pytest.raises(InvalidTypeError, match="path of a .tflite file"):
        ct.load(42)


def test_constructor_refuses_non_bytes_and_other_formats():
    with pytest.raises(InvalidTypeError, match="received str .*collabopt.tflite.load"):
        ct.TFLiteModel("model.tflite")
    with pytest.raises(InvalidFileError, match="TFL3"):
        ct.TFLiteModel(b"PK\x03\x04 this is a zip file")


def test_truncated_file_is_an_invalid_file_error_naming_it(int8_bytes, tmp_path):
    path = tmp_path / "cut.tflite"
    path.write_bytes(int8_bytes[: len(int8_bytes) // 2])
    with pytest.raises(InvalidFileError, match=f"{path}.*truncated or corrupted"):
        ct.load(path)


def test_every_truncation_and_bit_flip_is_refused_cleanly_or_runs(int8_bytes):
    """Damaged bytes raise InvalidFileError at load, a collabopt error when run, or give a model that runs."""
    rng = random.Random(0)
    cases = [int8_bytes[:n] for n in range(0, len(int8_bytes), max(1, len(int8_bytes) // 150))]
    for _ in range(250):
        flipped = bytearray(int8_bytes)
        i = rng.randrange(len(flipped))
        flipped[i] ^= 1 << rng.randrange(8)
        cases.append(bytes(flipped))
    refused = ran = 0
    x = np.zeros((2, 8, 8, 1), "float32")
    for content in cases:
        try:
            model = ct.TFLiteModel(content)
        except InvalidFileError:
            refused += 1
            continue
        try:
            model.inspect()
            model.float_islands()
            model.predict(x)  # a flipped shape can make the input shape differ: InvalidArgumentError
            ran += 1
        except CollaboptError:
            refused += 1
    assert refused > 100 and ran > 50  # both outcomes occur; no other exception escaped


def test_predict_argument_errors_are_collabopt_errors(int8_bytes):
    model = ct.TFLiteModel(int8_bytes)
    with pytest.raises(InvalidArgumentError, match="expects samples of shape"):
        model.predict(np.zeros((2, 4, 4, 1), "float32"))
    with pytest.raises(InvalidArgumentError, match="runs must be >= 1"):
        model.latency_stats(runs=0)


def test_latency_stats_times_loops_of_invokes(int8_bytes):
    stats = ct.TFLiteModel(int8_bytes).latency_stats(runs=5, min_sample_us=2000)
    assert stats["repeat"] > 1  # a tiny model: one invoke is far below a 2 ms sample
    assert 0 < stats["p25_us"] <= stats["median_us"] <= stats["p75_us"]


def test_inspect_table_keeps_full_names():
    report = ct.InspectionReport(
        [ct.TensorStats("model/" + "very_long_layer_name/" * 5 + "kernel_tail", "int8", (3, 4), True, 0.5, 5, 3, (0.1,), (0,), 0)]
    )
    text = str(report)
    name = report[0].name
    joined = "".join(line.split("  ")[0] for line in text.splitlines()[2:])
    assert joined == name  # wrapped at the column width, nothing cut
    assert max(len(line.split("  ")[0]) for line in text.splitlines()[2:]) <= ct.InspectionReport.NAME_WIDTH


def test_errors_are_collabopt_errors_and_value_errors():
    assert issubclass(InvalidFileError, CollaboptError) and issubclass(InvalidFileError, ValueError)


def test_predict_runs_a_static_batch_file_in_padded_batches_of_its_size():
    model = keras.Sequential([keras.Input((5,), batch_size=4), keras.layers.Dense(3)])
    tflite = ct.convert(model, "float32")
    assert list(tflite.input_details[0]["shape"]) == [4, 5]
    x = np.random.default_rng(0).normal(size=(10, 5)).astype("float32")  # 4 + 4 + 2 (padded)
    np.testing.assert_allclose(tflite.predict(x, batch_size=3), model.predict(x, verbose=0), atol=1e-5)
