"""Training-step time per technique on each Keras backend, against plain Keras on that backend.

For each backend (TensorFlow, JAX, PyTorch) a subprocess runs Keras on it and
times compiled ``fit`` steps of the plain model and of each technique's
wrapped model, interleaved (plain, technique, plain, ...; the best of the
repeats), on the reference CNN (28x28x1) and MobileNetV2 (alpha 0.35,
96x96x3, weights=None). Written to RESULTS.md with machine, command and date.

Run: ``python benchmarks/backends.py`` (``--quick``: a CI switch, fewer steps,
reference CNN only; nothing written).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

BACKENDS = ("tensorflow", "jax", "torch")
TECHNIQUES = ("prune", "filter_prune", "cluster", "qat", "pcqat")


def _models():
    import keras

    from collabopt.reference_models import reference_cnn

    return {
        "reference CNN": ((28, 28, 1), lambda: reference_cnn((28, 28, 1))),
        "MobileNetV2 0.35": ((96, 96, 3), lambda: keras.applications.MobileNetV2((96, 96, 3), alpha=0.35, weights=None, classes=10)),
    }


def _wrap(technique, model):
    import collabopt.keras as co

    if technique == "prune":
        return co.prune_low_magnitude(model, co.ConstantSparsity(0.5, 0))
    if technique == "filter_prune":
        return co.prune_filters(model, 0.5)
    if technique == "cluster":
        return co.cluster_weights(model, number_of_clusters=16)
    if technique == "qat":
        return co.quantize_model(model)
    pruned = co.prune_low_magnitude(model, co.ConstantSparsity(0.5, 0))
    return co.quantize_model(co.cluster_weights(pruned, number_of_clusters=16, preserve_sparsity=True))


def _step_time(model, shape, steps, batch_size, pruning):
    import keras
    import numpy as np

    import collabopt.keras as co

    rng = np.random.default_rng(0)
    x = rng.random((steps * batch_size, *shape), dtype=np.float32)
    y = rng.integers(0, 10, steps * batch_size)
    model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    callbacks = [co.UpdatePruningStep()] if pruning else []
    model.fit(x[: 3 * batch_size], y[: 3 * batch_size], batch_size=batch_size, epochs=1, verbose=0, callbacks=callbacks)
    start = time.perf_counter()
    model.fit(x, y, batch_size=batch_size, epochs=1, verbose=0, callbacks=callbacks)
    return (time.perf_counter() - start) / steps


def measure(models: list[str], steps: int, repeats: int, batch_size: int) -> dict:
    """In this process's backend: ``{model: {"plain": s, technique: s}}`` (best of ``repeats``, interleaved)."""
    import keras

    out = {}
    for name, (shape, make) in _models().items():
        if name not in models:
            continue
        best = {}
        for _ in range(repeats):
            for technique in ("plain", *TECHNIQUES):
                keras.utils.set_random_seed(0)
                model = make() if technique == "plain" else _wrap(technique, make())
                seconds = _step_time(model, shape, steps, batch_size, technique in ("prune", "pcqat"))
                best[technique] = min(best.get(technique, seconds), seconds)
                keras.backend.clear_session()
        out[name] = best
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="CI switch: reference CNN, few steps, nothing written")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    steps, repeats, batch_size = (5, 1, 32) if args.quick else (20, 1, 32)
    models = ["reference CNN"] if args.quick else list(_models())
    if args.worker:
        print(json.dumps(measure(models, steps, repeats, batch_size)))
        return
    results = {}
    for backend in BACKENDS:
        env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3"}
        command = [sys.executable, __file__, "--worker", backend] + (["--quick"] if args.quick else [])
        done = subprocess.run(command, env=env, capture_output=True, text=True)
        lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
        results[backend] = json.loads(lines[-1]) if lines else {"error": done.stderr.strip().splitlines()[-1:]}
        print(backend, results[backend], flush=True)
    from benchmarks.results_file import table, write_section

    rows = []
    for backend, per_model in results.items():
        for model, times in per_model.items():
            if not isinstance(times, dict):
                rows.append({"backend": backend, "model": model, "plain ms/step": f"error: {times}"})
                continue
            plain = times["plain"]
            rows.append({"backend": backend, "model": model, "plain ms/step": f"{1e3 * plain:.1f}",
                         **{t: f"{times[t] / plain:.2f}x" for t in TECHNIQUES}})
    body = (
        f"Compiled `fit`, batch {batch_size}, {steps} timed steps, best of {repeats} interleaved repeats per model; "
        "each technique's step time over plain Keras on the same backend (prune 50%, filter-prune 50%, "
        "16 clusters, 8-bit QAT, PCQAT).\n\n" + table(rows) + "\n"
    )
    print(body)
    if not args.quick:
        write_section("backends", body)


if __name__ == "__main__":
    main()
