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
