"""Which real architectures get through the whole chain, collabopt and TFMOT 0.8.1 side by side.

    python benchmarks/coverage.py [--models MobileNetV2,lstm]

For every ``keras.applications`` family (``weights=None``, smallest input it
builds at, 10 classes), the sequence models of ``collabopt.reference_models``
and its KerasHub backbones (built offline from constructor arguments),
each in its own process: post-training int8; then prune 50% -> sparsity-
preserving cluster 16 -> QAT (a few eager steps each on random data) -> int8
from the trained ranges alone, and again with representative data for the
tensors QAT does not reach. Records the float ops left in each file, how many
recorded constraints ``verify()`` finds holding in the file, and the seconds.
Each measured row is kept in benchmarks/coverage.json (keyed by model, with
its date), so the table can be built up over several runs; docs/coverage.md is
written from every row there, in zoo order.

With ``--tfmot-python PATH`` (a Python that has ``tensorflow-model-optimization``
0.8.1 and ``tf_keras``; default ``$COLLABOPT_TFMOT_PYTHON``) the same models,
data and steps go through TFMOT in its own process (benchmarks/peer_tfmot.py
``coverage``) and the table gains TFMOT's columns. Both sides' files are read
by the same code here: float ops left, and how many kernels still hold the
50% zeros and at most 16 values per channel.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import re
import subprocess
import sys
import tempfile
import time

HERE = pathlib.Path(__file__).parent
SEQUENCE_MODELS = ("conv1d", "lstm", "lstm_fused", "bilstm_fused", "bigru", "transformer")
#: Rows exported with ``convert(..., fused_lstm=True)``: TFLite's fused LSTM op, its gates calibrated.
FUSED_LSTM_MODELS = ("lstm_fused", "bilstm_fused")


def build(name):
    from collabopt import reference_models as zoo

    if name in zoo.APPLICATIONS:
        return zoo.application(name)
    if name in zoo.KERAS_HUB_BACKBONES:
        return zoo.keras_hub_classifier(name)
    return {
        "conv1d": zoo.conv1d_kws,
        "lstm": lambda: zoo.recurrent_kws("lstm"),
        "lstm_fused": lambda: zoo.recurrent_kws("lstm"),
        "bilstm_fused": lambda: zoo.recurrent_kws("lstm", bidirectional=True),
        "bigru": lambda: zoo.recurrent_kws("gru", bidirectional=True),
        "transformer": zoo.tiny_transformer,
    }[name]()


def measure(name) -> dict:
    """Runs one model through PTQ and the PCQAT chain (in this process)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import warnings

    warnings.simplefilter("ignore")
    import keras
    import numpy as np
    import tensorflow as tf

    import collabopt.keras as co
    import collabopt.tflite as ct

    from collabopt import reference_models as zoo

    model = build(name)
    rng = np.random.default_rng(0)
    spec = model.inputs[0]
    shape = (8,) + tuple(spec.shape[1:])
    if name in zoo.KERAS_HUB_BACKBONES:
        x = zoo.keras_hub_data(model, batch=8)
    else:
        x = rng.integers(0, 100, shape).astype("int32") if "int" in str(spec.dtype) else rng.random(shape).astype("float32")
    y = rng.integers(0, model.outputs[0].shape[-1], 8)
    row = {"model": name, "params": int(model.count_params())}

    def float_ops(tflite):
        return sorted({i["op"] for i in tflite.float_islands()})

    options = {"fused_lstm": True} if name in FUSED_LSTM_MODELS else {}
    start = time.perf_counter()
    try:
        row["ptq"] = float_ops(ct.convert(model, "int8", x, allow_float_islands=True, **options))
    except Exception as error:  # recorded, not raised: the table shows it
        row["ptq"] = f"error: {type(error).__name__}: {str(error)[:160]}"
    row["ptq_seconds"] = round(time.perf_counter() - start, 1)

    from_logits = getattr(model.layers[-1], "activation", None) is not keras.activations.softmax
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=from_logits)

    def train(m, steps=2):
        optimizer = keras.optimizers.SGD(1e-3)
        for _ in range(steps):
            with tf.GradientTape() as tape:
                loss = loss_fn(y, m(x, training=True))
            grads = tape.gradient(loss, m.trainable_variables)
            optimizer.apply_gradients([(g, v) for g, v in zip(grads, m.trainable_variables) if g is not None])
        return m

    start = time.perf_counter()
    try:
        pruned = train(co.prune_low_magnitude(model, co.ConstantSparsity(0.5, 0, frequency=1)))
        clustered = train(co.cluster_weights(pruned, number_of_clusters=16, preserve_sparsity=True), 1)
        qat = train(co.quantize_model(clustered))
        if options:  # the fused op's gates are calibrated: no file from trained ranges alone
            row["pcqat"] = "n/a (fused LSTM gates need representative data)"
            mixed = ct.convert(qat, "int8", x, allow_float_islands=True, **options)
        else:
            trained = ct.convert(qat, "int8", allow_float_islands=True)
            row["pcqat"] = float_ops(trained)
            mixed = trained if not row["pcqat"] else ct.convert(qat, "int8", x, allow_float_islands=True)
        row["fused_lstm_ops"] = mixed.ops().count("UNIDIRECTIONAL_SEQUENCE_LSTM")
        row["pcqat_calibrated"] = float_ops(mixed)
        row["kept"] = kept_kernels(mixed)
        report = ct.verify(qat, mixed)
        row["verified"] = f"{sum(c.holds for c in report)}/{len(report)}"
        row["reached"] = round(report.reached_share(model), 4)
    except Exception as error:
        row["pcqat"] = f"error: {type(error).__name__}: {str(error)[:160]}"
    row["pcqat_seconds"] = round(time.perf_counter() - start, 1)
    return row


def kept_kernels(tflite) -> str:
    """Kernels of the file with >= 45% zeros and <= 16 values per channel.

    A kernel: an int8/int4 constant with at least two dimensions above 1 (a
    broadcast (1, 1, 1, C) scale of a standalone BatchNormalization is not).
    """
    kernels = [
        t for t in tflite.inspect().weights() if sum(d > 1 for d in t.shape) >= 2 and t.dtype in ("int8", "int4")
    ]
    kept = [t for t in kernels if t.zeros_fraction >= 0.45 and t.max_unique_per_channel <= 16]
    return f"{len(kept)}/{len(kernels)}"


def measure_files(row) -> dict:
    """Reads the files a peer wrote (their paths in ``row``) with collabopt's inspection."""
    import collabopt.tflite as ct

    for key in ("ptq", "pcqat", "pcqat_calibrated"):
        path = row.pop(f"{key}_path", None)
        if path:
            tflite = ct.load(path)
            row[key] = sorted({i["op"] for i in tflite.float_islands()})
            if key != "ptq":
                row["kept"] = kept_kernels(tflite)
    for key in ("ptq", "pcqat"):
        if f"{key}_error" in row:
            row[key] = "error: " + row.pop(f"{key}_error")
    return row


def _rss_gib(pid: int) -> float:
    try:
        fields = pathlib.Path(f"/proc/{pid}/status").read_text().split("VmRSS:")[1].split()
        return int(fields[0]) / 2**20
    except (OSError, IndexError, ValueError):
        return 0.0


def run_isolated(args, python=sys.executable, memory_limit_gib: float | None = None, time_limit_min: float | None = None) -> dict:
    """Runs a measuring process; returns its last JSON line, or an error row.

    With ``memory_limit_gib``, the process is stopped once its resident memory
    passes the limit (instead of pushing a shared machine into swap-less
    thrashing); with ``time_limit_min``, once it has run that long. Either
    way the row says so, with the last stage the process reported.
    """
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(HERE.parent))
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen([python, *args], stdout=out, stderr=err, text=True, env=env)
        peak, start, timed_out = 0.0, time.monotonic(), False
        while proc.poll() is None:
            peak = max(peak, _rss_gib(proc.pid))
            timed_out = bool(time_limit_min) and time.monotonic() - start > 60 * time_limit_min
            if (memory_limit_gib and peak > memory_limit_gib) or timed_out:
                proc.kill()
                proc.wait()
                break
            time.sleep(2)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    for line in reversed(stdout.strip().splitlines()):
        if line.startswith("{"):
            return dict(json.loads(line), peak_rss_gib=round(peak, 1))
    stages = [line.split("] ", 1)[1] for line in stderr.splitlines() if line.startswith("[stage] ")]
    where = f" during {stages[-1]}" if stages else ""
    if memory_limit_gib and peak > memory_limit_gib:
        return {"error": f"stopped: resident memory passed {memory_limit_gib:g} GiB{where}", "stages": stages}
    if timed_out:
        return {"error": f"stopped: still running after {time_limit_min:g} min{where}", "stages": stages}
    return {"error": (stderr.strip().splitlines() or ["no output"])[-1][:200], "stages": stages}


def cell(value) -> str:
    if value is None:
        return "—"
    if isinstance(value, list):
        return "no float op" if not value else "float: " + ", ".join(value)
    text = re.sub(r"\S*/\S+\.py:\d+:\d+: ", "", str(value))  # source locations in converter messages
    return (text[:110] + " …" if len(text) > 110 else text).replace("|", "/")


def _seconds(row) -> str:
    """PTQ + chain seconds; — for a run that was stopped (it reported none)."""
    if "ptq_seconds" not in row and "pcqat_seconds" not in row:
        return "—"
    return f"{row.get('ptq_seconds', 0) + row.get('pcqat_seconds', 0):.0f}"


def write(rows, path, tfmot_rows=None):
    from results_file import machine

    lines = [
        "# Model coverage",
        "",
        "Every `keras.applications` classification family (`weights=None`, the smallest input it builds at, "
        "10 classes) and the sequence models of `collabopt.reference_models`, through post-training int8 and "
        "through prune 50% → sparsity-preserving cluster 16 → QAT → int8. Each stage trains 2 eager steps on "
        "random data (this table is about what converts and what survives, not accuracy).",
        "",
        "* **PTQ int8**: float ops left by post-training int8 (representative data, no QAT).",
        "* **PCQAT int8 (trained ranges)**: float ops left when converting from the QAT ranges alone.",
        "* **PCQAT int8 (+ calibration)**: float ops left when `representative_data` is also given: trained "
        "ranges are kept, the tensors QAT does not reach (inside MultiHeadAttention, LSTM/GRU gates, plain ops "
        "such as `x + 3.0`) are calibrated.",
        "* **verified**: constraints recorded in training (50% zeros, ≤ 16 values) that `verify()` finds in the file.",
        "* **kernels kept**: kernels of the final file (int8/int4 constants with two or more dimensions above 1) that "
        "still have ≥ 45% zeros and "
        "≤ 16 values per channel, read from the file alone by the same code for both libraries.",
        "* **lstm_fused**, **bilstm_fused**: the lstm model and its Bidirectional form exported with "
        "`convert(..., fused_lstm=True)`: one TFLite UNIDIRECTIONAL_SEQUENCE_LSTM per direction (the other rows "
        "export recurrent layers unrolled); the fused op's gates are calibrated, so there is no file from trained "
        "ranges alone.",
        "",
        f"Machine: {machine()}. Command: `python benchmarks/coverage.py --models {','.join(r['model'] for r in rows)}"
        f"{' --tfmot-python PATH' if tfmot_rows else ''}` (rows kept in `benchmarks/coverage.json`, each with its date; "
        "`--models` re-measures some of them).",
        "",
        "## collabopt",
        "",
        "| model | params | PTQ int8 | PCQAT int8 (trained ranges) | PCQAT int8 (+ calibration) | verified | kernels kept | seconds |",
        "|---|---|---|---|---|---|---|---|",
    ]
    hub_rows = [r for r in rows if r.get("model", "").endswith("Backbone")]
    rows = [r for r in rows if r not in hub_rows]
    for row in rows:
        name = row.get("model")
        line = (
            f"| {name} | {row.get('params', '—'):,} | {cell(row.get('ptq', row.get('error')))} | {cell(row.get('pcqat'))} | "
            f"{cell(row.get('pcqat_calibrated'))} | {row.get('verified', '—')} | {row.get('kept', '—')} | "
            f"{row.get('ptq_seconds', 0) + row.get('pcqat_seconds', 0):.0f} |"
        )
        lines.append(line)
    if hub_rows:
        lines += [
            "",
            "## KerasHub backbones",
            "",
            "KerasHub backbones built from constructor arguments (random weights; presets would download), small "
            "configurations of each family (`collabopt.reference_models.KERAS_HUB_BACKBONES`), under a classifier "
            "head with fixed input shapes (`keras_hub_classifier`): images 32×32, text 16 tokens with a full padding "
            "mask. Their layers are KerasHub's composite layers (`TransformerEncoder`, `InvertedResidualBlock`, "
            "`ViTPatchingAndEmbedding`, ...), optimized inside (docs/composite.md). **kernel parameters reached**: "
            "the share of the model's kernel parameters (trainable weights of rank ≥ 2, no bias) whose recorded "
            "zeros and clusters `verify()` finds in the int8 file (target ≥ 95%); what is left is named in the "
            "apply warning (KerasHub's `PositionEmbedding` tables). TFMOT has no row: `tf_keras` cannot build "
            "KerasHub models (KerasHub is Keras 3 only).",
            "",
            "| backbone | params | PTQ int8 | PCQAT int8 (trained ranges) | PCQAT int8 (+ calibration) | verified | "
            "kernel parameters reached | seconds |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for row in hub_rows:
            reached = f"{100 * row['reached']:.1f}%" if "reached" in row else "—"
            lines.append(
                f"| {row.get('model')} | {row.get('params', '—'):,} | {cell(row.get('ptq', row.get('error')))} | "
                f"{cell(row.get('pcqat'))} | {cell(row.get('pcqat_calibrated'))} | {row.get('verified', '—')} | "
                f"{reached} | {_seconds(row)} |"
            )
    if tfmot_rows:
        version = next((r["tfmot_version"] for r in tfmot_rows if "tfmot_version" in r), "?")
        lines += [
            "",
            f"## TFMOT {version} (tf_keras), same models, data and steps",
            "",
            "`prune_low_magnitude` → `strip_pruning` → `cluster_weights(preserve_sparsity=True)` → `strip_clustering` → "
            "`quantize_apply` with `Default8BitClusterPreserveQuantizeScheme(preserve_sparsity=True)` → "
            "`TFLiteConverter` with `Optimize.DEFAULT` (the trained ranges), then again with a representative dataset. "
            "An error names the stage that raised it and TFMOT's message.",
            "",
            "| model | PTQ int8 | PCQAT int8 (trained ranges) | PCQAT int8 (+ calibration) | kernels kept | seconds |",
            "|---|---|---|---|---|---|",
        ]
        for row in tfmot_rows:
            lines.append(
                f"| {row.get('model')} | {cell(row.get('ptq', row.get('error')))} | {cell(row.get('pcqat'))} | "
                f"{cell(row.get('pcqat_calibrated'))} | {row.get('kept', '—')} | {_seconds(row)} |"
            )
    lines += [
        "",
        "Ops LiteRT has no integer kernel for, or that stay float after conversion, are listed in the "
        "table where they occur; `convert(..., allow_float_islands=True)` is the explicit way to accept them. "
        "docs/float_ops.md lists, per Keras layer, what stays float in int8 files after PTQ, QAT and QAT with "
        "calibration.",
        "",
        "Keras' ConvNeXt writes its residual connections as plain `inputs + x` (an op, not a layer); "
        "`quantize_model` rebuilds such two-tensor operators as merge layers, so they carry trained ranges. "
        "`verified` is the per-weight check of `verify()`; `kernels "
        "kept` reads the file alone and counts every kernel-shaped int8 constant, also ones the chain does not own "
        "(the transformer's 11 against its 8 optimized weights). — : not measured (a row kept from an earlier "
        "run with a different count). `seconds` is as measured on the row's date (kept in benchmarks/coverage.json): "
        "collabopt rows measured before 2026-12-03 predate linear-time pruning masks, one layer copy per "
        "`quantize_model` and constant-frozen int8 export, which made the chain about 1.5-2x faster on these "
        "models (benchmarks/RESULTS.md, 'chain on real models'). A TFMOT run is stopped once its resident memory "
        "passes `--memory-limit-gib` (default 16) or it has run `--time-limit-min` (default 40; the rows of "
        "2026-12-03 ran with 15), and its row names the stage it was in; ResNet50's first run grew past 21 GiB on "
        "this 24 GiB machine (2026-11-25), before either limit existed. TFMOT gets through the whole chain on 2 "
        "of its 18 models (MobileNet, MobileNetV2), keeping fewer kernels sparse and clustered in the file than "
        "collabopt on both; collabopt gets through on all 18. The two fused-LSTM rows are a collabopt export "
        "option and have no TFMOT row (TFMOT's lstm model fails already at post-training int8).",
        "",
    ]
    path.write_text("\n".join(lines))


def main():
    from collabopt import reference_models as zoo

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--models", default=",".join(list(zoo.APPLICATIONS) + list(SEQUENCE_MODELS) + list(zoo.KERAS_HUB_BACKBONES))
    )
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--out", default=str(HERE.parent / "docs" / "coverage.md"))
    parser.add_argument("--tfmot-python", default=os.environ.get("COLLABOPT_TFMOT_PYTHON"), help="a Python with TFMOT 0.8.1 and tf_keras")
    parser.add_argument("--files", default="/tmp/collabopt_coverage", help="where the TFMOT peer writes its .tflite files")
    parser.add_argument("--results", default=str(HERE / "coverage.json"), help="rows measured so far (read, updated, written)")
    parser.add_argument("--skip-collabopt", action="store_true", help="measure only the TFMOT side of --models")
    parser.add_argument(
        "--memory-limit-gib", type=float, default=16.0,
        help="stop a TFMOT process whose resident memory passes this (GiB); its row records where",
    )
    parser.add_argument(
        "--time-limit-min", type=float, default=40.0,
        help="stop a TFMOT process still running after this many minutes; its row records where",
    )
    parser.add_argument("--write-only", action="store_true", help="measure nothing; write the table from --results")
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one)))
        return
    results_path = pathlib.Path(args.results)
    results = json.loads(results_path.read_text()) if results_path.exists() else {"collabopt": {}, "tfmot": {}}
    today = str(datetime.date.today())
    for name in [] if args.write_only else args.models.split(","):
        if not args.skip_collabopt:
            print(f"[coverage] {name} ...", flush=True)
            row = run_isolated([__file__, "--one", name])
            row.setdefault("model", name)
            results["collabopt"][name] = dict(row, date=today)
            print(f"[coverage] {json.dumps(row)}", flush=True)
        if args.tfmot_python and name not in zoo.KERAS_HUB_BACKBONES:  # tf_keras cannot build them
            peer = [str(HERE / "peer_tfmot.py"), "coverage", "--model", name, "--out", args.files]
            row = run_isolated(peer, args.tfmot_python, args.memory_limit_gib, args.time_limit_min)
            ptq_file = pathlib.Path(args.files) / f"{name}_ptq.tflite"
            if "error" in row and "ptq done" in row.get("stages", ()) and ptq_file.exists():
                # Stopped after PTQ: the PTQ file is complete, the chain is what failed.
                row = {"ptq_path": str(ptq_file), "pcqat_error": row["error"], "stages": row["stages"]}
            row = measure_files(row)
            row.setdefault("model", name)
            results["tfmot"][name] = dict(row, date=today)
            print(f"[coverage] TFMOT {json.dumps(row)}", flush=True)
        results_path.write_text(json.dumps(results, indent=1) + "\n")
    order = list(zoo.APPLICATIONS) + list(SEQUENCE_MODELS) + list(zoo.KERAS_HUB_BACKBONES)
    rows = [results["collabopt"][m] for m in order if m in results["collabopt"]]
    tfmot_rows = [results["tfmot"][m] for m in order if m in results["tfmot"]]
    write(rows, pathlib.Path(args.out), tfmot_rows)


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    main()
