"""Files that shrink for real: 4-bit weights stored as INT4, the sparse format, raw and gzip bytes.

    python benchmarks/int4.py [--epochs 2] [--stage-epochs 1] [--train-samples 20000] [--smoke]

Writes the "int4" section of benchmarks/RESULTS.md. For the reference CNN on
Fashion-MNIST and the DS-CNN on spoken-digit MFCCs it trains float32 -> QAT
(8-bit), 4-bit QAT, P4QAT (50% pruned), PC4QAT (pruned, 16 sparsity-preserving
clusters, 4-bit QAT) and PCQAT (the same at 8 bits), converts each to an int8
file (4-bit weights are INT4 tensors) and measures raw and gzip bytes, top-1
of the file, and batch-1 latency (LiteRT interpreter, one thread; every file
timed in turn, several rounds, median). A Dense-heavy model pruned to 80%
compares ``convert(..., sparse=True)`` against the dense file.

With ``--tfmot-python PATH`` (a Python with TFMOT 0.8.1 and tf_keras; default
``$COLLABOPT_TFMOT_PYTHON``) TFMOT trains the stages it can (QAT, its
experimental 4-bit QAT, 4-bit QAT of the pruned model, PCQAT) on the same
architecture, data and epochs in its own process (benchmarks/peer_tfmot.py
``int4``); its files are measured here beside collabopt's, latency interleaved
in the same rounds.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import keras
import numpy as np
from results_file import table, write_section

import collabopt.keras as co
import collabopt.tflite as ct
from collabopt import datasets
from collabopt.reference_models import compile_for_classification, ds_cnn, reference_cnn

SCHEME4 = co.DefaultNBitQuantizeScheme(num_bits_weight=4, num_bits_activation=8)


def fit(model, x, y, epochs, lr):
    compile_for_classification(model, lr).fit(x, y, epochs=epochs, batch_size=64, verbose=0)
    return model


def stages(data, build, epochs, stage_epochs, clusters):
    """``{stage: (keras model, TFLiteModel)}`` trained from one float baseline."""
    (x, y), _ = data
    keras.utils.set_random_seed(0)
    base = fit(build(x.shape[1:]), x, y, epochs, 1e-3)
    steps = int(np.ceil(len(x) / 64))
    schedule = co.PolynomialDecay(0.0, 0.5, 0, steps, frequency=max(steps // 10, 1))
    pruned = fit(co.prune_low_magnitude(base, schedule), x, y, stage_epochs, 5e-4)
    spc = fit(co.cluster_weights(pruned, number_of_clusters=clusters, preserve_sparsity=True), x, y, stage_epochs, 1e-4)
    models = {
        "QAT (8-bit)": co.quantize_model(base),
        "4-bit QAT": co.quantize_model(base, scheme=SCHEME4),
        "P4QAT": co.quantize_model(pruned, scheme=SCHEME4),
        "PCQAT (8-bit)": co.quantize_model(spc),
        "PC4QAT": co.quantize_model(spc, scheme=SCHEME4),
    }
    out = {"float32": (base, ct.convert(base, "float32"))}
    for name, model in models.items():
        out[name] = (fit(model, x, y, stage_epochs, 1e-4 if "8-bit" in name else 3e-4), None)
        out[name] = (out[name][0], ct.convert(out[name][0], "int8"))
    return out


def latencies(files: dict, rounds: int, runs: int) -> dict:
    """Median batch-1 microseconds per file, every file timed in turn in each round."""
    times = {name: [] for name in files}
    for _ in range(rounds):
        for name, tfl in files.items():
            times[name].append(tfl.latency(runs=runs, warmup=5))
    return {name: statistics.median(t) for name, t in times.items()}


def tfmot_stages(arch, args) -> dict:
    """``{"TFMOT: stage": (None, TFLiteModel)}`` from the TFMOT peer, or {} without a TFMOT Python."""
    if not args.tfmot_python:
        return {}
    data = "fashion_mnist" if arch == "reference_cnn" else "spoken_digits"
    command = [
        args.tfmot_python, os.path.join(os.path.dirname(os.path.abspath(__file__)), "peer_tfmot.py"), "int4",
        "--arch", arch, "--data", data, "--n-train", str(args.train_samples), "--epochs", str(args.epochs),
        "--stage-epochs", str(args.stage_epochs), "--clusters", str(args.clusters), "--out", "/tmp/collabopt_tfmot_int4",
    ]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    proc = subprocess.run(command, capture_output=True, text=True, env=env)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise RuntimeError(f"TFMOT peer failed: {proc.stderr.strip().splitlines()[-1:]}")
    result = json.loads(lines[-1])
    return {f"TFMOT {result['tfmot_version']}: {name}": (None, ct.load(path)) for name, path in result["files"].items()}


def model_section(title, data, build, args):
    _, (xt, yt) = data
    result = stages(data, build, args.epochs, args.stage_epochs, args.clusters)
    result.update(tfmot_stages("reference_cnn" if build is reference_cnn else "ds_cnn", args))
    lat = latencies({n: t for n, (_, t) in result.items()}, args.rounds, args.runs)
    base_raw = result["float32"][1].size_report().raw_bytes
    base_gzip = result["float32"][1].size_report().gzip_bytes
    qat8_raw = result["QAT (8-bit)"][1].size_report().raw_bytes
    float_top1 = result["float32"][1].evaluate(xt, yt)
    rows, facts = [], {}
    for name, (_model, tfl) in result.items():
        report = tfl.size_report()
        kernels = [t for t in tfl.inspect().weights() if len(t.shape) >= 2]
        dtypes = "/".join(sorted({t.dtype for t in kernels}))
        top1 = tfl.evaluate(xt, yt)
        facts[name] = {"raw": report.raw_bytes, "gzip": report.gzip_bytes, "top1": top1}
        rows.append(
            {
                "stage": name,
                "kernels": dtypes,
                "top-1 % (file)": f"{100 * top1:.2f}",
                "raw bytes": f"{report.raw_bytes:,}",
                "raw vs float32": f"{base_raw / report.raw_bytes:.2f}x",
                "gzip bytes": f"{report.gzip_bytes:,}",
                "gzip vs float32": f"{base_gzip / report.gzip_bytes:.2f}x",
                "latency us": f"{lat[name]:.0f}",
            }
        )
    breakdown = result["PC4QAT"][1].size_report().breakdown
    parts = ", ".join(f"{label} {n:,}" for label, n in breakdown.rows() if n)
    q4 = facts["4-bit QAT"]["raw"] / qat8_raw
    pc4_raw = base_raw / facts["PC4QAT"]["raw"]
    pc4_drop = 100 * (float_top1 - facts["PC4QAT"]["top1"])
    pc_gzip = {name: base_gzip / facts[name]["gzip"] for name in ("PCQAT (8-bit)", "PC4QAT")}
    targets = [
        f"- 4-bit QAT raw / 8-bit QAT raw = {q4:.3f} (target <= 0.55: {'met' if q4 <= 0.55 else 'MISSED'})",
        (f"- PC4QAT raw = 1/{pc4_raw:.2f} of float32 raw (target <= 1/7: {'met' if pc4_raw >= 7 else 'MISSED'}), "
        f"top-1 {-pc4_drop:+.2f} points against float (target >= -1: {'met' if pc4_drop <= 1 else 'MISSED'})"),
        "- gzip vs float32 gzip (target >= 10x): "
        + ", ".join(f"{name} {r:.2f}x ({'met' if r >= 10 else 'MISSED'})" for name, r in pc_gzip.items()),
        f"- PC4QAT raw bytes by content: {parts}",
    ]
    return (
        f"### {title}\n\nBaseline {args.epochs} epoch(s); each later stage {args.stage_epochs} epoch(s) from its parent; "
        f"{len(data[0][0]):,} training samples.\n\n" + table(rows) + "\n\n" + "\n".join(targets) + "\n"
    )


def sparse_section(args):
    """The sparse format on an 80%-sparse Dense-heavy model: raw bytes and latency with and without."""
    (x, y), (xt, yt) = datasets.fashion_mnist()
    x, xt = x[: args.train_samples].reshape(-1, 784), xt.reshape(-1, 784)
    y = y[: args.train_samples]
    keras.utils.set_random_seed(0)
    L = keras.layers
    mlp = keras.Sequential([keras.Input((784,)), L.Dense(256, activation="relu"), L.Dense(128, activation="relu"), L.Dense(10)])
    base = fit(mlp, x, y, args.epochs, 1e-3)
    pruned = fit(co.prune_low_magnitude(base, co.ConstantSparsity(0.8, 0)), x, y, args.stage_epochs, 5e-4)
    pqat = fit(co.quantize_model(pruned), x, y, args.stage_epochs, 1e-4)
    stripped = co.strip_pruning(pruned)
    files = {
        "float32": ct.convert(stripped, "float32"),
        "float32, sparse=True": ct.convert(stripped, "float32", sparse=True),
        "int8 (PQAT)": ct.convert(pqat, "int8"),
        "int8 (PQAT), sparse=True": ct.convert(pqat, "int8", sparse=True),
    }
    lat = latencies(files, args.rounds, args.runs)
    rows = []
    for name, tfl in files.items():
        report = tfl.size_report()
        rows.append(
            {
                "file": name,
                "ops": " ".join(sorted(set(tfl.ops()) - {"QUANTIZE", "DEQUANTIZE"})),
                "top-1 %": f"{100 * tfl.evaluate(xt, yt):.2f}",
                "raw bytes": f"{report.raw_bytes:,}",
                "gzip bytes": f"{report.gzip_bytes:,}",
                "latency us": f"{lat[name]:.0f}",
            }
        )
    same = [
        np.array_equal(files["float32"].predict(xt[:500]), files["float32, sparse=True"].predict(xt[:500])),
        np.array_equal(files["int8 (PQAT)"].predict(xt[:500]).argmax(1), files["int8 (PQAT), sparse=True"].predict(xt[:500]).argmax(1)),
    ]
    return (
        "### The sparse format: MLP 784-256-128-10, 80% pruned, Fashion-MNIST\n\n" + table(rows) + "\n\n"
        f"- float32 outputs identical with and without sparse=True: {same[0]}; int8 argmax identical: {same[1]} "
        "(the sparse int8 file runs in LiteRT's builtin kernels, XNNPack cannot prepare its DENSIFY; the dense one on XNNPack)\n"
        "- DENSIFY expands each sparse weight once when the interpreter is prepared: the file shrinks, inference does not speed up.\n"
    )


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--stage-epochs", type=int, default=1)
    parser.add_argument("--clusters", type=int, default=16)
    parser.add_argument("--train-samples", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--smoke", action="store_true", help="tiny settings; prints instead of writing RESULTS.md")
    parser.add_argument("--tfmot-python", default=os.environ.get("COLLABOPT_TFMOT_PYTHON"), help="a Python with TFMOT 0.8.1")
    args = parser.parse_args()
    if args.smoke:
        args.epochs, args.stage_epochs, args.train_samples, args.rounds, args.runs = 1, 1, 512, 1, 5
    start = time.perf_counter()
    sections = []
    fashion = datasets.fashion_mnist()
    (x, y), test = fashion
    fashion = ((x[: args.train_samples], y[: args.train_samples]), test)
    sections.append(model_section("Reference CNN, Fashion-MNIST", fashion, reference_cnn, args))
    spoken = datasets.spoken_digits()
    if args.smoke:
        (x, y), test = spoken
        spoken = ((x[: args.train_samples], y[: args.train_samples]), test)
    ds_args = argparse.Namespace(**{**vars(args), "epochs": 5 * args.epochs, "stage_epochs": 3 * args.stage_epochs})
    sections.append(model_section("DS-CNN, spoken-digit MFCCs (FSDD)", spoken, ds_cnn, ds_args))
    sections.append(sparse_section(args))
    minutes = (time.perf_counter() - start) / 60
    body = (
        "Every file converted with `collabopt.tflite.convert(model, \"int8\")` (float32: `\"float32\"`); weights "
        "trained at 4 bits are stored as INT4 tensors. Latency: batch 1, one thread, LiteRT interpreter with its "
        f"default delegate, median over {args.rounds} interleaved rounds of {args.runs} runs. "
        + (
            "Rows marked TFMOT: TFMOT 0.8.1 (tf_keras) trained the same architecture on the same data for the same "
            "epochs in its own process (`--tfmot-python`); its files are measured here, in the same latency rounds. "
            "TF 2.21's converter stores the weights of TFMOT's experimental 4-bit scheme as INT4 too (it reads the "
            "fake-quant bit width); TFMOT has no 4-bit scheme that preserves pruning or clusters, so no PC4QAT row "
            "(its row '4-bit QAT of the pruned model' is its default 4-bit scheme on the stripped pruned model).\n\n"
            if args.tfmot_python
            else "TFMOT rows skipped (no `--tfmot-python`).\n\n"
        )
        + "\n".join(sections)
        + f"\nRun time: {minutes:.1f} min.\n"
    )
    if args.smoke:
        print(body)
    else:
        write_section("int4", body)
        print(body)


if __name__ == "__main__":
    main()
