"""Walking the deployment tree: train each node from its parent, export, measure, decide."""

from __future__ import annotations

import datetime
import importlib.metadata
import pathlib
import platform
import shutil
import time

import keras
import numpy as np

import collabopt.keras

from collabopt.datasets.batches import check_inputs
from collabopt.errors import InvalidArgumentError, InvalidTypeError
from collabopt.filter_pruning import count_macs
from collabopt.filter_pruning.macs import uncounted_layers
from collabopt.technique import apply, get_technique
from collabopt.tflite import compare_latency, convert, has_trained_ranges
from collabopt.tflite.modes import export_mode
from collabopt.training import build_optimizer, compile_classifier
from collabopt.tree.report import NodeResult, TreeReport, choose, format_macs, pareto_front
from collabopt.tree.stages import BASELINE, Stage, Targets, check_stages, default_stages

#: Interleaved rounds of each node's int8 and float32 latency (the fastest kept).
LATENCY_ROUNDS = 3
#: Batch of the per-sample latency figure.
LATENCY_BATCH = 64


def fresh_run_dir(base, force: bool = False, now=None) -> pathlib.Path:
    """The folder one tree run writes to: a new timestamped folder under ``base``.

    With ``force=True`` the run writes into ``base`` itself, replacing the
    files of an earlier run there. Without it an earlier run is never
    overwritten: the folder is ``base/run-YYYYmmdd-HHMMSS`` (with a numeric
    suffix if that exists already).

    Example:

    >>> import tempfile, datetime
    >>> base = tempfile.mkdtemp()
    >>> fresh_run_dir(base, now=datetime.datetime(2026, 1, 2, 3, 4, 5)).name
    'run-20260102-030405'
    """
    base = pathlib.Path(base)
    if force:
        if base.exists() and not base.is_dir():
            raise InvalidArgumentError(f"run folder {base} is a file; give a folder.")
        for name in ("report.md", "report.json", "size_accuracy.png", "weight_density.png"):
            (base / name).unlink(missing_ok=True)
        for pattern in ("*.tflite", "*.keras"):
            for old in base.glob(pattern) if base.is_dir() else ():
                old.unlink() if old.is_file() else shutil.rmtree(old)
        base.mkdir(parents=True, exist_ok=True)
        return base
    stamp = (now or datetime.datetime.now()).strftime("run-%Y%m%d-%H%M%S")
    folder, k = base / stamp, 1
    while folder.exists():
        k += 1
        folder = base / f"{stamp}-{k}"
    folder.mkdir(parents=True)
    return folder


def versions() -> dict:
    """Versions of the packages a tree run depends on (recorded in report.json)."""
    out = {"python": platform.python_version(), "platform": platform.platform()}
    for package in ("collabopt", "tensorflow", "keras", "ai-edge-litert", "numpy", "scikit-learn"):
        try:
            out[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            out[package] = None
    return out


def node_macs(model) -> dict:
    """``{"macs": ..., "macs_uncounted": [...]}`` of the model a node exports.

    ``macs`` is :func:`collabopt.keras.count_macs` (multiply-accumulates of
    one forward pass on one example), or None ("n/a" in reports) when some
    layer's MACs cannot be counted; ``macs_uncounted`` names those layers.

    Example:

    >>> import keras
    >>> node_macs(keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)]))
    {'macs': 12, 'macs_uncounted': []}
    """
    uncounted = uncounted_layers(model)
    return {"macs": None if uncounted else count_macs(model), "macs_uncounted": uncounted}


def parameter_count(model) -> int:
    """Weights of the model's layers (what the file stores): wrappers' own variables (masks, ranges) not counted.

    Example:

    >>> import keras, collabopt.keras as co
    >>> m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    >>> parameter_count(m), parameter_count(co.prune_low_magnitude(m))
    (15, 15)
    """
    from collabopt.layers import base_layer
    from collabopt.transform import iter_layers

    return int(sum(base_layer(layer).count_params() for layer in iter_layers(model) if base_layer(layer).built))


def default_compile(model, learning_rate):
    """Adam and sparse categorical cross-entropy (from logits unless the model ends in softmax)."""
    last = model.layers[-1]
    activation = getattr(getattr(last, "activation", None), "__name__", "")
    return compile_classifier(model, learning_rate, from_logits=activation != "softmax")


def effective_weight(model, layer_name: str, weight: str = "kernel"):
    """The weight a model computes with (through any wrappers), as numpy, or None."""
    from collabopt.layers import OptimizationWrapper, base_layer, optimizable_variables
    from collabopt.transform import iter_layers

    for layer in iter_layers(model):
        if base_layer(layer).name == layer_name:
            if isinstance(layer, OptimizationWrapper):
                return layer.final_weights().get(weight)
            variable = optimizable_variables(layer).get(weight)
            return None if variable is None else keras.ops.convert_to_numpy(variable)
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
    allow_float32: bool = False,
    compile_fn=default_compile,
    verbose: int = 1,
    progress=print,
    metadata: dict | None = None,
) -> TreeReport:
    """Walks the deployment tree for ``model`` and reports every node it ran.

    Each node starts from its parent's trained model, trains ``epochs`` epochs,
    is exported to int8 TFLite (post-training calibration for nodes without QAT,
    the trained ranges otherwise) and measured: float and int8 top-1 on
    ``val_data``, raw and gzip size, latency, and the MACs and
    parameters of the model it exports (:func:`node_macs`,
    :func:`parameter_count`). Latency is measured for the node's int8 and
    float32 files side by side (:func:`collabopt.tflite.compare_latency`,
    interleaved rounds), at batch 1 and per sample at batch 64 (where a
    tiny model's batch-1 time is the interpreter's fixed cost, batch 64
    shows its arithmetic); ``int8_slower`` marks nodes whose int8 file runs
    slower than their float32 file on this machine, and the report says so. A filter-pruning node (``"filter_prune"``) is
    stripped after fine-tuning: it exports, saves and hands its children the
    physically smaller model, so its file and latency really drop. The *chosen* node is the
    smallest one (gzip bytes of its int8 .tflite) that meets every target. By
    default the walk stops at the first node after the baseline (in depth
    order) that meets every target; with ``exhaustive=True`` all nodes run and
    the size/accuracy Pareto front is marked.

    Args:
        model: The trained float baseline (a Keras classifier).
        train_data: ``(x, y)`` numpy arrays.
        val_data: ``(x, y)`` numpy arrays.
        targets: :class:`Targets` (default: at most one point of accuracy drop).
        stages: The tree (default :func:`default_stages`); add or drop branches freely.
        epochs: Fine-tuning epochs per node (>= 1: pruning reaches its
            sparsity over the first epoch).
        out_dir: If given: one .tflite and one .keras per node, report.md,
            report.json and (with matplotlib) size_accuracy.png and
            weight_density.png, written into this folder as is (see
            :func:`fresh_run_dir` for a new folder per run).
        exhaustive: Run every node.
        latency_runs: Timed samples per latency round (each sample a loop of
            invokes lasting at least 2 ms; three interleaved rounds, the
            fastest kept).
        allow_float32: A node that misses a target with its int8 file may
            meet them all with its float32 file (for instance where int8 is
            slower than float32 on this machine); it is then judged, chosen
            and reported by that file (``deploy_format="float32"``). Off by
            default: the int8 file is what every node is judged by.
        compile_fn: ``(model, learning_rate) -> compiled model``.
        verbose: Keras fit verbosity.
        progress: Called with one line per stage (``print`` by default; None: silent).
        metadata: Extra entries for the report's settings (e.g. the data set
            and model used); package versions are added automatically.

    Returns:
        A :class:`TreeReport`.

    Example:

    >>> import collabopt.tree as tree
    >>> # report = tree.run(model, (x, y), (x_val, y_val), tree.Targets(max_accuracy_drop=0.01), exhaustive=True)
    """
    targets = targets or Targets()
    if not isinstance(targets, Targets):
        raise InvalidTypeError(f"targets must be a collabopt.tree.Targets; received {targets!r}.")
    ordered = check_stages(list(stages) if stages is not None else default_stages())
    if not isinstance(epochs, int) or isinstance(epochs, bool) or epochs < 1:
        trained_stages = [s.name for s in ordered if s.technique != "baseline"]
        if trained_stages or not isinstance(epochs, int) or epochs < 0:
            raise InvalidArgumentError(
                f"epochs must be an integer >= 1 (each node fine-tunes from its parent, and pruning "
                f"reaches its sparsity over the first epoch); received {epochs!r} for stages {trained_stages}."
            )
    if not isinstance(allow_float32, bool):
        raise InvalidTypeError(f"allow_float32 must be True or False; received {allow_float32!r}.")
    if not isinstance(latency_runs, int) or isinstance(latency_runs, bool) or latency_runs < 1:
        raise InvalidArgumentError(f"latency_runs must be an integer >= 1; received {latency_runs!r}.")
    if metadata is not None and not isinstance(metadata, dict):
        raise InvalidTypeError(f"metadata must be a dict; received {type(metadata).__name__}.")
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
    models, nodes = {}, []
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
            build_optimizer(trained)  # fit traces its step once (collabopt.training)
            if epochs:
                trained.fit(x, y, epochs=epochs, batch_size=batch_size, verbose=verbose)
            if stage.strips:
                # The node exports, saves and hands its children the plain
                # model (filter pruning: the physically smaller one).
                trained = getattr(collabopt.keras, get_technique(stage.technique).strip)(trained)
        models[stage.name] = trained
        if kernel_name:
            densities[stage.name] = effective_weight(trained, kernel_name)
        needs_data = export_mode("int8").needs_calibration(has_trained_ranges(trained))
        int8 = convert(trained, "int8", x if needs_data else None, calibration_samples=calibration_samples)
        float_top1 = _top1(trained, xv, yv, batch_size)
        size = int8.size_report()
        float32 = baseline_float32 if stage.technique == BASELINE else convert(trained, "float32")
        float32_size = float32.size_report()
        files = {"int8": int8, "float32": float32}
        single = compare_latency(files, rounds=LATENCY_ROUNDS, runs=latency_runs)
        batched = compare_latency(files, batch_size=LATENCY_BATCH, rounds=LATENCY_ROUNDS, runs=latency_runs)
        node = NodeResult(
            name=stage.name,
            label=stage.label or stage.name,
            parent=stage.parent,
            float_top1=float_top1,
            int8_top1=int8.evaluate(xv, yv),
            raw_bytes=size.raw_bytes,
            gzip_bytes=size.gzip_bytes,
            compression=base_gzip / size.gzip_bytes,
            latency_us=single["int8"].median_us,
            seconds=0.0,
            meets_targets=False,
            latency_p25_us=single["int8"].p25_us,
            latency_p75_us=single["int8"].p75_us,
            zeros_fraction=_weight_zeros(int8),
            params=parameter_count(trained),
            **node_macs(trained),
            float32_latency_us=single["float32"].median_us,
            batched_latency_us=batched["int8"].median_us,
            float32_batched_latency_us=batched["float32"].median_us,
            float32_top1=float32.evaluate(xv, yv),
            float32_raw_bytes=float32_size.raw_bytes,
            float32_gzip_bytes=float32_size.gzip_bytes,
            int8_slower=int8_is_slower(single["int8"], single["float32"]),
        )
        if out is not None:
            node.tflite = str(int8.save(out / f"{stage.name}.tflite"))
            node.keras = str(out / f"{stage.name}.keras")
            trained.save(node.keras)
        baseline_float = nodes[0].float_top1 if nodes else float_top1
        targets.judge(node, baseline_float, allow_float32)
        node.seconds = time.perf_counter() - start
        nodes.append(node)
        say(
            f"[{i}/{len(ordered)}] {node.label}: float {100 * node.float_top1:.2f}%  int8 {100 * node.int8_top1:.2f}%  "
            f"gzip {node.gzip_bytes:,} B ({node.compression:.2f}x)  int8 {node.latency_us:.1f} us"
            f"{' (slower than float32 ' + format(node.float32_latency_us, '.1f') + ' us)' if node.int8_slower else ''}  "
            f"MACs {format_macs(node)}  "
            f"{'as float32  ' if node.deploy_format == 'float32' else ''}"
            f"{'meets targets' if node.meets_targets else 'misses: ' + '; '.join(node.misses)}  ({node.seconds:.1f} s)"
        )
        if node.meets_targets and stage.technique != "baseline" and not exhaustive:
            break
    pareto_front(nodes)
    report = TreeReport(
        nodes,
        choose(nodes),
        {
            **(metadata or {}),
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
            "latency": {
                "runs": latency_runs, "rounds": LATENCY_ROUNDS, "batch": 1, "batched": LATENCY_BATCH, "threads": 1,
                "statistic": "median (interquartile range) of per-sample time in the fastest of interleaved int8/float32 rounds",
            },
            "allow_float32": allow_float32,
            "int8_slower": [n.name for n in nodes if n.int8_slower],
            "chosen_by": "smallest gzip bytes of the deployed .tflite (int8 unless allow_float32 and needed) among nodes meeting every target",
            "versions": versions(),
        },
    )
    if out is not None:
        report.save(out)
        from collabopt.tree.plots import plot_density, plot_tradeoff

        plot_tradeoff(report, out / "size_accuracy.png", targets)
        path = ["baseline", "pruned", "sparse_clustered", "pcqat"]
        plot_density({n: densities[n] for n in path if densities.get(n) is not None}, kernel_name, out / "weight_density.png", report)
    return report


def int8_is_slower(int8, float32, margin: float = 0.05) -> bool:
    """Whether an int8 file runs slower than its float32 file: median more than ``margin`` above, quartiles apart.

    Example:

    >>> from collabopt.tflite import LatencyFigure
    >>> int8_is_slower(LatencyFigure(40.0, 39.0, 41.0, 1, 3), LatencyFigure(25.0, 24.5, 25.5, 1, 3))
    True
    >>> int8_is_slower(LatencyFigure(5.9, 5.7, 6.1, 1, 3), LatencyFigure(5.8, 5.6, 6.0, 1, 3))
    False
    """
    return bool(int8.median_us > (1 + margin) * float32.median_us and int8.p25_us > float32.p75_us)


def _top1(model, x, y, batch_size):
    pred = model.predict(x, batch_size=batch_size, verbose=0)
    y = np.asarray(y)
    y = y.argmax(-1) if y.ndim > 1 and y.shape[-1] > 1 else y.reshape(-1)
    guess = (pred.reshape(-1) > 0.5).astype(y.dtype) if pred.shape[-1] == 1 else pred.argmax(-1)
    return float(np.mean(guess == y))


def _weight_zeros(tfl) -> float:
    """Fraction of stored zeros over the file's multi-dimensional weight tensors (kernels)."""
    weights = [t for t in tfl.inspect().weights() if len(t.shape) >= 2]
    total = sum(int(np.prod(t.shape)) for t in weights)
    return float(sum(t.zeros_fraction * int(np.prod(t.shape)) for t in weights) / total) if total else 0.0


def _largest_kernel(model):
    from collabopt.layers import base_layer, optimizable_variables
    from collabopt.transform import iter_layers

    best, size = None, 0
    for layer in iter_layers(model):
        v = optimizable_variables(base_layer(layer)).get("kernel")
        if v is not None and int(np.prod(v.shape)) > size:
            best, size = base_layer(layer).name, int(np.prod(v.shape))
    return best
