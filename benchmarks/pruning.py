"""Pruning benchmark: step-time overhead vs plain Keras and TFMOT; accuracy and size vs sparsity.

    python benchmarks/pruning.py [--epochs 4] [--fine-tune-epochs 2] [--skip-peer]

(a) Training-step time of the reference CNN (batch 64, 28x28) pruned with
    collabopt over the same model in plain Keras 3, and TFMOT's
    prune_low_magnitude over plain tf_keras in its own process, measured in
    the same run.
(b) Fashion-MNIST reference CNN: float and int8 top-1 and gzip size at 0 / 50 /
    75 / 90 % sparsity and 2:4, each pruned from the trained dense model and
    fine-tuned.
"""

from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import keras  # noqa: E402
import numpy as np  # noqa: E402

import collabopt.keras as co  # noqa: E402
import collabopt.tflite as ct  # noqa: E402
from collabopt import datasets  # noqa: E402
from collabopt.reference_models import compile_for_classification, reference_cnn  # noqa: E402
from common import overhead_section  # noqa: E402
from results_file import table, write_section  # noqa: E402


def overhead(skip_peer):
    keras.utils.set_random_seed(0)
    return overhead_section(
        "prune_low_magnitude (50%)",
        reference_cnn,
        lambda: co.prune_low_magnitude(reference_cnn(), co.ConstantSparsity(0.5, 0, frequency=100)),
        "prune",
        skip_peer,
        table,
    )


class InputChannelsDivisibleBy:
    """Pruning policy for 2:4: only layers whose input channels split into groups of n."""

    def __init__(self, n):
        self.n = n

    def allow_pruning(self, layer):
        from collabopt.layers import weight_specs

        for spec in weight_specs(layer) or ():
            variable = getattr(layer, spec.name)
            if spec.input_axis is None or variable.shape[spec.input_axis] % self.n:
                return False
        return True


def accuracy_table(epochs: int, fine_tune: int) -> str:
    (x, y), (xt, yt) = datasets.fashion_mnist()
    keras.utils.set_random_seed(0)
    dense = compile_for_classification(reference_cnn())
    dense.fit(x, y, epochs=epochs, batch_size=128, verbose=2)
    baseline_float = dense.evaluate(xt, yt, verbose=0)[1]
    rep = x[:500]
    base_tfl = ct.convert(dense, "float32")
    rows = []

    def row(label, model):
        float_acc = model.evaluate(xt, yt, verbose=0)[1]
        int8 = ct.convert(model, "int8", rep)
        size = int8.size_report(base_tfl)
        kernels = [t for t in int8.inspect().weights() if t.dtype == "int8" and len(t.shape) >= 2]
        rows.append(
            {
                "model": label,
                "float top-1 %": f"{100 * float_acc:.2f}",
                "int8 top-1 %": f"{100 * int8.evaluate(xt, yt):.2f}",
                "min kernel zeros in int8 file %": f"{100 * min(t.zeros_fraction for t in kernels):.1f}",
                "int8 gzip bytes": f"{size.gzip_bytes:,}",
                "vs float32 gzip": f"{size.compression:.2f}x",
            }
        )
        print(rows[-1], flush=True)
        return float_acc

    row("dense (0%)", dense)
    results = {}
    steps_per_epoch = int(np.ceil(len(x) / 128))
    for label, kwargs in [
        ("50%", {"pruning_schedule": co.PolynomialDecay(0.0, 0.5, 0, steps_per_epoch, frequency=50)}),
        ("75%", {"pruning_schedule": co.PolynomialDecay(0.0, 0.75, 0, steps_per_epoch, frequency=50)}),
        ("90%", {"pruning_schedule": co.PolynomialDecay(0.0, 0.9, 0, steps_per_epoch, frequency=50)}),
        ("2:4", {"sparsity_m_by_n": (2, 4), "pruning_schedule": co.ConstantSparsity(0.5, 0, frequency=50), "pruning_policy": InputChannelsDivisibleBy(4)}),
    ]:
        keras.utils.set_random_seed(0)
        pruned = compile_for_classification(co.prune_low_magnitude(dense, **kwargs), learning_rate=5e-4)
        pruned.fit(x, y, epochs=fine_tune, batch_size=128, verbose=2)
        results[label] = row(f"pruned {label}", pruned)
    drop = 100 * (baseline_float - results["50%"])
    return (
        f"### (b) Fashion-MNIST reference CNN\n\nDense model: {epochs} epochs on all 60,000 training images; "
        f"each pruned model starts from it and fine-tunes {fine_tune} epochs (sparsity ramps over the first "
        "epoch). int8: full-integer post-training quantization, 500 calibration images. gzip is level 9 of "
        "the .tflite bytes.\n\n" + table(rows) + f"\n\ndense minus 50%-sparse float top-1: {drop:+.2f} points "
        "(target: within 0.5 point). The dense row is not fine-tuned further, so the pruned rows have had "
        f"{fine_tune} more epochs of training. 2:4 applies to the layers whose input channels divide by 4 "
        "(all but the first conv, which has 1 input channel).\n"
    )


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--fine-tune-epochs", type=int, default=2)
    parser.add_argument("--skip-peer", action="store_true")
    args = parser.parse_args()
    body = overhead(args.skip_peer) + "\n" + accuracy_table(args.epochs, args.fine_tune_epochs)
    write_section("pruning", body)


if __name__ == "__main__":
    main()
