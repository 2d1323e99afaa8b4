"""prune_filters: structured pruning of whole output channels, grouped by channel dependencies."""

from __future__ import annotations

import dataclasses
import warnings

import keras
import numpy as np

from collabopt.errors import InvalidArgumentError, InvalidTypeError, OrderError
from collabopt.filter_pruning.criteria import channel_scores, check_criterion
from collabopt.filter_pruning.schedules import RatioSchedule, as_schedule
from collabopt.filter_pruning.wrapper import PruneFilters
from collabopt.layers import (
    OptimizationWrapper,
    base_layer,
    get_variable,
    layer_roles,
    spec_for,
    to_channel_rows,
)
from collabopt.transform import (
    analyze_channels,
    is_graph_model,
    iter_layers,
    map_layers,
)

# Reasons a group is always left alone; other reasons are worth a warning.
_EXPECTED = ("model output", "model input")


@dataclasses.dataclass(frozen=True)
class FilterPruningConfig:
    """The settings of one filter-pruning stage (data; :func:`prune_filters` applies it).

    Attributes:
        pruning_schedule: The ratio schedule.
        criterion: ``"l1"``, ``"l2"`` or ``"geometric_median"``.
    """

    pruning_schedule: RatioSchedule
    criterion: str = "l2"

    def __post_init__(self):
        check_criterion(self.criterion)
        if not isinstance(self.pruning_schedule, RatioSchedule):
            raise InvalidTypeError(f"pruning_schedule must be a RatioSchedule; received {self.pruning_schedule!r}.")


def filter_groups(model):
    """The channel dependency groups of ``model`` (a :class:`~collabopt.transform.ChannelGraph`).

    ``filter_groups(model).report()`` lists every group, its layers, and why
    the groups left alone cannot be pruned.

    Example:

    >>> import keras, collabopt.keras as co
    >>> x = keras.Input((8, 8, 1))
    >>> y = keras.layers.Conv2D(4, 3, name="conv")(x)
    >>> m = keras.Model(x, keras.layers.Dense(2, name="logits")(keras.layers.GlobalAveragePooling2D()(y)))
    >>> print(co.filter_groups(m).report())
    group 1 (4 channels; conv): prunable
    group 2 (2 channels; logits): left alone: they are channels of a model output
    """
    return analyze_channels(model)


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


def prune_filters(model, pruning_ratio: float = 0.5, criterion: str = "l2", pruning_schedule: RatioSchedule | None = None):
    """Wraps a model so that whole output channels (filters) are pruned while it fine-tunes.

    Channels that depend on each other are pruned together (see
    :func:`filter_groups`): a Conv with its BatchNormalization, depthwise
    conv and the next conv's input rows; every branch of a residual ``Add``;
    ``Concatenate`` inputs at their offsets; a squeeze-excite ``Multiply``
    with the expand conv; a Dense after ``Flatten``. Each group is scored once,
    here, as the sum of its layers' channel scores under ``criterion``; the
    lowest-scoring ``pruning_ratio`` of its channels are masked (at least one
    is kept). Channels of the model's inputs and outputs, and channels that
    reach a layer filter pruning does not handle, are left alone (a warning
    lists the latter).

    :func:`collabopt.keras.strip_pruning` then returns a physically smaller
    plain Keras model.

    Args:
        model: A built Sequential / Functional / nested model of plain
            layers (not modified).
        pruning_ratio: Fraction of each group's channels to prune, in [0, 1).
        criterion: ``"l2"`` (default), ``"l1"`` or ``"geometric_median"``.
        pruning_schedule: A :class:`RatioSchedule`, e.g.
            ``PolynomialRatio(0.0, 0.5, 0, 1000)`` to ramp the ratio over
            training steps; when given it replaces ``pruning_ratio``.

    Returns:
        A new model whose pruned layers are :class:`PruneFilters` wrappers.

    Raises:
        InvalidArgumentError: bad ratio or criterion, or nothing can be pruned.
        InvalidTypeError: a schedule of the wrong type.
        OrderError: the model already holds collabopt wrappers (filter
            pruning comes first; strip other techniques before it).
        UnsupportedLayerError: a subclassed model.

    Example:

    >>> import keras, collabopt.keras as co
    >>> x = keras.Input((8, 8, 1))
    >>> y = keras.layers.Conv2D(8, 3, name="conv")(x)
    >>> m = keras.Model(x, keras.layers.Dense(2, name="logits")(keras.layers.Flatten()(y)))
    >>> pruned = co.prune_filters(m, pruning_ratio=0.5)
    >>> small = co.strip_pruning(pruned)
    >>> small.get_layer("conv").filters, tuple(small.get_layer("logits").kernel.shape)
    (4, (144, 2))
    """
    config = FilterPruningConfig(as_schedule(pruning_ratio, pruning_schedule), check_criterion(criterion))
    return apply_filter_pruning(model, config)


def apply_filter_pruning(model, config: FilterPruningConfig):
    """Applies a :class:`FilterPruningConfig` to ``model`` (the body of :func:`prune_filters`)."""
    if not isinstance(model, keras.Model) or not is_graph_model(model):
        raise InvalidArgumentError(
            f"prune_filters expects a Sequential or Functional keras.Model; received {type(model).__name__} "
            f"'{getattr(model, 'name', model)}'. Filter pruning changes channel counts across layers, so it "
            "needs the model's graph (rebuild subclassed models as Functional ones)."
        )
    wrapped = [base_layer(l).name for l in iter_layers(model) if isinstance(l, OptimizationWrapper)]
    if wrapped:
        raise OrderError(
            f"prune_filters: layers {wrapped[:5]} of model '{model.name}' already hold collabopt wrappers. "
            "Filter pruning comes first (prune_filters -> strip_pruning -> cluster_weights -> quantize_model); "
            "strip the other techniques before it."
        )
    graph = analyze_channels(model)
    if not graph.prunable_groups():
        raise InvalidArgumentError(
            f"prune_filters: model '{model.name}' has no output channels that can be pruned:\n{graph.report()}"
        )
    unexpected = [g for g in graph.frozen_groups() if not any(e in g.frozen for e in _EXPECTED)]
    if unexpected:
        warnings.warn(
            "prune_filters: left alone "
            + "; ".join(f"{', '.join(n for n, _ in g.members)} ({g.frozen})" for g in unexpected)
            + ".",
            stacklevel=3,
        )
    ranking = rank_channels(graph, config.criterion)
    wrap = {name for name, (_, sizes) in ranking.items() if sizes.any()}

    def fn(layer):
        if layer.name not in wrap:
            return None
        wrapper = PruneFilters(layer, pruning_schedule=config.pruning_schedule, criterion=config.criterion)
        wrapper.build((layer.get_build_config() or {}).get("input_shape"))
        wrapper.set_ranking(*ranking[layer.name])
        return wrapper

    return map_layers(model, fn, what="prune_filters")
