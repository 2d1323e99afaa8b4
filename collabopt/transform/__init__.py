"""Rewriting Sequential, Functional and nested models layer by layer."""

from collabopt.layers.copy import copy_layer
from collabopt.transform.apply import (
    PASS,
    UNSUPPORTED,
    WRAP,
    apply_per_layer,
    support_status,
)
from collabopt.transform.channel_graph import ChannelGraph, analyze_channels
from collabopt.transform.clone import (
    is_graph_model,
    is_opaque_model,
    iter_layers,
    map_layers,
)
from collabopt.transform.shrink import (
    is_channel_pruner,
    pruned_channel_masks,
    shrink_model,
)

__all__ = [
    "PASS",
    "UNSUPPORTED",
    "WRAP",
    "ChannelGraph",
    "analyze_channels",
    "apply_per_layer",
    "copy_layer",
    "is_channel_pruner",
    "is_graph_model",
    "is_opaque_model",
    "iter_layers",
    "map_layers",
    "pruned_channel_masks",
    "shrink_model",
    "support_status",
]
