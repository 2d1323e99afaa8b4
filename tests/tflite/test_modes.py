"""Export modes are objects that convert, the CLI and the tree read."""

import numpy as np
import pytest

import keras

import collabopt.keras as co
import collabopt.tflite as ct
from collabopt.errors import InvalidArgumentError, InvalidTypeError
from collabopt.tflite.modes import MODES, ExportMode, export_mode, export_mode_registered, register_export_mode


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


def test_a_registered_mode_is_accepted_by_convert_and_the_cli_until_its_block_ends(capsys):
    from collabopt.cli import main

    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(32)])
    tiny = ExportMode("tiny_fp16", "float16 weights", weight_type="float16")
    with export_mode_registered(tiny):
        tfl = ct.convert(model, "tiny_fp16")
        assert tfl.mode == "tiny_fp16" and {t.dtype for t in tfl.inspect().weights()} == {"float16"}
        assert main(["export", "missing.keras", "--mode", "tiny_fp16"]) == 2
        assert "no such model file" in capsys.readouterr().err  # the mode was accepted
    assert "tiny_fp16" not in MODES
    assert main(["export", "missing.keras", "--mode", "tiny_fp16"]) == 2
    assert "unknown mode 'tiny_fp16'" in capsys.readouterr().err
    with pytest.raises(InvalidArgumentError, match="mode='tiny_fp16' is not supported"):
        ct.convert(model, "tiny_fp16")


def test_modes_are_checked_when_made_and_registered():
    with pytest.raises(InvalidArgumentError, match="export mode 'int8' is already registered"):
        register_export_mode(ExportMode("int8", "mine", integer=True, io_type="int8", weight_type="int8"))
    with pytest.raises(InvalidTypeError, match="expects an ExportMode"):
        register_export_mode("int8")
    with pytest.raises(InvalidArgumentError, match="weight_type must be one of"):
        ExportMode("bf16", "bfloat16 weights", weight_type="bfloat16")
    with pytest.raises(InvalidArgumentError, match="an integer mode needs io_type"):
        ExportMode("int8_float", "int8", integer=True, weight_type="int8")
    with pytest.raises(InvalidArgumentError, match="io_type and keeps_fake_quant are for integer modes"):
        ExportMode("f", "float", io_type="int8")
    assert list(MODES) == ["float32", "float16", "dynamic", "int8", "int16x8"]
