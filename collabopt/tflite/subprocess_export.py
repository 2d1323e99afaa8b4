"""Export from a JAX or PyTorch process: the conversion runs in a TensorFlow subprocess.

TFLite's converter reads TensorFlow graphs, so :func:`collabopt.tflite.convert`
runs on Keras' TensorFlow backend only. A model trained on JAX or PyTorch is
saved (``.keras`` files load on every backend, bitwise) and converted by a
Python subprocess that runs Keras on TensorFlow: :func:`convert_in_subprocess`
does both steps and returns the :class:`~collabopt.tflite.TFLiteModel`, as
``collabopt export m.keras --mode int8`` does from a shell.

The subprocess is this module: ``python -m collabopt.tflite.subprocess_export
MODEL.keras OUT.tflite --mode int8 [--data SAMPLES.npy] [--options JSON]``.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile

import numpy as np

from collabopt.errors import ConversionError, InvalidArgumentError
from collabopt.tflite.model import TFLiteModel, load

#: ``convert`` options the subprocess passes on (JSON-serializable values).
_OPTIONS = ("int8_io", "calibration_samples", "allow_float_islands", "sparse", "fused_lstm")


def convert_in_subprocess(model, mode: str = "int8", representative_data=None, **options) -> TFLiteModel:
    """:func:`collabopt.tflite.convert` of ``model``, run by a TensorFlow subprocess (any backend here).

    Args:
        model: A Keras model (saved to a temporary ``.keras`` file first) or
            the path of a ``.keras`` file.
        mode: An export mode, as for ``convert``.
        representative_data: Calibration inputs: a numpy array (or anything
            ``numpy.asarray`` takes) shaped like the model's single input.
        **options: ``int8_io``, ``calibration_samples``,
            ``allow_float_islands``, ``sparse``, ``fused_lstm``.

    Returns:
        The :class:`~collabopt.tflite.TFLiteModel` the subprocess wrote.

    Raises:
        InvalidArgumentError: an option ``convert`` does not take.
        ConversionError: the subprocess failed; the message holds its error.
    """
    unknown = sorted(set(options) - set(_OPTIONS))
    if unknown:
        raise InvalidArgumentError(f"convert_in_subprocess: unknown options {unknown}; accepted: {', '.join(_OPTIONS)}.")
    with tempfile.TemporaryDirectory(prefix="collabopt_export_") as folder:
        folder = pathlib.Path(folder)
        path = pathlib.Path(model) if isinstance(model, (str, os.PathLike)) else folder / "model.keras"
        if not isinstance(model, (str, os.PathLike)):
            model.save(path)
        command = [sys.executable, "-m", __name__, str(path), str(folder / "model.tflite"), "--mode", mode]
        if representative_data is not None:
            np.save(folder / "data.npy", np.asarray(representative_data, np.float32))
            command += ["--data", str(folder / "data.npy")]
        if options:
            command += ["--options", json.dumps(options)]
        environment = {**os.environ, "KERAS_BACKEND": "tensorflow"}
        done = subprocess.run(command, capture_output=True, text=True, env=environment)
        if done.returncode != 0:
            lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
            raise ConversionError(
                f"the TensorFlow subprocess exporting '{path.name}' to {mode} failed:\n" + "\n".join(lines[-15:])
            )
        return load(folder / "model.tflite")


def main(argv=None) -> int:
    """The subprocess: load a ``.keras`` file on TensorFlow, convert it, write the flatbuffer."""
    parser = argparse.ArgumentParser(prog="python -m collabopt.tflite.subprocess_export")
    parser.add_argument("model")
    parser.add_argument("out")
    parser.add_argument("--mode", default="int8")
    parser.add_argument("--data")
    parser.add_argument("--options", default="{}")
    args = parser.parse_args(argv)
    import keras

    import collabopt.keras  # noqa: F401  (registers collabopt's serializable classes for loading)
    from collabopt.tflite.convert import convert

    model = keras.models.load_model(args.model)
    data = np.load(args.data) if args.data else None
    convert(model, args.mode, data, **json.loads(args.options)).save(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
