"""Walking the deployment tree: train each node from its parent, export, measure, decide."""

from __future__ import annotations

import pathlib
import time

import keras
import numpy as np

from collabopt.tflite import convert, has_trained_ranges
from collabopt.datasets.batches import check_inputs
from collabopt.tree.report import NodeResult, TreeReport, pareto_front
from collabopt.technique import apply
from collabopt.tree.stages import BASELINE, Stage, Targets, check_stages, default_stages

def default_compile(model, learning_rate):
    """Adam and sparse categorical cross-entropy (from logits unless the model ends in softmax)."""
    last = model.layers[-1]
    activation = getattr(getattr(last, "activation", None), "__name__", "")
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=activation != "softmax"),
        metrics=["accuracy"],
    )
    return model


def effective_weight(model, layer_name: str, weight: str = "kernel"):
    """The weight a model computes with (through any wrappers), as numpy, or None."""
    from collabopt.layers import base_layer, optimizable_variables
    from collabopt.transform import iter_layers

    for layer in iter_layers(model):
        if base_layer(layer).name == layer_name:
            if hasattr(layer, "final_weights"):
                return layer.final_weights().get(weight)
            variable = optimizable_variables(layer).get(weight)
            return None if variable is None else variable.numpy()
    return None


def run(
    model,
    train_data,
    val_data,
    targets: Targets | None = None,
    stages: list[Stage] | None = None,
    epochs: int = 1,
    out_dir=None,
    exhaustive: bool = False,
    batch_size: int = 64,
    calibration_samples: int = 200,
    latency_runs: int = 50,
    compile_fn=default_compile,
    verbose: int = 1,
    progress=print,
) -> TreeReport:
    """Walks the deployment tree for ``model`` and reports every node it ran.

    Each node starts from its parent's trained model, trains ``epochs`` epochs,
    is exported to int8 TFLite (post-training calibration for nodes without QAT,
    the trained ranges otherwise) and measured: float and int8 top-1 on
    ``val_data``, raw and gzip size, batch-1 latency. By default the walk stops
    at the first node (in depth order) that meets every target; with
    ``exhaustive=True`` all nodes run and the size/accuracy Pareto front is marked.

    Args:
        model: The trained float baseline (a Keras classifier).
        train_data: ``(x, y)`` numpy arrays.
        val_data: ``(x, y)`` numpy arrays.
        targets: :class:`Targets` (default: at most one point of accuracy drop).
        stages: The tree (default :func:`default_stages`); add or drop branches freely.
        epochs: Fine-tuning epochs per node.
        out_dir: If given: one .tflite per node, report.md, report.json and
            (with matplotlib) size_accuracy.png and weight_density.png.
        exhaustive: Run every node.
        compile_fn: ``(model, learning_rate) -> compiled model``.
        verbose: Keras fit verbosity.
        progress: Called with one line per stage (``print`` by default; None: silent).

    Returns:
        A :class:`TreeReport`.

    Example:

    >>> import collabopt.tree as tree
    >>> # report = tree.run(model, (x, y), (x_val, y_val), tree.Targets(max_accuracy_drop=0.01), exhaustive=True)
    """
    targets = targets or Targets()
    if not isinstance(targets, Targets):
        raise ValueError(f"targets must be a collabopt.tree.Targets; received {targets!r}.")
    if not isinstance(epochs, int) or epochs < 0:
        raise ValueError(f"epochs must be an integer >= 0; received {epochs!r}.")
    ordered = check_stages(list(stages) if stages is not None else default_stages())
    (x, y), (xv, yv) = train_data, val_data
    x = check_inputs([x], model, "train_data")[0]
    xv = check_inputs([xv], model, "val_data")[0]
    say = progress or (lambda *_: None)
    out = pathlib.Path(out_dir) if out_dir is not None else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)

    steps_per_epoch = int(np.ceil(len(x) / batch_size))
    baseline_float32 = convert(model, "float32")
    base_gzip = baseline_float32.size_report().gzip_bytes
    models, nodes, chosen = {}, [], None
    kernel_name = _largest_kernel(model)
    densities = {}
    for i, stage in enumerate(ordered, start=1):
        start = time.perf_counter()
        if stage.technique == BASELINE:
            trained = model  # measured as given: not recompiled, not trained
        else:
            say(f"[{i}/{len(ordered)}] {stage.label or stage.name}: {stage.technique} from {stage.parent} ...")
            trained = apply(models[stage.parent], stage.config(steps_per_epoch))
            compile_fn(trained, stage.learning_rate)
            if epochs:
                trained.fit(x, y, epochs=epochs, batch_size=batch_size, verbose=verbose)
        models[stage.name] = trained
        if kernel_name:
            densities[stage.name] = effective_weight(trained, kernel_name)
        int8 = convert(trained, "int8") if has_trained_ranges(trained) else convert(trained, "int8", x, calibration_samples=calibration_samples)
        float_top1 = _top1(trained, xv, yv, batch_size)
        size = int8.size_report()
        node = NodeResult(
            name=stage.name,
            label=stage.label or stage.name,
            parent=stage.parent,
            float_top1=float_top1,
            int8_top1=int8.evaluate(xv, yv),
            raw_bytes=size.raw_bytes,
            gzip_bytes=size.gzip_bytes,
            compression=base_gzip / size.gzip_bytes,
            latency_us=int8.latency(runs=latency_runs),
            seconds=0.0,
            meets_targets=False,
        )
        if out is not None:
            node.tflite = str(int8.save(out / f"{stage.name}.tflite"))
        baseline_float = nodes[0].float_top1 if nodes else float_top1
        node.misses = targets.misses(node, baseline_float)
        node.meets_targets = not node.misses
        node.seconds = time.perf_counter() - start
        nodes.append(node)
        say(
            f"[{i}/{len(ordered)}] {node.label}: float {100 * node.float_top1:.2f}%  int8 {100 * node.int8_top1:.2f}%  "
            f"gzip {node.gzip_bytes:,} B ({node.compression:.2f}x)  {node.latency_us:.0f} us  "
            f"{'meets targets' if node.meets_targets else 'misses: ' + '; '.join(node.misses)}  ({node.seconds:.1f} s)"
        )
        if node.meets_targets and chosen is None:
            chosen = node.name
            if not exhaustive:
                break
    pareto_front(nodes)
    report = TreeReport(
        nodes,
        chosen,
        {
            "targets": {
                "max_accuracy_drop": targets.max_accuracy_drop,
                "max_gzip_bytes": targets.max_gzip_bytes,
                "max_latency_us": targets.max_latency_us,
                "max_raw_bytes": targets.max_raw_bytes,
            },
            "epochs": epochs,
            "exhaustive": exhaustive,
            "train_samples": int(len(x)),
            "val_samples": int(len(xv)),
            "stages": [{"name": s.name, "technique": s.technique, "parent": s.parent, "settings": {k: v for k, v in s.settings.items() if isinstance(v, (int, float, str, bool))}} for s in ordered],
            "float32_baseline_gzip_bytes": base_gzip,
        },
    )
    if out is not None:
        report.save(out)
        from collabopt.tree.plots import plot_density, plot_tradeoff

        plot_tradeoff(report, out / "size_accuracy.png")
        path = ["baseline", "pruned", "sparse_clustered", "pcqat"]
        plot_density({n: densities[n] for n in path if densities.get(n) is not None}, kernel_name, out / "weight_density.png", report)
    return report


def _top1(model, x, y, batch_size):
    pred = model.predict(x, batch_size=batch_size, verbose=0)
    y = np.asarray(y)
    y = y.argmax(-1) if y.ndim > 1 and y.shape[-1] > 1 else y.reshape(-1)
    guess = (pred.reshape(-1) > 0.5).astype(y.dtype) if pred.shape[-1] == 1 else pred.argmax(-1)
    return float(np.mean(guess == y))


def _largest_kernel(model):
    from collabopt.layers import base_layer, optimizable_variables
    from collabopt.transform import iter_layers

    best, size = None, 0
    for layer in iter_layers(model):
        v = optimizable_variables(base_layer(layer)).get("kernel")
        if v is not None and int(np.prod(v.shape)) > size:
            best, size = base_layer(layer).name, int(np.prod(v.shape))
    return best
