"""QAT benchmark: float vs PTQ int8 vs QAT int8, sizes, and step-time overhead.

    python benchmarks/qat.py [--epochs 4] [--qat-epochs 1] [--skip-peer]

(a) Training-step time of the reference CNN under quantize_model over plain
    Keras 3, and TFMOT's quantize_model over plain tf_keras (own process).
(b) Fashion-MNIST reference CNN and spoken-digit DS-CNN: float top-1, int8
    top-1 after post-training quantization, int8 top-1 after QAT fine-tuning,
    and gzip sizes.
"""

from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import keras  # noqa: E402

import collabopt.keras as co  # noqa: E402
import collabopt.tflite as ct  # noqa: E402
from collabopt import datasets  # noqa: E402
from collabopt.reference_models import compile_for_classification, ds_cnn, reference_cnn  # noqa: E402
from common import overhead_section  # noqa: E402
from results_file import table, write_section  # noqa: E402


def accuracy_rows(name, data, build, epochs, qat_epochs):
    (x, y), (xt, yt) = data
    keras.utils.set_random_seed(0)
    model = compile_for_classification(build(x.shape[1:]))
    model.fit(x, y, epochs=epochs, batch_size=64, verbose=2)
    base = ct.convert(model, "float32")
    ptq = ct.convert(model, "int8", x[:500])
    qat = compile_for_classification(co.quantize_model(model), learning_rate=1e-4)
    qat.fit(x, y, epochs=qat_epochs, batch_size=64, verbose=2)
    qat_tfl = ct.convert(qat, "int8")
    float_acc = model.evaluate(xt, yt, verbose=0)[1]
    rows = [
        {"model": name, "variant": "float32", "top-1 %": f"{100 * float_acc:.2f}", "gzip bytes": f"{base.size_report().gzip_bytes:,}"},
        {"model": name, "variant": "PTQ int8", "top-1 %": f"{100 * ptq.evaluate(xt, yt):.2f}", "gzip bytes": f"{ptq.size_report().gzip_bytes:,}"},
        {"model": name, "variant": f"QAT int8 (+{qat_epochs} epoch)", "top-1 %": f"{100 * qat_tfl.evaluate(xt, yt):.2f}", "gzip bytes": f"{qat_tfl.size_report().gzip_bytes:,}"},
    ]
    for r in rows:
        print(r, flush=True)
    return rows


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--qat-epochs", type=int, default=1)
    parser.add_argument("--skip-peer", action="store_true")
    args = parser.parse_args()
    keras.utils.set_random_seed(0)
    overhead = overhead_section("quantize_model", reference_cnn, lambda: co.quantize_model(reference_cnn()), "quantize", args.skip_peer, table)
    rows = accuracy_rows("reference CNN, Fashion-MNIST", datasets.fashion_mnist(), lambda s: reference_cnn(s), args.epochs, args.qat_epochs)
    rows += accuracy_rows("DS-CNN, spoken digits", datasets.spoken_digits(), lambda s: ds_cnn(s), 4 * args.epochs, args.qat_epochs * 2)
    body = (
        overhead
        + "\n### (b) float vs PTQ vs QAT\n\nPTQ: full-integer post-training quantization with 500 calibration "
        "samples. QAT: collabopt quantize_model fine-tuned at lr 1e-4 from the float model, converted with no "
        "representative data (the ranges come from training). DS-CNN trains 4x the epochs (2,400 "
        "utterances).\n\n" + table(rows) + "\n"
    )
    write_section("qat", body)


if __name__ == "__main__":
    main()
