"""Plots of a tree run (needs the optional ``plot`` extra: matplotlib)."""

from __future__ import annotations

import importlib.util

import numpy as np


def available() -> bool:
    """True if matplotlib is installed."""
    return importlib.util.find_spec("matplotlib") is not None


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_tradeoff(report, path, targets=None) -> bool:
    """gzip size vs int8 top-1 for every node. False without matplotlib.

    The Pareto front is joined in red, the chosen node circled, and the
    targets drawn as dashed lines: the lowest accepted int8 top-1 (float
    baseline minus ``max_accuracy_drop``) and ``max_gzip_bytes``.
    """
    if not available():
        return False
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for n in report.nodes:
        ax.scatter(n.gzip_bytes / 1024, 100 * n.int8_top1, color="tab:red" if n.pareto else "tab:blue", zorder=3)
        ax.annotate(n.label, (n.gzip_bytes / 1024, 100 * n.int8_top1), textcoords="offset points", xytext=(5, 4), fontsize=8)
    front = sorted((n for n in report.nodes if n.pareto), key=lambda n: n.gzip_bytes)
    if len(front) > 1:
        ax.plot([n.gzip_bytes / 1024 for n in front], [100 * n.int8_top1 for n in front], color="tab:red", lw=1, label="Pareto front")
    if report.chosen:
        c = report.node(report.chosen)
        ax.scatter(c.gzip_bytes / 1024, 100 * c.int8_top1, s=260, facecolors="none", edgecolors="black", lw=1.5, zorder=4,
                   label=f"chosen: {c.label}")
    if targets is not None and report.nodes:
        baseline_float = report.nodes[0].float_top1
        if targets.max_accuracy_drop is not None:
            floor = 100 * (baseline_float - targets.max_accuracy_drop)
            ax.axhline(floor, color="tab:green", ls="--", lw=1, label=f"accuracy target ({floor:.1f}%)")
        if targets.max_gzip_bytes is not None:
            ax.axvline(targets.max_gzip_bytes / 1024, color="tab:purple", ls="--", lw=1,
                       label=f"size target ({targets.max_gzip_bytes / 1024:.1f} KiB)")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="lower right", fontsize=8)
    ax.set_xlabel("int8 .tflite, gzip KiB")
    ax.set_ylabel("int8 top-1 %")
    ax.set_title("Size / accuracy trade-off")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def plot_density(weights: dict, kernel_name, path, report=None) -> bool:
    """Weight density of one kernel through the pipeline (one panel per stage). False without matplotlib."""
    if not available() or not weights:
        return False
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(weights), figsize=(3.2 * len(weights), 3.2), sharex=True)
    axes = np.atleast_1d(axes)
    labels = {n.name: n.label for n in report.nodes} if report is not None else {}
    for i, (ax, (name, w)) in enumerate(zip(axes, weights.items())):
        values = np.asarray(w).ravel()
        ax.hist(values, bins=100, color="tab:blue")
        ax.set_title(f"{labels.get(name, name)}\n{len(np.unique(values))} values, {100 * np.mean(values == 0):.0f}% zeros", fontsize=9)
        ax.set_yscale("log")
        ax.set_xlabel("weight value", fontsize=8)
        if i == 0:
            ax.set_ylabel("number of weights (log scale)", fontsize=8)
    fig.suptitle(f"Weights of '{kernel_name}' through the pipeline", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True
