"""Which Keras layers export to int8 TFLite with no float op: post-training, QAT, QAT + calibration.

    python benchmarks/float_ops.py [--layers ELU,Conv3D]

Each case is a small model: a Dense or Conv producer, the layer under test,
and a Dense head. It is converted three ways, all with ``allow_float_islands``
so the file shows what stays float:

* **PTQ int8**: ``convert(model, "int8", representative_data)``; what stays
  float here is where LiteRT's converter has no integer kernel for the op;
* **QAT int8 (trained ranges)**: ``quantize_model`` + two training-mode
  passes (which set the ranges), converted from the trained ranges alone;
* **QAT int8 (+ calibration)**: the same QAT model with representative data
  for the tensors QAT does not reach.

Writes docs/float_ops.md (machine, command and date included).
"""

from __future__ import annotations

import argparse
import datetime
import os
import pathlib
import sys
import warnings

HERE = pathlib.Path(__file__).parent


def _cases():
    import keras

    L = keras.layers

    def image(layer, shape=(8, 8, 3), before=True):
        def build():
            i = keras.Input(shape)
            h = L.Conv2D(4, 3, padding="same", name="producer")(i) if before else i
            h = layer()(h)
            if len(h.shape) > 2:
                h = L.Flatten()(h)
            return keras.Model(i, L.Dense(3, name="head")(h))

        return build

    def sequence(layer, shape=(6, 4)):
        def build():
            i = keras.Input(shape)
            h = layer()(L.Dense(4, name="producer")(i))
            if len(h.shape) > 2:
                h = L.Flatten()(h)
            return keras.Model(i, L.Dense(3, name="head")(h))

        return build

    def vector(layer):
        def build():
            i = keras.Input((6,))
            h = layer()(L.Dense(6, name="producer")(i))
            return keras.Model(i, L.Dense(3, name="head")(h))

        return build

    def merge(layer_class):
        def build():
            i = keras.Input((6,))
            a, b = L.Dense(6, name="a")(i), L.Dense(6, name="b")(i)
            return keras.Model(i, L.Dense(3, name="head")(layer_class()([a, b])))

        return build

    def volume(layer):
        def build():
            i = keras.Input((4, 4, 4, 2))
            h = L.Flatten()(layer()(i))
            return keras.Model(i, L.Dense(3, name="head")(h))

        return build

    def tokens():
        i = keras.Input((6,), dtype="int32")
        h = L.GlobalAveragePooling1D()(L.Embedding(20, 4)(i))
        return keras.Model(i, L.Dense(3, name="head")(h))

    activations = (
        "relu", "relu6", "sigmoid", "tanh", "softmax", "softplus", "softsign", "selu", "elu", "gelu",
        "silu", "hard_sigmoid", "hard_silu", "mish", "leaky_relu", "exponential", "log_softmax",
    )
    cases = {f"Activation({a!r})": vector(lambda a=a: L.Activation(a)) for a in activations}
    cases.update({
        "ReLU": vector(L.ReLU),
        "LeakyReLU": vector(L.LeakyReLU),
        "PReLU": vector(L.PReLU),
        "ELU": vector(L.ELU),
        "Softmax": vector(L.Softmax),
        "Dense": vector(lambda: L.Dense(6)),
        "EinsumDense": sequence(lambda: L.EinsumDense("btc,cd->btd", output_shape=(6, 5))),
        "Embedding": tokens,
        "Conv1D": sequence(lambda: L.Conv1D(4, 3)),
        "Conv2D": image(lambda: L.Conv2D(4, 3)),
        "Conv3D": volume(lambda: L.Conv3D(2, 2)),
        "DepthwiseConv2D": image(lambda: L.DepthwiseConv2D(3)),
        "SeparableConv2D": image(lambda: L.SeparableConv2D(4, 3)),
        "Conv1DTranspose": sequence(lambda: L.Conv1DTranspose(4, 3, strides=2)),
        "Conv2DTranspose": image(lambda: L.Conv2DTranspose(4, 3, strides=2)),
        "Conv3DTranspose": volume(lambda: L.Conv3DTranspose(2, 2)),
        "BatchNormalization (standalone)": image(L.BatchNormalization),
        "LayerNormalization": sequence(L.LayerNormalization),
        "GroupNormalization": image(lambda: L.GroupNormalization(2)),
        "UnitNormalization": vector(L.UnitNormalization),
        "Rescaling": image(lambda: L.Rescaling(0.5, offset=0.1), before=False),
        "RandomFlip + RandomRotation + RandomZoom": image(
            lambda: keras.Sequential([L.RandomFlip(), L.RandomRotation(0.1), L.RandomZoom(0.1)]), before=False
        ),
        "Resizing (bilinear)": image(lambda: L.Resizing(4, 4)),
        "UpSampling2D (nearest)": image(L.UpSampling2D),
        "UpSampling2D (bilinear)": image(lambda: L.UpSampling2D(interpolation="bilinear")),
        "MaxPooling2D": image(lambda: L.MaxPooling2D(2)),
        "AveragePooling2D": image(lambda: L.AveragePooling2D(2)),
        "GlobalAveragePooling2D": image(L.GlobalAveragePooling2D),
        "GlobalMaxPooling2D": image(L.GlobalMaxPooling2D),
        "ZeroPadding2D + Cropping2D": image(lambda: keras.Sequential([L.ZeroPadding2D(1), L.Cropping2D(1)])),
        "Reshape + Permute": sequence(lambda: keras.Sequential([L.Reshape((4, 6)), L.Permute((2, 1))])),
        "Add": merge(L.Add),
        "Subtract": merge(L.Subtract),
        "Multiply": merge(L.Multiply),
        "Average": merge(L.Average),
        "Maximum": merge(L.Maximum),
        "Minimum": merge(L.Minimum),
        "Concatenate": merge(L.Concatenate),
        "SimpleRNN": sequence(lambda: L.SimpleRNN(4)),
        "LSTM": sequence(lambda: L.LSTM(4)),
        "GRU": sequence(lambda: L.GRU(4)),
        "GRU (return_sequences)": sequence(lambda: L.GRU(4, return_sequences=True)),
        "Bidirectional(LSTM)": sequence(lambda: L.Bidirectional(L.LSTM(4))),
        "TimeDistributed(Dense)": sequence(lambda: L.TimeDistributed(L.Dense(4))),
    })
    return cases


def _functional_attention(kind):
    """Attention layers take two inputs: built as a Functional block so they stay top-level layers."""
    import keras

    L = keras.layers

    def build():
        i = keras.Input((6, 4))
        h = L.Dense(4, name="producer")(i)
        h = L.Attention()([h, h]) if kind == "Attention" else L.MultiHeadAttention(2, 4)(h, h)
        return keras.Model(i, L.Dense(3, name="head")(L.Flatten()(h)))

    return build


def _ops_left(convert):
    try:
        tflite = convert()
    except Exception as error:  # recorded in the table
        return f"error: {type(error).__name__}: {str(error).splitlines()[0][:90]}"
    islands = sorted({island["op"] for island in tflite.float_islands()} - {"QUANTIZE", "DEQUANTIZE"})
    if islands:
        return "float: " + ", ".join(islands)
    if tflite.float_islands():
        return "float: QUANTIZE/DEQUANTIZE"
    return "no float op"


def measure(name, build):
    import numpy as np

    import collabopt.keras as co
    import collabopt.tflite as ct

    row = {"layer": name}
    try:
        model = build()
    except Exception as error:  # recorded in the table
        row["ptq"] = f"error building the model: {type(error).__name__}: {str(error).splitlines()[0][:90]}"
        return row
    spec = model.inputs[0]
    rng = np.random.default_rng(0)
    shape = (32,) + tuple(spec.shape[1:])
    x = rng.integers(0, 20, shape).astype("int32") if "int" in str(spec.dtype) else rng.random(shape).astype("float32")
    row["ptq"] = _ops_left(lambda: ct.convert(model, "int8", x, allow_float_islands=True))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            qat = co.quantize_model(model)
        except Exception as error:  # recorded in the table
            row["qat"] = row["qat_calibrated"] = f"error: {type(error).__name__}: {str(error)[:90]}"
            return row
    row["left_float_by_qat"] = any("left in float" in str(w.message) for w in caught)
    for start in (0, 8):  # two training-mode passes: each updates every QAT range
        qat(x[start : start + 8], training=True)
    row["qat"] = _ops_left(lambda: ct.convert(qat, "int8", allow_float_islands=True))
    row["qat_calibrated"] = _ops_left(lambda: ct.convert(qat, "int8", x, allow_float_islands=True))
    return row


def write(rows, path, command):
    from results_file import machine

    lines = [
        "# Float ops left in int8 files, per Keras layer",
        "",
        "Written by `benchmarks/float_ops.py`: a small model around each layer (a Dense or Conv before it, a "
        "Dense head after it), converted to int8 with `allow_float_islands=True` so the file shows what stays "
        "float. QUANTIZE/DEQUANTIZE around a float op are not listed separately.",
        "",
        "* **PTQ int8**: post-training int8 with representative data. A float op here is one the TFLite "
        "converter does not quantize in the form Keras computes the layer: an op with no integer kernel "
        "(ELU, CONV_3D), or one a rewrite could avoid (GroupNormalization's NEG, as LayerNormalization's was).",
        "* **QAT (trained ranges)**: `quantize_model`, two training-mode passes (they set the ranges), `convert(qat, \"int8\")`.",
        "* **QAT (+ calibration)**: the same, with representative data for the tensors QAT does not reach.",
        "* **left float by QAT**: `quantize_model` warned that it leaves the layer in float.",
        "",
        f"Machine: {machine()}. Command: `{command}`. Date: {datetime.date.today().isoformat()}.",
        "",
        "| layer | PTQ int8 | QAT (trained ranges) | QAT (+ calibration) | left float by QAT |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['layer']} | {row['ptq']} | {row.get('qat', '—')} | {row.get('qat_calibrated', '—')} | "
            f"{'yes' if row.get('left_float_by_qat') else 'no'} |"
        )
    lines.append("")
    path.write_text("\n".join(lines))


def main():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.path.insert(0, str(HERE))
    sys.path.insert(0, str(HERE.parent))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", help="comma-separated case names (default: all)")
    parser.add_argument("--out", default=str(HERE.parent / "docs" / "float_ops.md"))
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    cases = _cases()
    cases.update({kind: _functional_attention(kind) for kind in ("Attention", "MultiHeadAttention")})
    names = args.layers.split(",") if args.layers else list(cases)
    rows = []
    for i, name in enumerate(names, 1):
        row = measure(name, cases[name])
        print(f"[float_ops {i}/{len(names)}] {name}: PTQ {row['ptq']}; QAT {row.get('qat')}; "
              f"QAT+cal {row.get('qat_calibrated')}", flush=True)
        rows.append(row)
    command = "python benchmarks/float_ops.py" + (f" --layers {args.layers}" if args.layers else "")
    write(rows, pathlib.Path(args.out), command)


if __name__ == "__main__":
    main()
