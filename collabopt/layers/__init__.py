"""Layer support: optimizable weights, their axes, and running a layer on replacement weights."""

from collabopt.layers.channels import from_channel_rows, num_channels, to_channel_rows
from collabopt.layers.registry import (
    PASSTHROUGH_LAYERS,
    OptimizableLayer,
    WeightSpec,
    call_with_weights,
    get_variable,
    is_passthrough,
    optimizable_variables,
    register_layer,
    spec_for,
    weight_specs,
)
from collabopt.layers.wrapper import OptimizationWrapper, base_layer, wrapper_chain

__all__ = [
    "PASSTHROUGH_LAYERS",
    "OptimizableLayer",
    "OptimizationWrapper",
    "WeightSpec",
    "base_layer",
    "call_with_weights",
    "from_channel_rows",
    "get_variable",
    "is_passthrough",
    "num_channels",
    "optimizable_variables",
    "register_layer",
    "spec_for",
    "to_channel_rows",
    "weight_specs",
    "wrapper_chain",
]
