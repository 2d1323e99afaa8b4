import pytest

from collabopt.cli import main


@pytest.mark.slow
def test_train_export_inspect(tmp_path, capsys):
    model = tmp_path / "m.keras"
    assert main(["train", "--data", "digits", "--epochs", "2", "--out", str(model)]) == 0
    out = tmp_path / "m.tflite"
    assert main(["export", str(model), "--mode", "int8", "--data", "digits", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "gzip bytes" in text and "top-1 on digits test" in text
    assert main(["inspect", str(out)]) == 0
    assert "float islands: 0" in capsys.readouterr().out


def test_bad_input_exits_2_with_one_line(tmp_path, capsys):
    assert main(["export", str(tmp_path / "missing.keras")]) == 2
    assert "no such model file" in capsys.readouterr().err
    bogus = tmp_path / "bogus.keras"
    bogus.write_text("not a model")
    assert main(["export", str(bogus), "--mode", "int8"]) == 2
    assert "is not a Keras model file" in capsys.readouterr().err
    assert main(["export", str(bogus), "--mode", "int3"]) == 2
    assert "unknown mode 'int3'" in capsys.readouterr().err
    assert main(["inspect", str(bogus)]) == 2
    assert "not a TFLite flatbuffer" in capsys.readouterr().err
    assert main(["inspect", str(tmp_path / "none.tflite")]) == 2
    assert main(["nonsense"]) == 2
