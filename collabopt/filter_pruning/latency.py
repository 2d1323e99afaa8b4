"""Latency-guided filter pruning: keep only the pruning steps that make the int8 file faster on this machine.

Fewer channels is not always faster: a layer left with, say, 8 channels can
fall off the fast path of LiteRT's int8 kernels, so a pruned model can run
slower than the dense one (``benchmarks/filter_pruning.py`` measured it on a
narrow residual CNN). :func:`latency_guided_plan` measures instead of
assuming. Each dependency group's pruning is one *step*; starting from every
group pruned at the requested ratio, it measures, group by group, the model
with and without that step (the smaller graph, exported to int8, timed in
interleaved rounds) and refuses the step when the model runs faster without
it. A final comparison with the dense model refuses everything if the result
is still not faster. :func:`collabopt.keras.prune_filters` then leaves the
refused groups alone (``latency_guided=True``, or the plan itself).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import keras
import numpy as np

from collabopt.errors import InvalidArgumentError, InvalidTypeError
from collabopt.filter_pruning.criteria import check_criterion
from collabopt.filter_pruning.wrapper import DEFAULT_CHANNEL_MULTIPLE, check_channel_multiple, pruned_channel_count
from collabopt.transform import analyze_channels
from collabopt.transform.shrink import shrink_model


@dataclasses.dataclass(frozen=True)
class GroupDecision:
    """One pruning step (a dependency group at the plan's ratio) and what measuring it decided.

    Attributes:
        layers: The group's layers.
        channels: The group's channel count.
        kept: Channels it keeps when pruned.
        pruned: Whether the step was kept (the group is pruned).
        with_step_us: Median int8 latency with the step (and the steps kept so far).
        without_step_us: The same without it.
    """

    layers: tuple[str, ...]
    channels: int
    kept: int
    pruned: bool
    with_step_us: float
    without_step_us: float


@dataclasses.dataclass(frozen=True)
class LatencyPlan:
    """What :func:`latency_guided_plan` measured and decided; pass it to ``prune_filters(latency_guided=plan)``.

    Attributes:
        pruning_ratio: The ratio each pruned group is pruned at.
        criterion: The channel criterion the groups were ranked with.
        channel_multiple: The rounding of kept channel counts.
        decisions: One :class:`GroupDecision` per prunable group, in the order measured.
        dense_us: Median int8 latency of the dense model (final comparison).
        planned_us: The same, of the model with the kept steps.
    """

    pruning_ratio: float
    criterion: str
    channel_multiple: int
    decisions: tuple[GroupDecision, ...]
    dense_us: float
    planned_us: float

    @property
    def left_alone(self) -> tuple[str, ...]:
        """Layers of the refused groups: ``prune_filters`` keeps all their channels."""
        return tuple(name for d in self.decisions if not d.pruned for name in d.layers)

    @property
    def speedup(self) -> float:
        """Dense latency over planned latency (1.0 when every step was refused)."""
        return self.dense_us / self.planned_us if self.planned_us else 1.0

    def report(self) -> str:
        """A table: each step, its two measurements and the decision, then the dense and planned latency."""
        rows = [("group", "channels", "kept", "with step", "without", "decision")]
        for d in self.decisions:
            rows.append((
                ", ".join(d.layers), str(d.channels), str(d.kept), f"{d.with_step_us:.1f} us", f"{d.without_step_us:.1f} us",
                "pruned" if d.pruned else "refused (slower)",
            ))
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines = ["  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        lines.append(f"int8 latency: dense {self.dense_us:.1f} us, planned {self.planned_us:.1f} us ({self.speedup:.2f}x faster)")
        return "\n".join(lines)


class Int8Latency:
    """The default measurement: each model's int8 file, timed batch-1 in interleaved rounds (µs).

    Calibration uses random inputs (latency does not depend on the values);
    each model is converted once and its interpreter timed ``rounds`` times,
    alternating between the models, so drift of the machine hits them alike.
    A model's latency is the fastest of its rounds' medians: other processes
    only ever add time, so the fastest round is the least disturbed one.

    Args:
        rounds: Interleaved rounds per comparison.
        runs: Timed samples per round (each at least ``min_sample_us`` long).
        min_sample_us: Minimum duration of one timed sample.
        num_threads: Interpreter threads.
    """

    def __init__(self, rounds: int = 5, runs: int = 20, min_sample_us: float = 2000.0, num_threads: int = 1):
        if rounds < 1 or runs < 1:
            raise InvalidArgumentError(f"Int8Latency: rounds and runs must be >= 1; received rounds={rounds}, runs={runs}.")
        self.rounds, self.runs, self.min_sample_us, self.num_threads = rounds, runs, min_sample_us, num_threads
        self._files = {}

    def _file(self, model):
        from collabopt.tflite import convert  # the exporter imports the techniques; import it when measuring

        if id(model) not in self._files:
            self._files[id(model)] = (model, convert(model, "int8", _random_inputs(model), calibration_samples=8))
        return self._files[id(model)][1]

    def __call__(self, models: Sequence[keras.Model]) -> list[float]:
        from collabopt.tflite import compare_latency

        files = {i: self._file(m) for i, m in enumerate(models)}
        figures = compare_latency(
            files, rounds=self.rounds, runs=self.runs, min_sample_us=self.min_sample_us, num_threads=self.num_threads
        )
        return [figures[i].median_us for i in files]


def _random_inputs(model, n: int = 8):
    inputs = []
    rng = np.random.default_rng(0)
    for tensor in model.inputs:
        shape = (n,) + tuple(d if d is not None else 1 for d in tensor.shape[1:])
        dtype = keras.backend.standardize_dtype(tensor.dtype)
        inputs.append(np.zeros(shape, dtype) if "int" in dtype else rng.uniform(0, 1, shape).astype(dtype))
    return inputs[0] if len(inputs) == 1 else tuple(inputs)


def latency_guided_plan(
    model: keras.Model,
    pruning_ratio: float = 0.5,
    criterion: str = "l2",
    channel_multiple: int = DEFAULT_CHANNEL_MULTIPLE,
    *,
    measure: Callable[[Sequence[keras.Model]], Sequence[float]] | None = None,
    progress: Callable[[str], None] | None = None,
) -> LatencyPlan:
    """Measures which pruning steps make ``model``'s int8 file faster here, and keeps only those.

    Each prunable dependency group (:func:`collabopt.keras.filter_groups`)
    pruned at ``pruning_ratio`` is one step. Starting with every step
    taken, each step in turn is measured with and without (the physically
    smaller models, as ``strip_pruning`` makes them) and refused when the
    model runs faster without it. If the result is not faster than the
    dense model, every step is refused. About one int8 conversion per group.

    Args:
        model: A built Sequential or Functional model of plain layers (not modified).
        pruning_ratio: The ratio each pruned group is pruned at, in [0, 1).
        criterion: ``"l2"``, ``"l1"`` or ``"geometric_median"``: which channels go.
        channel_multiple: Kept counts are rounded up to a multiple of it.
        measure: ``measure(models) -> latencies`` (µs, one per model, lower
            is faster), called with the two models of each comparison.
            Default: :class:`Int8Latency` (int8 file, interleaved rounds).
        progress: Called with one line per measured step (None: silent).

    Returns:
        A :class:`LatencyPlan`; ``prune_filters(model, ..., latency_guided=plan)``
        prunes the groups it kept.

    Raises:
        InvalidArgumentError: bad ratio, criterion or multiple; nothing can be pruned.

    Example (fixed measurements: pruning ``b`` makes this model slower):

    >>> import keras, collabopt.keras as co
    >>> x = keras.Input((8, 8, 1))
    >>> h = keras.layers.Conv2D(8, 3, name="a")(x)
    >>> h = keras.layers.Conv2D(8, 3, name="b")(h)
    >>> m = keras.Model(x, keras.layers.Dense(2, name="out")(keras.layers.Flatten()(h)))
    >>> def fixed(models):  # 100 us, -30 with 'a' pruned, +20 with 'b' pruned
    ...     return [100 - 30 * (m.get_layer("a").filters < 8) + 20 * (m.get_layer("b").filters < 8) for m in models]
    >>> plan = co.latency_guided_plan(m, 0.5, measure=fixed)
    >>> plan.left_alone, plan.speedup
    (('b',), 1.4285714285714286)
    >>> co.strip_pruning(co.prune_filters(m, 0.5, latency_guided=plan)).get_layer("b").filters
    8
    """
    from collabopt.filter_pruning.technique import rank_channels  # the technique module imports this one

    if not isinstance(model, keras.Model):
        raise InvalidTypeError(f"latency_guided_plan expects a keras.Model; received {type(model).__name__}.")
    if not 0.0 <= float(pruning_ratio) < 1.0:
        raise InvalidArgumentError(f"latency_guided_plan: pruning_ratio must be in [0, 1); received {pruning_ratio}.")
    check_criterion(criterion)
    check_channel_multiple(channel_multiple)
    measure = measure if measure is not None else Int8Latency()
    say = progress or (lambda *_: None)
    graph = analyze_channels(model)
    groups = graph.prunable_groups()
    if not groups:
        raise InvalidArgumentError(f"latency_guided_plan: model '{model.name}' has no output channels that can be pruned:\n{graph.report()}")
    ranking = rank_channels(graph, criterion)
    pruned_count = {g.id: pruned_channel_count(float(pruning_ratio), g.size, channel_multiple) for g in groups}
    candidates = {}

    def candidate(selected: frozenset):
        if not any(pruned_count[g] for g in selected):
            return model
        if selected not in candidates:
            masks = {}
            for group in groups:
                if group.id in selected:
                    for name, offset in group.members:
                        rank = ranking[name][0]
                        masks.setdefault(name, np.zeros(len(rank), bool))
                        masks[name][offset : offset + group.size] = rank[offset : offset + group.size] < pruned_count[group.id]
            candidates[selected] = shrink_model(model, masks)
        return candidates[selected]

    def compare(first, second):
        values = [float(v) for v in measure([first, second])]
        if len(values) != 2:
            raise InvalidArgumentError(f"latency_guided_plan: measure returned {len(values)} latencies for 2 models.")
        return values

    selected = frozenset(g.id for g in groups if pruned_count[g.id])
    decisions = []
    for group in groups:
        layers = tuple(name for name, _ in group.members)
        if group.id not in selected:
            decisions.append(GroupDecision(layers, group.size, group.size, False, float("nan"), float("nan")))
            continue
        with_step, without_step = compare(candidate(selected), candidate(selected - {group.id}))
        keep = with_step <= without_step
        if not keep:
            selected = selected - {group.id}
        decisions.append(GroupDecision(layers, group.size, group.size - pruned_count[group.id], keep, with_step, without_step))
        say(f"{', '.join(layers)}: {with_step:.1f} us pruned, {without_step:.1f} us left alone: {'pruned' if keep else 'refused'}")
    dense_us, planned_us = compare(model, candidate(selected))
    if planned_us >= dense_us and selected:  # not faster than the dense model: take no step
        say(f"planned {planned_us:.1f} us is not faster than the dense {dense_us:.1f} us: every step refused")
        decisions = [dataclasses.replace(d, pruned=False) for d in decisions]
        planned_us = dense_us
    return LatencyPlan(float(pruning_ratio), criterion, int(channel_multiple), tuple(decisions), dense_us, planned_us)
