"""Models trained under a mixed precision policy go through the chain and export like float32 ones."""

import keras
import numpy as np
import pytest

import collabopt.tflite as ct
from tests.conftest import conv_bn_depthwise_cnn, pcqat_trained, rand


@pytest.fixture
def mixed_float16():
    keras.mixed_precision.set_global_policy("mixed_float16")
    yield
    keras.mixed_precision.set_global_policy("float32")


def test_pcqat_chain_trains_saves_and_exports_full_int8_under_mixed_float16(mixed_float16, tmp_path):
    model = conv_bn_depthwise_cnn((10, 10, 1), 4, softmax=True)
    assert model.get_layer("conv").compute_dtype == "float16"
    x, y = rand(16, 10, 10, 1), np.arange(16) % 4
    qat = pcqat_trained(model, x, y, 8)
    qat.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    qat.fit(x, y, epochs=1, verbose=0)  # the compiled (graph) step too

    path = tmp_path / "qat.keras"
    qat.save(path)
    np.testing.assert_array_equal(keras.models.load_model(path).predict(x, verbose=0), qat.predict(x, verbose=0))

    tflite = ct.convert(qat, "int8")  # raises on any float op
    assert tflite.float_islands() == []
    report = ct.verify(qat, tflite)
    assert report.all_hold and {"conv", "dw", "fc"} <= {c.layer for c in report}, str(report)
    agree = (tflite.predict(x).argmax(1) == qat.predict(x, verbose=0).argmax(1)).mean()
    assert agree >= 0.75, agree
    # The input model still computes in float16 (the float32 form is the export's own copy).
    assert model.get_layer("conv").compute_dtype == "float16"


def test_plain_mixed_precision_model_converts_in_every_mode(mixed_float16):
    model = conv_bn_depthwise_cnn((10, 10, 1), 4, softmax=True)
    x = rand(16, 10, 10, 1)
    reference = model.predict(x, verbose=0).astype("float32")
    np.testing.assert_allclose(ct.convert(model, "float32").predict(x), reference, atol=5e-3)
    assert ct.convert(model, "int8", representative_data=x).float_islands() == []
