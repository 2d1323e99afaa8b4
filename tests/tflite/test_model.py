import random

import keras
import numpy as np
import pytest

import collabopt.tflite as ct
from collabopt.errors import CollaboptError, InvalidArgumentError, InvalidFileError, InvalidTypeError


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
