"""Which channel counts LiteRT's kernels run at full speed: the default of ``prune_filters(channel_multiple=)``.

A filter-pruned layer keeps ``(1 - ratio)`` of its channels; if LiteRT's
convolution kernels process channels in blocks, a count between two block
sizes costs as much as the larger one (or more, off the fast path). This
script times, side by side, a 3x3 conv followed by a 1x1 conv whose shared
channel count ``C`` sweeps 4..32, in float32 and full int8, at batch 1 with
one thread, in interleaved rounds (the median of the rounds), and reports the
latency per channel count. ``--quick`` is a CI switch (fewer counts and runs).

Run: ``python benchmarks/channel_multiple.py``
"""

from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import keras  # noqa: E402
import numpy as np  # noqa: E402

import collabopt.tflite as ct  # noqa: E402
from benchmarks.results_file import table, write_section  # noqa: E402


def _model(channels: int, size: int, inputs: int) -> keras.Model:
    L = keras.layers
    x = keras.Input((size, size, inputs))
    y = L.Conv2D(channels, 3, padding="same", activation="relu")(x)
    y = L.Conv2D(inputs, 1, activation="relu")(y)
    return keras.Model(x, y)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="CI switch: a few counts, short runs")
    parser.add_argument("--size", type=int, default=24, help="input height and width")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    counts = [6, 8, 12, 16] if args.quick else list(range(4, 33, 2))
    rounds, runs = (1, 20) if args.quick else (args.rounds, 60)
    keras.utils.set_random_seed(0)
    files = {}
    for c in counts:
        model = _model(c, args.size, 16)
        data = np.random.default_rng(0).normal(size=(64, args.size, args.size, 16)).astype("float32")
        files[c] = {"float32": ct.convert(model, "float32"), "int8": ct.convert(model, "int8", data)}
    times = {(c, mode): [] for c in counts for mode in ("float32", "int8")}
    for r in range(rounds):
        for c in counts:  # interleaved: every count once per round
            for mode in ("float32", "int8"):
                times[(c, mode)].append(files[c][mode].latency_stats(runs=runs)["median_us"])
        print(f"round {r + 1}/{rounds} done", flush=True)
    rows = []
    for c in counts:
        f32, i8 = (float(np.median(times[(c, m)])) for m in ("float32", "int8"))
        rows.append({"channels": c, "float32 us": f"{f32:.1f}", "int8 us": f"{i8:.1f}",
                     "float32 us/channel": f"{f32 / c:.2f}", "int8 us/channel": f"{i8 / c:.2f}"})
    slower = [
        f"{c} (int8 {float(np.median(times[(c, 'int8')])):.1f} us >= {d}: {float(np.median(times[(d, 'int8')])):.1f} us)"
        for c in counts for d in counts
        if d > c and np.median(times[(c, "int8")]) >= np.median(times[(d, "int8")])
    ]
    body = (
        f"3x3 conv to C channels, then 1x1 conv back to 16, on {args.size}x{args.size}x16 inputs; batch 1, one thread; "
        f"median of {rounds} interleaved rounds.\n\n" + table(rows)
        + "\n\nint8 counts no faster than a larger count: " + ("; ".join(slower) if slower else "none") + "\n"
    )
    print(body)
    if not args.quick:
        write_section("channel_multiple", body)


if __name__ == "__main__":
    main()
