"""Training cost of each technique on real models, against plain Keras on the same model and batch.

    python benchmarks/train_speed.py [--models mobilenet_v2,resnet50,efficientnet_b0,transformer]
                                     [--tfmot-python /work/tfmot-venv/bin/python]

For each model, in one process: the plain Keras model and its prune (50%),
filter-prune (50%), cluster (16), QAT (8-bit, BatchNormalization folded) and
PCQAT (prune -> sparsity-preserving cluster -> QAT) wrapped copies are built
and compiled, then timed alternately (plain, prune, ..., plain, prune, ...)
over ``--repeats`` rounds of ``--steps`` compiled ``fit`` steps at batch 32;
each keeps its best round. The same models then take eager steps (a custom
``GradientTape`` loop without ``tf.function``; mean of 3 after one untimed).
Peak training memory is measured per model and technique in a fresh process:
the peak resident set size while it builds, wraps, compiles and trains,
minus the resident size right after TensorFlow and collabopt are imported.
TFMOT 0.8.1 (``--tfmot-python``, a Python with ``tf_keras`` and
``tensorflow-model-optimization``) times its own wrappers on MobileNetV2 against
its own plain ``tf_keras`` model, in its own process, the same way.

Ratios are ours over plain Keras, measured side by side in one run; targets
(issue #27): fit <= 1.1x for prune / filter-prune / cluster, <= 1.2x QAT,
<= 1.3x PCQAT; eager <= 1.5x; memory <= 1.3x. Written to RESULTS.md with
machine, command and date (``--quick``, the CI switch, writes nothing).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
sys.path.insert(0, HERE)

TECHNIQUES = ("prune", "filter_prune", "cluster", "qat", "pcqat")
TARGETS = {"prune": 1.1, "filter_prune": 1.1, "cluster": 1.1, "qat": 1.2, "pcqat": 1.3}
EAGER_TARGET, MEMORY_TARGET = 1.5, 1.3

#: name -> (description, input shape, integer inputs (token ids) or images)
MODELS = {
    "mobilenet_v2": ("MobileNetV2 alpha 0.35, 96x96", (96, 96, 3), False),
    "resnet50": ("ResNet50, 64x64", (64, 64, 3), False),
    "efficientnet_b0": ("EfficientNetB0, 64x64", (64, 64, 3), False),
    "transformer": ("Transformer block, 128 tokens, d 128, 4 heads", (128,), True),
}


def build(name: str):
    import keras

    from collabopt.reference_models import application, tiny_transformer

    keras.utils.set_random_seed(0)
    if name == "transformer":
        return tiny_transformer(sequence_length=128, vocabulary=2000, num_classes=10, dim=128, heads=4)
    family = {"mobilenet_v2": "MobileNetV2", "resnet50": "ResNet50", "efficientnet_b0": "EfficientNetB0"}[name]
    return application(family, MODELS[name][1][0], classifier_activation=None)


def wrap(technique: str, model):
    """``(wrapped model, fit callbacks)`` for ``technique`` applied to ``model``."""
    import collabopt.keras as co

    if technique == "plain":
        return model, []
    if technique == "prune":
        return co.prune_low_magnitude(model, co.ConstantSparsity(0.5, 0)), [co.UpdatePruningStep()]
    if technique == "filter_prune":
        return co.prune_filters(model, 0.5), []
    if technique == "cluster":
        return co.cluster_weights(model, number_of_clusters=16, cluster_centroids_init=co.CentroidInitialization.LINEAR), []
    if technique == "qat":
        return co.quantize_model(model), []
    if technique == "pcqat":
        pruned = co.prune_low_magnitude(model, co.ConstantSparsity(0.5, 0))
        clustered = co.cluster_weights(
            pruned, number_of_clusters=16, preserve_sparsity=True, cluster_centroids_init=co.CentroidInitialization.LINEAR
        )
        return co.quantize_model(clustered), [co.UpdatePruningStep()]
    raise ValueError(technique)


def data(name: str, n: int, seed: int = 0):
    import numpy as np

    rng = np.random.default_rng(seed)
    shape, tokens = MODELS[name][1], MODELS[name][2]
    x = rng.integers(0, 2000, (n, *shape)).astype("int32") if tokens else rng.random((n, *shape), dtype=np.float32)
    return x, rng.integers(0, 10, n)


def _compiled(model):
    import keras

    model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def _eager_step(model):
    import keras
    import tensorflow as tf

    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    optimizer = keras.optimizers.Adam()

    def step(x, y):
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))

    return step


def times(name: str, techniques, steps: int, repeats: int, batch_size: int, eager_steps: int) -> dict:
    """``{technique: {"fit": s/step, "eager": s/step}}``: fit best of ``repeats`` interleaved rounds; eager mean.

    A technique that does not apply to the model (a collabopt error) is ``{"skipped": reason}``.
    """
    from collabopt.errors import CollaboptError

    x, y = data(name, steps * batch_size)
    entries, skipped = {}, {}
    for technique in ("plain", *techniques):
        try:
            model, callbacks = wrap(technique, build(name))
        except CollaboptError as error:  # e.g. filter pruning on a model whose channels all reach an EinsumDense
            skipped[technique] = str(error).splitlines()[0][:120]
            print(f"  [{name}] {technique}: not applicable ({skipped[technique]})", flush=True)
            continue
        _compiled(model).fit(x[: 2 * batch_size], y[: 2 * batch_size], batch_size=batch_size, verbose=0, callbacks=callbacks)
        entries[technique] = (model, callbacks)
        print(f"  [{name}] {technique} built and traced", flush=True)
    out = {t: {"fit": float("inf")} for t in entries}
    out.update({t: {"skipped": reason} for t, reason in skipped.items()})
    for _ in range(repeats):
        for technique, (model, callbacks) in entries.items():
            start = time.perf_counter()
            model.fit(x, y, batch_size=batch_size, verbose=0, callbacks=callbacks)
            out[technique]["fit"] = min(out[technique]["fit"], (time.perf_counter() - start) / steps)
    if eager_steps:
        from collabopt.layers import eager

        xb, yb = x[:batch_size], y[:batch_size]
        for technique, (model, _) in entries.items():
            step = _eager_step(model)
            for _ in range(eager.TRACE_AFTER_CALLS + 1):  # the steady state: past the op-by-op calls and the tracing
                step(xb, yb)
            start = time.perf_counter()
            for _ in range(eager_steps):
                step(xb, yb)
            out[technique]["eager"] = (time.perf_counter() - start) / eager_steps
    return out


def _status_kib(field: str) -> int:
    """A field of /proc/self/status in KiB (VmRSS: resident now; VmHWM: its peak in this process image)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field} line")


def memory_worker(name: str, technique: str, steps: int, batch_size: int) -> dict:
    """In a fresh process: peak RSS while building, wrapping and training, minus RSS after the imports (MiB).

    The peak is VmHWM, which belongs to this process image; ``getrusage``'s
    ``ru_maxrss`` does not, as Linux carries the parent's peak through
    fork and exec (so every worker read the benchmark process's own peak).
    """
    import keras  # noqa: F401
    import tensorflow as tf  # noqa: F401

    import collabopt.keras  # noqa: F401

    floor = _status_kib("VmRSS")
    x, y = data(name, steps * batch_size)
    model, callbacks = wrap(technique, build(name))
    _compiled(model).fit(x, y, batch_size=batch_size, verbose=0, callbacks=callbacks)
    return {"MiB": (_status_kib("VmHWM") - floor) / 1024}


def memory(name: str, techniques, steps: int, batch_size: int) -> dict:
    out = {}
    for technique in ("plain", *techniques):
        command = [sys.executable, __file__, "--memory-worker", name, technique, "--steps", str(steps), "--batch-size", str(batch_size)]
        done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
        lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
        out[technique] = json.loads(lines[-1])["MiB"] if lines else float("nan")
        print(f"  [{name}] memory {technique}: {out[technique]:.0f} MiB", flush=True)
    return out


def tfmot_times(python: str, steps: int, repeats: int, batch_size: int, timeout_s: float = 1200) -> dict:
    """TFMOT's fit step time on MobileNetV2 (alpha 0.35, 96x96) over its own plain tf_keras, in its own process.

    ``{technique: {"plain_s", "wrapped_s"}}`` (or ``{"error"}``); each call alternates its plain and wrapped model.
    """
    out = {}
    for technique in ("prune", "cluster", "quantize", "pcqat"):
        command = [python, os.path.join(HERE, "peer_tfmot.py"), "step_time", "--technique", technique, "--step-model",
                   "MobileNetV2", "--input-size", "96", "--steps", str(steps), "--batch-size", str(batch_size),
                   "--repeats", str(repeats)]
        env = {**os.environ, "TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "3"}
        try:
            done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            out[technique] = {"error": f"not measured: no result within {timeout_s / 60:.0f} minutes (wrapping, tracing and timing)"}
            print(f"  [tfmot] {technique}: {out[technique]}", flush=True)
            continue
        lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
        out[technique] = json.loads(lines[-1]) if lines else {"error": (done.stderr.strip().splitlines() or ["no output"])[-1][:200]}
        print(f"  [tfmot] {technique}: {out[technique]}", flush=True)
    return out


def _ratio(value, plain, target=None):
    if not value or value != value or not plain:
        return "n/a"
    r = value / plain
    return f"{r:.2f}x" + ("" if target is None or r <= target else " (over)")


def memory_report(memory: dict, args) -> str:
    """The peak-memory table: ``memory`` is ``{model: {technique: MiB}}``."""
    from results_file import table

    rows = [
        {"model": MODELS[name][0], "plain MiB": f"{m['plain']:.0f}",
         **{t: _ratio(m[t], m["plain"], MEMORY_TARGET) for t in m if t != "plain"}}
        for name, m in memory.items()
    ]
    return (
        f"**Peak training memory** (a fresh process per model and technique: its peak resident set size, VmHWM, while "
        f"it builds, wraps, compiles and trains {args.memory_steps} steps at batch {args.batch_size}, minus its resident "
        "size after TensorFlow and collabopt are imported; target 1.3x):\n\n" + table(rows) + "\n"
    )


def report(results: dict, tfmot: dict | None, args) -> str:
    from results_file import table

    from collabopt.layers.eager import TRACE_AFTER_CALLS

    rows, eager_rows, skipped = [], [], {}
    for name, r in results.items():
        label = MODELS[name][0]
        fit = r["times"]
        plain = fit["plain"]["fit"]
        rows.append({"model": label, "plain ms/step": f"{1e3 * plain:.0f}",
                     **{t: _ratio(fit[t].get("fit"), plain, TARGETS[t]) if "skipped" not in fit[t] else "n/a" for t in TECHNIQUES if t in fit}})
        skipped.update({f"{label}, {t}": fit[t]["skipped"] for t in fit if "skipped" in fit[t]})
        if "eager" in fit["plain"]:
            e = fit["plain"]["eager"]
            eager_rows.append({"model": label, "plain ms/step": f"{1e3 * e:.0f}",
                               **{t: _ratio(fit[t].get("eager"), e, EAGER_TARGET) if "skipped" not in fit[t] else "n/a" for t in TECHNIQUES if t in fit}})
    text = (
        f"Compiled `fit`, batch {args.batch_size}: best of {args.repeats} interleaved rounds of {args.steps} steps per "
        "model and technique (prune 50%, filter-prune 50%, cluster 16, 8-bit QAT with BatchNormalization folded, PCQAT = "
        "prune -> sparsity-preserving cluster 16 -> QAT); ratios are each technique's step time over the plain Keras "
        "model's in the same run. \"(over)\" marks a ratio above the issue's target (prune / filter-prune / cluster "
        "1.1x, QAT 1.2x, PCQAT 1.3x).\n\n" + table(rows) + "\n"
    )
    if skipped:
        text += "\nn/a: " + "; ".join(f"{where}: {reason}" for where, reason in skipped.items()) + "\n"
    if eager_rows:
        text += (
            f"\n**Custom loop** (eager `tf.GradientTape` step, no `tf.function`, batch {args.batch_size}, mean of "
            f"{args.eager_steps} steps after {TRACE_AFTER_CALLS + 1} untimed: a wrapper's first {TRACE_AFTER_CALLS} eager "
            "training calls run op by op, the next traces its transforms, collabopt/layers/eager.py; target "
            "1.5x):\n\n" + table(eager_rows) + "\n"
        )
    memory = {name: r["memory"] for name, r in results.items() if r.get("memory")}
    if memory:
        text += "\n" + memory_report(memory, args)
    if tfmot:
        row = {"model": MODELS["mobilenet_v2"][0] + " (tf_keras)"}
        for ours, theirs in (("prune", "prune"), ("cluster", "cluster"), ("qat", "quantize"), ("pcqat", "pcqat")):
            t = tfmot.get(theirs, {})
            row[ours] = _ratio(t["wrapped_s"], t["plain_s"]) if "plain_s" in t else f"error: {t.get('error', '')}"
        text += (
            "\n**TFMOT 0.8.1** (tf_keras, its own process, same architecture, batch and steps; each ratio over its own "
            "plain tf_keras model, alternated in the same process; PCQAT is its guide's chain: prune, strip, "
            "sparsity-preserving cluster, strip, cluster-preserving QAT):\n\n" + table([row]) + "\n"
        )
    return text


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--techniques", default=",".join(TECHNIQUES))
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--eager-steps", type=int, default=3)
    parser.add_argument("--memory-steps", type=int, default=4)
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--memory-only", action="store_true", help="peak memory alone, to its own section")
    parser.add_argument("--tfmot-python", default=None)
    parser.add_argument("--tfmot-timeout-min", type=float, default=20, help="per TFMOT technique (its own process)")
    parser.add_argument("--section", default="training speed")
    parser.add_argument("--quick", action="store_true", help="CI switch: transformer only, 2 steps, nothing written")
    parser.add_argument("--memory-worker", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.memory_worker:
        print(json.dumps(memory_worker(*args.memory_worker, args.steps, args.batch_size)))
        return
    if args.quick:
        args.models, args.steps, args.repeats, args.eager_steps, args.skip_memory = "transformer", 2, 1, 1, True
    techniques = [t for t in args.techniques.split(",") if t]
    if args.memory_only:
        from results_file import write_section

        body = memory_report({name: memory(name, techniques, args.memory_steps, args.batch_size) for name in args.models.split(",")}, args)
        print(body)
        write_section(args.section if args.section != "training speed" else "training memory", body)
        return
    results = {}
    for name in args.models.split(","):
        print(f"[train_speed] {name}", flush=True)
        results[name] = {"times": times(name, techniques, args.steps, args.repeats, args.batch_size, args.eager_steps)}
        if not args.skip_memory:
            results[name]["memory"] = memory(name, techniques, args.memory_steps, args.batch_size)
        print(json.dumps(results[name]), flush=True)
    tfmot = tfmot_times(args.tfmot_python, args.steps, args.repeats, args.batch_size, 60 * args.tfmot_timeout_min) if args.tfmot_python else None
    body = report(results, tfmot, args)
    print(body)
    if not args.quick:
        from results_file import write_section

        write_section(args.section, body)


if __name__ == "__main__":
    main()
