"""Conversion time, raw/gzip size, accuracy and latency per TFLite mode for the reference CNN.

    python benchmarks/export.py [--data fashion_mnist|digits] [--epochs N]
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
from collabopt.reference_models import compile_for_classification, reference_cnn  # noqa: E402
from results_file import table, write_section  # noqa: E402


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default="fashion_mnist")
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    (x, y), (xt, yt) = datasets.load(args.data)
    keras.utils.set_random_seed(0)
    model = compile_for_classification(reference_cnn(x.shape[1:], 10))
    model.fit(x, y, epochs=args.epochs, batch_size=128, verbose=2)
    float_acc = model.evaluate(xt, yt, verbose=0)[1]
    rows = []
    baseline = None
    for mode in ct.MODES:
        t = time.perf_counter()
        tfl = ct.convert(model, mode, x[:500])
        seconds = time.perf_counter() - t
        baseline = baseline or tfl
        size = tfl.size_report(baseline)
        rows.append(
            {
                "mode": mode,
                "convert s": f"{seconds:.1f}",
                "raw bytes": f"{size.raw_bytes:,}",
                "gzip bytes": f"{size.gzip_bytes:,}",
                "gzip vs float32": f"{size.compression:.2f}x",
                "top-1 %": f"{100 * tfl.evaluate(xt, yt):.2f}",
                "latency us (batch 1, 1 thread)": f"{tfl.latency(runs=200):.0f}",
            }
        )
        print(rows[-1], flush=True)
    body = (
        f"Reference CNN ({model.count_params():,} parameters) on {args.data}, {args.epochs} epochs; "
        f"Keras float top-1 {100 * float_acc:.2f}%. Calibration: 200 training images.\n\n" + table(rows)
    )
    write_section("export", body)


if __name__ == "__main__":
    main()
