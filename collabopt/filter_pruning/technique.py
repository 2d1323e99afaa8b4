"""Filter pruning as a technique: its config (the arguments of prune_filters) and its registration.

Filter pruning works on a whole graph model: it scores each channel
dependency group once (:func:`collabopt.transform.analyze_channels`) and
wraps every member layer, so its ``plan`` hook does the model-level work
and the one apply path (:func:`collabopt.technique.apply`) wraps and builds.
"""

from __future__ import annotations

import dataclasses
import warnings

import keras
import numpy as np

from collabopt.errors import InvalidArgumentError, InvalidTypeError, OrderError
from collabopt.filter_pruning.criteria import channel_scores, check_criterion
from collabopt.filter_pruning.schedules import PolynomialRatio, RatioSchedule, as_schedule
from collabopt.filter_pruning.wrapper import DEFAULT_CHANNEL_MULTIPLE, PruneFilters, check_channel_multiple
from collabopt.layers import base_layer, get_variable, layer_roles, spec_for, to_channel_rows
from collabopt.preserve import CHANNELS, SPARSITY
from collabopt.technique import (
    PRUNE_STAGE,
    Technique,
    TechniqueConfig,
    chain_techniques,
    register_technique,
)
from collabopt.transform import PASS, WRAP, analyze_channels, is_graph_model, iter_layers

# Reasons a group is always left alone; other reasons are worth a warning.
_EXPECTED = ("model output", "model input")


@dataclasses.dataclass(frozen=True)
class FilterPruningConfig(TechniqueConfig):
    """The arguments of :func:`prune_filters`, as data.

    Attributes:
        pruning_schedule: The ratio schedule (:class:`RatioSchedule`).
        criterion: ``"l1"``, ``"l2"`` or ``"geometric_median"``.
        channel_multiple: Kept channel counts are rounded up to a multiple of it.
        left_alone: Layers whose dependency groups keep every channel (e.g.
            the groups a :class:`~collabopt.filter_pruning.latency.LatencyPlan`
            refused because pruning them made the int8 file slower).

    Example:

    >>> import keras, collabopt.keras as co
    >>> from collabopt.technique import apply
    >>> x = keras.Input((8, 8, 1))
    >>> y = keras.layers.Conv2D(4, 3, name="conv")(keras.layers.Conv2D(8, 3, name="c1")(x))
    >>> pruned = apply(keras.Model(x, y), co.FilterPruningConfig(co.ConstantRatio(0.5)))
    >>> type(pruned.get_layer("prune_filters_c1")).__name__
    'PruneFilters'
    """

    pruning_schedule: RatioSchedule
    criterion: str = "l2"
    channel_multiple: int = DEFAULT_CHANNEL_MULTIPLE
    left_alone: tuple[str, ...] = ()

    def __post_init__(self):
        object.__setattr__(self, "left_alone", tuple(self.left_alone))
        self.validate()

    def validate(self):
        check_criterion(self.criterion)
        check_channel_multiple(self.channel_multiple)
        if not isinstance(self.pruning_schedule, RatioSchedule):
            raise InvalidTypeError(f"pruning_schedule must be a RatioSchedule; received {self.pruning_schedule!r}.")

    @classmethod
    def from_settings(cls, settings, *, steps=1):
        """Also accepts ``pruning_ratio`` (default 0.5): a PolynomialRatio from 0 to it over half of ``steps``."""
        settings = dict(settings)
        accepted = ["pruning_ratio", *(f.name for f in dataclasses.fields(cls))]
        unknown = sorted(set(settings) - set(accepted))
        if unknown:
            raise InvalidArgumentError(f"{cls.technique}: unknown settings {unknown}; accepted: {', '.join(accepted)}.")
        ratio = settings.pop("pruning_ratio", 0.5)
        if settings.get("pruning_schedule") is None:
            as_schedule(ratio, None)  # checks the ratio
            settings["pruning_schedule"] = PolynomialRatio(0.0, float(ratio), 0, max(int(steps) // 2, 1))
        else:
            as_schedule(None, settings["pruning_schedule"])  # checks the schedule
        return super().from_settings(settings, steps=steps)

    # --- the apply path ------------------------------------------------------
    def prepare(self, target, what):
        if not isinstance(target, keras.Model) or not is_graph_model(target):
            raise InvalidArgumentError(
                f"{what} expects a Sequential or Functional keras.Model; received {type(target).__name__} "
                f"'{getattr(target, 'name', target)}'. Filter pruning changes channel counts across layers, so it "
                "needs the model's graph (rebuild subclassed models as Functional ones)."
            )
        return target

    def plan(self, model, what):
        """Checks the chain order on every layer, then scores every dependency group: ``{layer name: (rank, size)}``."""
        _check_order(model, what)
        graph = analyze_channels(model)
        if not graph.prunable_groups():
            raise InvalidArgumentError(f"{what}: model '{model.name}' has no output channels that can be pruned:\n{graph.report()}")
        unexpected = [g for g in graph.frozen_groups() if not any(e in g.frozen for e in _EXPECTED)]
        if unexpected:
            warnings.warn(
                f"{what}: left alone "
                + "; ".join(f"{', '.join(n for n, _ in g.members)} ({g.frozen})" for g in unexpected)
                + ".",
                stacklevel=4,
            )
        ranking = rank_channels(graph, self.criterion)
        unknown = sorted(set(self.left_alone) - set(graph.members))
        if unknown:
            raise InvalidArgumentError(
                f"{what}: left_alone names {unknown}, which produce no output channels in model '{model.name}'; "
                f"layers with output channels: {sorted(graph.members)[:20]}."
            )
        for group in graph.prunable_groups():
            if any(name in self.left_alone for name, _ in group.members):
                for name, offset in group.members:  # group size 0: never pruned
                    ranking[name][1][offset : offset + group.size] = 0
        planned = {name: value for name, value in ranking.items() if value[1].any()}
        if not planned:
            raise InvalidArgumentError(f"{what}: left_alone {list(self.left_alone)} leaves no group of model '{model.name}' to prune.")
        return planned

    def classify(self, layer, plan):
        return WRAP if layer.name in plan else PASS

    def handler_arguments(self, layer, plan):
        return {
            "pruning_schedule": self.pruning_schedule, "criterion": self.criterion, "ranking": plan[layer.name],
            "channel_multiple": self.channel_multiple,
        }


def _check_order(model, what):
    """OrderError naming the first layer that already carries a technique: filter pruning sees a plain model."""
    for layer in iter_layers(model):
        chain = chain_techniques(layer)
        if not chain:
            continue
        wrapper, held = chain[0]
        base = base_layer(layer).name
        if held.stage > PRUNE_STAGE:
            order = f"{held.function}({what}(model)); to filter-prune a {held.done} model, {held.strip}(model) first"
        else:
            order = "prune_filters -> strip_pruning -> (prune_filters again | prune_low_magnitude) -> cluster_weights -> quantize_model"
        raise OrderError(
            f"{what}: layer '{base}' of model '{model.name}' is already {held.done} ({type(wrapper).__name__} "
            f"'{wrapper.name}'). Filter pruning ranks the channels of a plain model, so it comes first: {order}."
        )


def _member_scores(layer, offset, size, criterion):
    base = base_layer(layer)
    name = layer_roles(base).output_weight
    if name is None:
        return None
    spec = spec_for(base, name)
    value = keras.ops.convert_to_numpy(get_variable(base, spec))
    rows = to_channel_rows(value, spec)[offset : offset + size]
    return channel_scores(rows, criterion)


def rank_channels(graph, criterion: str) -> dict:
    """``{layer name: (rank, group size)}`` arrays over each member's output channels.

    A group's score is the sum of its members' (mean-normalised) channel
    scores; rank 0 is its least important channel. Frozen groups get group
    size 0 (never pruned).
    """
    ranking = {}
    for name, slices in graph.members.items():
        length = max(s.offset + s.size for s in slices)
        ranking[name] = (np.zeros(length, np.int32), np.zeros(length, np.int32))
    for group in graph.prunable_groups():
        total = np.zeros(group.size)
        for name, offset in group.members:
            scores = _member_scores(graph.layers[name], offset, group.size, criterion)
            if scores is not None:
                total += scores
        order = np.argsort(total, kind="stable")
        rank = np.empty(group.size, np.int32)
        rank[order] = np.arange(group.size, dtype=np.int32)
        for name, offset in group.members:
            ranking[name][0][offset : offset + group.size] = rank
            ranking[name][1][offset : offset + group.size] = group.size
    return ranking


FILTER_PRUNING = register_technique(
    Technique(
        name="filter_prune",
        config=FilterPruningConfig,
        handler=PruneFilters,
        stage=PRUNE_STAGE,
        function="prune_filters",
        strip="strip_pruning",
        done="filter-pruned",
        records=(CHANNELS, SPARSITY),
        learning_rate=5e-4,
        tree_strips=True,
    )
)
