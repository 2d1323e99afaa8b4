"""Export modes are objects that convert, the CLI and the tree read."""

import numpy as np
import pytest

import keras

import collabopt.keras as co
import collabopt.tflite as ct
from collabopt.errors import InvalidArgumentError
from collabopt.tflite.modes import MODES, ExportMode, export_mode


def test_every_mode_says_what_it_needs():
    assert list(MODES) == list(ct.MODES) == ["float32", "float16", "dynamic", "int8", "int16x8"]
    needs = {name: (mode.needs_calibration(False), mode.needs_calibration(True)) for name, mode in MODES.items()}
    assert needs == {
        "float32": (False, False), "float16": (False, False), "dynamic": (False, False),
        "int8": (True, False), "int16x8": (True, True),
    }  # fmt: skip
    assert [m.name for m in MODES.values() if m.keeps_fake_quant] == ["int8"]
    with pytest.raises(InvalidArgumentError, match="mode=\\['int8'\\] is not supported"):
        export_mode(["int8"])


def test_convert_takes_a_mode_object_and_its_calibration_rule():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    with pytest.raises(InvalidArgumentError, match="mode='int16x8' needs representative_data"):
        ct.convert(model, MODES["int16x8"])
    qat = co.quantize_model(model)
    qat(np.random.default_rng(0).random((8, 4)).astype("float32"), training=True)
    assert ct.convert(qat, export_mode("int8")).mode == "int8"  # trained ranges: no data needed
    assert isinstance(MODES["dynamic"], ExportMode) and ct.convert(model, "dynamic").mode == "dynamic"
