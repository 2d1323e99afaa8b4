"""Filter (structured) pruning: whole output channels removed, grouped by channel dependencies.

``prune_filters`` masks channels while the model fine-tunes;
``collabopt.keras.strip_pruning`` then returns a physically smaller plain
Keras model (fewer filters, smaller BatchNormalization and depthwise layers,
smaller kernels downstream), which runs faster on every TFLite kernel.
"""

from collabopt.filter_pruning.api import apply_filter_pruning, filter_groups, prune_filters
from collabopt.filter_pruning.criteria import CRITERIA, channel_scores
from collabopt.filter_pruning.latency import GroupDecision, Int8Latency, LatencyPlan, latency_guided_plan
from collabopt.filter_pruning.macs import count_macs, layer_macs
from collabopt.filter_pruning.schedules import (
    ConstantRatio,
    PolynomialRatio,
    RatioSchedule,
)
from collabopt.filter_pruning.technique import FILTER_PRUNING, FilterPruningConfig, rank_channels
from collabopt.filter_pruning.wrapper import PruneFilters

__all__ = [
    "CRITERIA",
    "ConstantRatio",
    "FILTER_PRUNING",
    "FilterPruningConfig",
    "GroupDecision",
    "Int8Latency",
    "LatencyPlan",
    "PolynomialRatio",
    "PruneFilters",
    "RatioSchedule",
    "apply_filter_pruning",
    "channel_scores",
    "count_macs",
    "filter_groups",
    "latency_guided_plan",
    "layer_macs",
    "prune_filters",
    "rank_channels",
]
