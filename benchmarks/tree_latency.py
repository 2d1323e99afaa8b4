"""The tree's latency columns: can they separate a filter-pruned node from its baseline?

    python benchmarks/tree_latency.py [--data digits fashion_mnist] [--epochs 2] [--no-write]

For each data set the reference CNN is trained, then ``collabopt.tree.run``
walks baseline, QAT, magnitude-pruned, 50% filter-pruned and its QAT child
(every node, one fine-tuning run each). The table shows what the tree
measured for each node's int8 and float32 files, interleaved: batch-1
latency and per-sample latency at batch 64, as ratios to the baseline's,
next to the node's MACs, and whether int8 ran slower than float32 here.
Writes the "tree latency" section of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import keras
from results_file import table, write_section

import collabopt.tree as tree
from collabopt import datasets
from collabopt.reference_models import compile_for_classification, reference_cnn
from collabopt.tree.stages import filter_pruned_stages

STAGES = [
    tree.Stage("baseline", "baseline", label="Baseline"),
    tree.Stage("qat", "quantize", "baseline", label="QAT"),
    tree.Stage("pruned", "prune", "baseline", {"sparsity": 0.5}, "Pruned (50%)"),
    *filter_pruned_stages((0.5,))[:2],
]


def walk(name, epochs):
    (x, y), (xt, yt) = datasets.fashion_mnist(n_train=20000, n_test=5000) if name == "fashion_mnist" else datasets.digits()
    keras.utils.set_random_seed(0)
    model = compile_for_classification(reference_cnn(x.shape[1:], int(y.max()) + 1))
    model.fit(x, y, epochs=4 if name == "fashion_mnist" else 20, batch_size=64, verbose=0)
    start = time.perf_counter()
    report = tree.run(model, (x, y), (xt, yt), stages=STAGES, epochs=epochs, exhaustive=True, latency_runs=50, verbose=0, progress=None)
    seconds = time.perf_counter() - start
    base = report.nodes[0]
    rows = []
    for n in report.nodes:
        rows.append({
            "node": n.label,
            "MACs": f"{n.macs:,}",
            "int8 top-1 %": f"{100 * n.int8_top1:.2f}",
            "int8 us, batch 1": f"{n.latency_us:.1f} ({n.latency_us / base.latency_us:.2f}x)",
            "float32 us, batch 1": f"{n.float32_latency_us:.1f} ({n.float32_latency_us / base.float32_latency_us:.2f}x)",
            "int8 us/sample, batch 64": f"{n.batched_latency_us:.2f} ({n.batched_latency_us / base.batched_latency_us:.2f}x)",
            "float32 us/sample, batch 64": f"{n.float32_batched_latency_us:.2f} "
                                           f"({n.float32_batched_latency_us / base.float32_batched_latency_us:.2f}x)",
            "int8 slower than float32": "yes" if n.int8_slower else "no",
        })
    body = (f"### {name}: reference CNN on {tuple(x.shape[1:])} inputs, {len(x):,} training samples\n\n{table(rows)}\n\n"
            f"Tree run {seconds:.0f} s ({len(report.nodes)} nodes, {epochs} epochs each). Ratios are to the baseline's figure.\n")
    for note in report.notes():
        body += f"\n{note}\n"
    return body


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", nargs="+", default=["digits", "fashion_mnist"], choices=["digits", "fashion_mnist"])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    body = "\n".join(walk(name, args.epochs) for name in args.data)
    body += (
        "\nEach node's int8 and float32 files are timed by the tree itself (`collabopt.tflite.compare_latency`: "
        "three interleaved rounds of 50 samples, each a loop of invokes lasting >= 2 ms, one thread, the fastest "
        "round kept). Batch 1 is what one request waits; per sample at batch 64 is the arithmetic.\n"
    )
    print(body)
    if not args.no_write:
        write_section("tree latency", body)


if __name__ == "__main__":
    main()
