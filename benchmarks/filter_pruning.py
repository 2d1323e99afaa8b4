"""Filter pruning: MACs, parameters, file size, int8 top-1 and LiteRT latency, dense vs filter-pruned.

    python benchmarks/filter_pruning.py [--models fashion_mnist ds_cnn] [--epochs 3] [--finetune-epochs 2]
        [--finetune-lr 5e-4] [--n-train 20000] [--rounds 5]

For the Fashion-MNIST reference CNN and the spoken-digit DS-CNN: a dense
baseline is trained, then each of 30/50/70% filter pruning is applied to it
(``prune_filters``), fine-tuned, stripped to a physically smaller model and
converted to int8 (post-training quantization with 500 calibration images);
the 50% model is also fine-tuned with QAT. Latency is the median of
batch-1, one-thread LiteRT runs, measured for every model in turn in
``--rounds`` interleaved rounds (so load from other processes affects all
models alike); the table shows the median over rounds. Writes one section
of benchmarks/RESULTS.md per model ("filter pruning: <model>").
"""

from __future__ import annotations

import argparse
import gzip
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import keras
from results_file import table, write_section

import collabopt.keras as co
import collabopt.tflite as ct
from collabopt import datasets
from collabopt.reference_models import compile_for_classification, ds_cnn, reference_cnn

RATIOS = (0.3, 0.5, 0.7)


def run(title, data, build, epochs, finetune_epochs, rounds, finetune_lr):
    (x, y), (xt, yt) = data
    keras.utils.set_random_seed(0)

    def fit(model, n, lr):
        compile_for_classification(model, lr).fit(x, y, epochs=n, batch_size=64, verbose=0)
        return model

    rep = x[:500]
    dense = fit(build(x.shape[1:]), epochs, 1e-3)
    rows = {"dense": (dense, ct.convert(dense, "int8", rep))}
    steps = int((len(x) + 63) // 64)
    for ratio in RATIOS:
        schedule = co.PolynomialRatio(0.0, ratio, begin_step=0, end_step=max(steps // 2, 1))
        pruned = fit(co.prune_filters(dense, pruning_schedule=schedule), finetune_epochs, finetune_lr)
        small = co.strip_pruning(pruned)
        rows[f"filter-pruned {int(ratio * 100)}%"] = (small, ct.convert(small, "int8", rep))
        if ratio == 0.5:
            qat = fit(co.quantize_model(small), 1, 1e-4)
            rows["filter-pruned 50% + QAT"] = (qat, ct.convert(qat, "int8"))
    latencies = {name: [] for name in rows}
    for _ in range(rounds):  # interleaved
        for name, (_, tfl) in rows.items():
            latencies[name].append(tfl.latency(runs=300, warmup=20, num_threads=1))
    base_lat = statistics.median(latencies["dense"])
    base_raw = len(rows["dense"][1].content)
    base_top1 = rows["dense"][1].evaluate(xt, yt)
    out = []
    for name, (model, tfl) in rows.items():
        lat = statistics.median(latencies[name])
        top1 = tfl.evaluate(xt, yt)
        raw = len(tfl.content)
        out.append(
            {
                "model": name,
                "MACs": f"{co.count_macs(model):,}",
                "params": f"{sum(int(w.size) for w in model.get_weights() if w.dtype.kind == 'f'):,}" if name != "filter-pruned 50% + QAT" else "(as 50%)",
                "raw bytes": f"{raw:,}",
                "raw vs dense": f"{base_raw / raw:.2f}x smaller",
                "gzip bytes": f"{len(gzip.compress(tfl.content, 9)):,}",
                "int8 top-1": f"{100 * top1:.2f}",
                "vs dense (points)": f"{100 * (top1 - base_top1):+.2f}",
                "latency (us)": f"{lat:.1f}",
                "speed-up": f"{base_lat / lat:.2f}x",
            }
        )
    return f"### {title}\n\n" + table(out) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["fashion_mnist", "ds_cnn"], choices=["fashion_mnist", "ds_cnn"])
    parser.add_argument("--epochs", type=int, default=3, help="baseline epochs (x5 for the DS-CNN)")
    parser.add_argument("--finetune-epochs", type=int, default=2, help="fine-tuning epochs per ratio (x3 for the DS-CNN)")
    parser.add_argument("--finetune-lr", type=float, default=5e-4)
    parser.add_argument("--n-train", type=int, default=20000, help="Fashion-MNIST training images")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    for key in args.models:
        start = time.time()
        if key == "fashion_mnist":
            data = datasets.fashion_mnist(n_train=args.n_train, n_test=5000)
            title, build, epochs, finetune = "Fashion-MNIST reference CNN", reference_cnn, args.epochs, args.finetune_epochs
        else:
            data = datasets.spoken_digits()
            title, build, epochs, finetune = "DS-CNN, spoken-digit MFCCs (FSDD)", ds_cnn, 5 * args.epochs, 3 * args.finetune_epochs
        body = run(title, data, build, epochs, finetune, args.rounds, args.finetune_lr)
        elapsed = time.time() - start
        body += (
            f"\nRun time: {elapsed / 60:.1f} min (training included; {epochs} baseline epochs, {finetune} fine-tuning "
            f"epochs per ratio at lr {args.finetune_lr:g}, 1 QAT epoch). int8 = post-training quantization "
            "(500 calibration inputs) unless QAT; top-1 of the int8 file on the test set; latency: LiteRT, batch 1, "
            f"one thread, median over {args.rounds} interleaved rounds of the median of 300 runs. Filter pruning "
            "ramps the ratio over the first half epoch (PolynomialRatio) and fine-tunes; targets at 50%: >= 1.6x "
            "faster int8, raw file >= 1.8x smaller, <= 1 point int8 top-1 below dense.\n"
        )
        print(body, flush=True)
        if not args.no_write:
            write_section(f"filter pruning: {key}", body)


if __name__ == "__main__":
    main()
