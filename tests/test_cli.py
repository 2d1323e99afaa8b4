import os
import pathlib
import subprocess
import sys

import keras
import numpy as np
import pytest

from collabopt.cli import main

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _run_cli(*args, env=None, timeout=300):
    """Runs ``python -m collabopt.cli`` in a fresh process (nothing imported yet)."""
    environment = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "COLLABOPT_VERBOSE")}
    environment["PYTHONPATH"] = str(ROOT) + os.pathsep + environment.get("PYTHONPATH", "")
    environment.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "collabopt.cli", *args], capture_output=True, text=True, env=environment, timeout=timeout, cwd=ROOT
    )


@pytest.fixture(scope="module")
def tiny_files(tmp_path_factory):
    """A tiny float .keras model, its int8 .tflite, and a matching .npz data file."""
    import collabopt.tflite as ct

    folder = tmp_path_factory.mktemp("cli")
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((8, 8, 1)), keras.layers.Conv2D(4, 3, name="conv"), keras.layers.Flatten(), keras.layers.Dense(3, name="fc")]
    )
    model.save(folder / "m.keras")
    x = np.random.default_rng(0).random((32, 8, 8, 1)).astype("float32")
    y = np.arange(32) % 3
    np.savez(folder / "data.npz", x_train=x, y_train=y, x_test=x[:8], y_test=y[:8])
    ct.convert(model, "int8", x).save(folder / "m.tflite")
    return folder


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


def _one_line_error(capsys, command):
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith(f"collabopt {command}: error: "), err
    return err


def test_bad_input_exits_2_with_one_line(tmp_path, capsys):
    assert main(["export", str(tmp_path / "missing.keras")]) == 2
    assert "no such model file" in _one_line_error(capsys, "export")
    bogus = tmp_path / "bogus.keras"
    bogus.write_text("not a model")
    assert main(["export", str(bogus), "--mode", "dynamic"]) == 2
    assert "is not a Keras model file" in _one_line_error(capsys, "export")
    assert main(["export", str(bogus), "--mode", "int3"]) == 2
    assert "unknown mode 'int3'" in _one_line_error(capsys, "export")
    assert main(["inspect", str(bogus)]) == 2
    assert "not a TFLite flatbuffer" in _one_line_error(capsys, "inspect")
    assert main(["inspect", str(tmp_path / "none.tflite")]) == 2
    assert "no such .tflite file" in _one_line_error(capsys, "inspect")
    assert main(["nonsense"]) == 2


@pytest.mark.parametrize("cut", ["truncated", "bitflip"])
def test_inspect_of_a_damaged_tflite_is_one_line_and_exit_2(tiny_files, tmp_path, capsys, cut):
    content = bytearray((tiny_files / "m.tflite").read_bytes())
    if cut == "truncated":
        content = content[: len(content) // 3]
    else:
        content[20] ^= 0xFF  # inside the root table: offsets become garbage
    damaged = tmp_path / "damaged.tflite"
    damaged.write_bytes(bytes(content))
    assert main(["inspect", str(damaged)]) == 2
    err = _one_line_error(capsys, "inspect")
    assert str(damaged) in err and ("truncated or corrupted" in err or "TFL3" in err)


def test_export_int8_without_data_says_pass_data(tiny_files, capsys):
    assert main(["export", str(tiny_files / "m.keras"), "--mode", "int8"]) == 2
    assert "pass --data" in _one_line_error(capsys, "export")


def test_export_of_a_tflite_file_names_what_is_expected_in_full(tiny_files, capsys):
    # The Keras message used to be cut at 200 characters ("... by `load_mod").
    assert main(["export", str(tiny_files / "m.tflite"), "--mode", "dynamic"]) == 2
    err = _one_line_error(capsys, "export")
    assert "expected a Keras model file (.keras, or legacy .h5)" in err and err.endswith("use `collabopt inspect`)")


def test_npz_with_mismatched_lengths_is_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.npz"
    np.savez(bad, x_train=np.zeros((10, 8, 8, 1)), y_train=np.zeros(9, int), x_test=np.zeros((3, 8, 8, 1)), y_test=np.zeros(3, int))
    assert main(["train", "--data", str(bad), "--epochs", "1", "--out", str(tmp_path / "m.keras")]) == 2
    assert "x_train holds 10 samples but y_train holds 9 labels" in _one_line_error(capsys, "train")


def test_tree_epochs_0_is_refused_before_any_work(capsys):
    assert main(["tree", "--epochs", "0"]) == 2
    assert "--epochs must be >= 1" in _one_line_error(capsys, "tree")


def test_tree_filter_ratios_are_checked_before_any_work(capsys):
    from collabopt.cli import build_parser

    assert main(["tree", "--filter-ratios", "0.3", "1.5"]) == 2
    assert "--filter-ratios must be fractions in (0, 1), e.g. 0.3 0.5; received 1.5" in _one_line_error(capsys, "tree")
    assert main(["tree", "--filter-ratios", "0.3", "0.301"]) == 2
    assert "--filter-ratios must differ in whole percents" in _one_line_error(capsys, "tree")
    assert build_parser().parse_args(["tree"]).filter_ratios == [0.3, 0.5]
    assert build_parser().parse_args(["tree", "--filter-ratios"]).filter_ratios == []  # no filter-pruned branches


def test_tfds_dir_without_tfds_data_is_refused(capsys, tmp_path):
    assert main(["train", "--data", "digits", "--tfds-dir", str(tmp_path)]) == 2
    assert "--tfds-dir is only used with --data tfds:" in _one_line_error(capsys, "train")


def test_missing_tfds_data_set_names_the_folder(tmp_path, capsys):
    assert main(["train", "--data", "tfds:not_there:test", "--tfds-dir", str(tmp_path)]) == 2
    err = _one_line_error(capsys, "train")
    assert "tfds data set 'not_there'" in err and str(tmp_path) in err


def test_inspect_does_not_import_tensorflow_and_prints_full_names(tiny_files):
    code = (
        "import sys; from collabopt.cli import main; rc = main(['inspect', sys.argv[1]]); "
        "print('TF_IMPORTED' if 'tensorflow' in sys.modules else 'TF_NOT_IMPORTED'); sys.exit(rc)"
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    result = subprocess.run([sys.executable, "-c", code, str(tiny_files / "m.tflite")], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "TF_NOT_IMPORTED" in result.stdout
    import collabopt.tflite as ct

    for t in ct.load(tiny_files / "m.tflite").inspect().weights():
        for piece in (t.name[i : i + 60] for i in range(0, len(t.name), 60)):
            assert piece in result.stdout  # wrapped on the right, never cut from the left


@pytest.mark.slow
def test_cli_is_quiet_by_default_and_verbose_shows_tensorflow_logs(tiny_files, tmp_path):
    args = ["export", str(tiny_files / "m.keras"), "--mode", "int8", "--data", str(tiny_files / "data.npz"), "--out", str(tmp_path / "q.tflite")]
    quiet = _run_cli(*args)
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stderr.strip() == "", quiet.stderr  # no cudart / absl / fully_quantize lines
    assert "wrote" in quiet.stdout and "fully_quantize" not in quiet.stdout
    loud = _run_cli(*args, "--verbose")
    assert loud.returncode == 0, loud.stderr
    assert "fully_quantize" in loud.stderr or "absl" in loud.stderr


def test_export_fused_lstm(tmp_path, capsys):
    import keras

    import collabopt.tflite as ct

    model = keras.Sequential([keras.Input((6, 4)), keras.layers.LSTM(5, name="lstm"), keras.layers.Dense(3)])
    path = tmp_path / "lstm.keras"
    model.save(path)
    out = tmp_path / "lstm.tflite"
    assert main(["export", str(path), "--mode", "float32", "--fused-lstm", "--out", str(out)]) == 0
    assert ct.load(out).ops().count("UNIDIRECTIONAL_SEQUENCE_LSTM") == 1
    capsys.readouterr()
    # int8 calibrates the fused gates: without data the error says so, on one line.
    assert main(["export", str(path), "--mode", "int8", "--fused-lstm"]) == 2
    assert "--data" in _one_line_error(capsys, "export")
