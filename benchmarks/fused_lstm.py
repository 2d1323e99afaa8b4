"""Unrolled vs fused LSTM export: conversion time, file size, op count, accuracy and latency.

    python benchmarks/fused_lstm.py [--epochs N]

Keyword-spotting (Bi)LSTMs of ``collabopt.reference_models`` trained on the
bundled spoken-digit MFCCs (FSDD), exported to float32 and int8 (calibrated on
200 training sequences) with ``convert(..., fused_lstm=False)`` (unrolled, the
default) and ``fused_lstm=True`` (TFLite's UNIDIRECTIONAL_SEQUENCE_LSTM).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(__file__))

import keras  # noqa: E402

import collabopt.tflite as ct  # noqa: E402
from collabopt import datasets  # noqa: E402
from collabopt.reference_models import compile_for_classification, recurrent_kws  # noqa: E402
from results_file import table, write_section  # noqa: E402


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=15)
    args = parser.parse_args()
    (x, y), (xt, yt) = datasets.load("spoken_digits")
    x, xt = x.reshape(x.shape[:3]), xt.reshape(xt.shape[:3])  # (samples, frames, coefficients)
    rows, notes = [], []
    for bidirectional in (False, True):
        keras.utils.set_random_seed(0)
        model = compile_for_classification(recurrent_kws("lstm", bidirectional, input_shape=x.shape[1:]))
        model.fit(x, y, epochs=args.epochs, batch_size=64, verbose=0)
        notes.append(f"{model.name}: {model.count_params():,} parameters, Keras float top-1 "
                     f"{100 * model.evaluate(xt, yt, verbose=0)[1]:.2f}%")
        for mode in ("float32", "int8"):
            for fused in (False, True):
                start = time.perf_counter()
                tfl = ct.convert(model, mode, x[:200] if mode == "int8" else None, fused_lstm=fused)
                seconds = time.perf_counter() - start
                rows.append(
                    {
                        "model": model.name,
                        "mode": mode,
                        "LSTM export": "fused" if fused else "unrolled",
                        "convert s": f"{seconds:.1f}",
                        "ops": len(tfl.ops()),
                        "fused LSTM ops": tfl.ops().count("UNIDIRECTIONAL_SEQUENCE_LSTM"),
                        "raw bytes": f"{tfl.size_report().raw_bytes:,}",
                        "top-1 %": f"{100 * tfl.evaluate(xt, yt):.2f}",
                        "latency us (batch 1, 1 thread)": f"{tfl.latency(runs=200):.0f}",
                    }
                )
                print(rows[-1], flush=True)
    body = (
        f"Spoken-digit MFCCs (FSDD, 40 frames x 13 coefficients), {args.epochs} epochs. "
        + "; ".join(notes)
        + ". int8 calibrates on 200 training sequences. A fused file takes one sequence per invocation; "
        "latency is the median of batch-1 invokes.\n\n"
        + table(rows)
    )
    write_section("fused LSTM", body)


if __name__ == "__main__":
    main()
