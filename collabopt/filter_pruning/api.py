"""prune_filters: structured pruning of whole output channels, grouped by channel dependencies."""

from __future__ import annotations

from collabopt.filter_pruning.criteria import check_criterion
from collabopt.filter_pruning.schedules import RatioSchedule, as_schedule
from collabopt.errors import InvalidTypeError
from collabopt.filter_pruning.latency import LatencyPlan, latency_guided_plan
from collabopt.filter_pruning.technique import FilterPruningConfig
from collabopt.filter_pruning.wrapper import DEFAULT_CHANNEL_MULTIPLE
from collabopt.technique import apply
from collabopt.transform import analyze_channels, map_layers


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


def prune_filters(
    model, pruning_ratio: float = 0.5, criterion: str = "l2", pruning_schedule: RatioSchedule | None = None,
    channel_multiple: int = DEFAULT_CHANNEL_MULTIPLE,
    latency_guided=False,
):
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
        pruning_ratio: Fraction of each group's channels to prune, in [0, 1),
            or a :class:`RatioSchedule` (as ``pruning_schedule``; the
            position ``prune_low_magnitude`` gives its schedule).
        criterion: ``"l2"`` (default), ``"l1"`` or ``"geometric_median"``.
        pruning_schedule: A :class:`RatioSchedule`, e.g.
            ``PolynomialRatio(0.0, 0.5, 0, 1000)`` to ramp the ratio over
            training steps; when given it replaces ``pruning_ratio``.
        channel_multiple: Round the channels each group keeps up to a
            multiple of this (never above the group's size): a layer left
            with, say, 12 channels keeps 16 at ``channel_multiple=8``, a
            count LiteRT's kernels run at full speed
            (``benchmarks/channel_multiple.py``). 1: keep exactly
            ``(1 - ratio)`` of each group.
        latency_guided: ``True``: first measure, on this machine, which
            groups' pruning makes the model's int8 file faster, and leave the
            others alone (:func:`latency_guided_plan` at the schedule's final
            ratio; about one int8 conversion per group). Or a
            :class:`~collabopt.filter_pruning.latency.LatencyPlan` from
            :func:`latency_guided_plan` (its measurements and report).
            When no step makes the model faster, the returned model has
            nothing pruned (a copy with no wrapper; the plan says why).

    Returns:
        A new model whose pruned layers are :class:`PruneFilters` wrappers.

    Raises:
        InvalidArgumentError: bad ratio or criterion, or nothing can be pruned.
        InvalidTypeError: a schedule of the wrong type.
        OrderError: a layer is already pruned, filter-pruned, clustered or
            quantized (filter pruning comes first; the message names the
            layer and the order that works).
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
    if isinstance(pruning_ratio, RatioSchedule) and pruning_schedule is None:
        pruning_ratio, pruning_schedule = 0.5, pruning_ratio
    schedule = as_schedule(pruning_ratio, pruning_schedule)
    left_alone = ()
    if latency_guided is True:
        latency_guided = latency_guided_plan(model, schedule.final_ratio, criterion, channel_multiple)
    if isinstance(latency_guided, LatencyPlan):
        if not any(d.pruned for d in latency_guided.decisions):
            return map_layers(model, lambda layer: None, what="prune_filters")  # no step pays off here
        left_alone = latency_guided.left_alone
    elif latency_guided is not False:
        raise InvalidTypeError(
            f"prune_filters: latency_guided must be True, False or a LatencyPlan from latency_guided_plan; received {latency_guided!r}."
        )
    config = FilterPruningConfig(schedule, check_criterion(criterion), channel_multiple, left_alone)
    return apply_filter_pruning(model, config)


def apply_filter_pruning(model, config: FilterPruningConfig):
    """Applies a :class:`FilterPruningConfig` to ``model`` (what :func:`prune_filters` does)."""
    return apply(model, config, what="prune_filters")
