"""Layer support: optimizable weights, their axes, and running a layer on replacement weights."""

from collabopt.layers.copy import copy_layer
from collabopt.layers.channels import from_channel_rows, num_channels, to_channel_rows
from collabopt.layers.registry import (
    PASSTHROUGH_LAYERS,
    OptimizableLayer,
    WeightSpec,
    call_with_weights,
    declared_specs,
    get_variable,
    is_passthrough,
    optimizable_variables,
    register_layer,
    register_weights_protocol,
    spec_for,
    weight_specs,
)
from collabopt.layers.wrapper import (
    OptimizationWrapper,
    base_layer,
    remove_wrappers,
    transformable_weight_names,
    wrapper_chain,
)

__all__ = [
    "PASSTHROUGH_LAYERS",
    "OptimizableLayer",
    "OptimizationWrapper",
    "WeightSpec",
    "base_layer",
    "call_with_weights",
    "copy_layer",
    "declared_specs",
    "from_channel_rows",
    "get_variable",
    "is_passthrough",
    "num_channels",
    "optimizable_variables",
    "register_layer",
    "register_weights_protocol",
    "spec_for",
    "to_channel_rows",
    "transformable_weight_names",
    "weight_specs",
    "remove_wrappers",
    "wrapper_chain",
]
