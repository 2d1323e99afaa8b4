"""Comparing the latency of several .tflite files on this machine, fairly.

Timing one file after another lets the machine's drift (another process, a
frequency change) land on one of them only. :func:`compare_latency` times the
files in interleaved rounds (A, B, A, B, ...) and keeps each file's fastest
round: other processes only ever add time, so the fastest round is the least
disturbed one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from collabopt.errors import InvalidArgumentError, InvalidTypeError
from collabopt.tflite.model import as_tflite_model


@dataclasses.dataclass(frozen=True)
class LatencyFigure:
    """One file's latency from :func:`compare_latency`, per sample, in microseconds.

    Attributes:
        median_us: Median time per sample of the fastest round (per invoke
            divided by the batch size).
        p25_us: 25th percentile of that round, per sample.
        p75_us: 75th percentile of that round, per sample.
        batch_size: Samples per invoke.
        rounds: Interleaved rounds measured.
    """

    median_us: float
    p25_us: float
    p75_us: float
    batch_size: int
    rounds: int


def compare_latency(
    files: Mapping[str, object],
    *,
    batch_size: int = 1,
    rounds: int = 5,
    runs: int = 20,
    min_sample_us: float = 2000.0,
    num_threads: int = 1,
) -> dict[str, LatencyFigure]:
    """Times several .tflite files on this machine in interleaved rounds.

    Args:
        files: ``{name: file}``, each file a :class:`TFLiteModel`, a path or bytes.
        batch_size: Samples per invoke: 1 for a request's latency; 64 gives
            the per-sample cost of the arithmetic, which batch 1 hides behind
            the interpreter's fixed cost per invoke on tiny models.
        rounds: Interleaved rounds; each file's figure is its fastest round.
        runs: Timed samples per round.
        min_sample_us: Shortest timed sample (a loop of invokes), so the
            timer's own cost does not count.
        num_threads: Interpreter threads.

    Returns:
        ``{name: LatencyFigure}``, in the order of ``files``.

    Example:

    >>> import keras, collabopt.tflite as ct
    >>> small = ct.convert(keras.Sequential([keras.Input((8,)), keras.layers.Dense(4)]), "float32")
    >>> large = ct.convert(keras.Sequential([keras.Input((8,)), keras.layers.Dense(4096)]), "float32")
    >>> figures = ct.compare_latency({"small": small, "large": large}, rounds=2, runs=3, min_sample_us=500)
    >>> figures["small"].median_us < figures["large"].median_us
    True
    """
    if not isinstance(files, Mapping) or not files:
        raise InvalidTypeError(f"compare_latency: files must be a non-empty mapping of name to .tflite file; received {files!r}.")
    for name, value in (("rounds", rounds), ("runs", runs), ("batch_size", batch_size)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise InvalidArgumentError(f"compare_latency: {name} must be an integer >= 1; received {value!r}.")
    models = {name: as_tflite_model(file, f"files[{name!r}]") for name, file in files.items()}
    best = {}
    for _ in range(rounds):
        for name, model in models.items():
            stats = model.latency_stats(runs, 2, num_threads, min_sample_us, batch_size=batch_size)
            if name not in best or stats["median_us"] < best[name]["median_us"]:
                best[name] = stats
    return {
        name: LatencyFigure(s["median_us"] / batch_size, s["p25_us"] / batch_size, s["p75_us"] / batch_size, batch_size, rounds)
        for name, s in best.items()
    }
