"""Helpers shared by the benchmark scripts: step timing, the TFMOT peer, training."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))


def step_time(model, steps=60, batch_size=64, repeats=3, input_shape=(28, 28, 1), callbacks=()):
    """Best-of-``repeats`` seconds per training step of ``model`` on random data."""
    import keras

    rng = np.random.default_rng(0)
    x = rng.random((steps * batch_size, *input_shape), dtype=np.float32)
    y = rng.integers(0, 10, steps * batch_size)
    model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x[: 5 * batch_size], y[: 5 * batch_size], batch_size=batch_size, epochs=1, verbose=0, callbacks=list(callbacks))
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        model.fit(x, y, batch_size=batch_size, epochs=1, verbose=0, callbacks=list(callbacks))
        times.append((time.perf_counter() - t) / steps)
    return min(times)


def tfmot_step_time(technique, steps=60, batch_size=64, repeats=3):
    """Runs the TFMOT peer in its own process; returns its JSON result, or {'error': ...}."""
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="3")
    cmd = [
        sys.executable, os.path.join(HERE, "peer_tfmot.py"), "step_time", "--technique", technique,
        "--steps", str(steps), "--batch-size", str(batch_size), "--repeats", str(repeats),
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    for line in reversed(proc.stdout.strip().splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    return {"error": (proc.stderr.strip().splitlines() or ["no output"])[-1][:300]}


def overhead_section(label, make_plain, make_wrapped, technique, skip_peer, table):
    """Markdown for "(a) training-step overhead": ours vs plain Keras 3, and TFMOT vs plain tf_keras."""
    plain, ours = [], []
    for _ in range(2):  # interleaved, so both see the machine in the same state
        plain.append(step_time(make_plain()))
        ours.append(step_time(make_wrapped()))
    plain_s, ours_s = min(plain), min(ours)
    rows = [
        {"model": "plain Keras 3", "ms/step": f"{1e3 * plain_s:.2f}", "ratio": "1.00x"},
        {"model": f"collabopt {label}", "ms/step": f"{1e3 * ours_s:.2f}", "ratio": f"{ours_s / plain_s:.2f}x"},
    ]
    note = ""
    if not skip_peer:
        peer = tfmot_step_time(technique)
        if "error" in peer:
            note = f"\nTFMOT peer failed: {peer['error']}\n"
        else:
            rows.append({"model": "plain tf_keras (peer's baseline)", "ms/step": f"{1e3 * peer['plain_s']:.2f}", "ratio": "1.00x"})
            rows.append(
                {
                    "model": f"TFMOT {peer['tfmot_version']} {label}",
                    "ms/step": f"{1e3 * peer['wrapped_s']:.2f}",
                    "ratio": f"{peer['wrapped_s'] / peer['plain_s']:.2f}x",
                }
            )
            note = f"\ncollabopt / TFMOT step time: {ours_s / peer['wrapped_s']:.2f}x\n"
    return (
        "### (a) training-step overhead\n\nReference CNN (28x28x1), batch 64, Adam, best of 3 epochs of 60 "
        "steps after warm-up; each ratio is against the plain model of the same framework.\n\n"
        + table(rows) + "\n" + note
    )
