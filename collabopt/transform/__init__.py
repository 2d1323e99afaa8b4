"""Rewriting Sequential, Functional and nested models layer by layer."""

from collabopt.transform.apply import PASS, UNSUPPORTED, WRAP, apply_per_layer, support_status
from collabopt.transform.clone import is_graph_model, is_opaque_model, iter_layers, map_layers
from collabopt.layers.copy import copy_layer

__all__ = [
    "PASS",
    "UNSUPPORTED",
    "WRAP",
    "apply_per_layer",
    "support_status","copy_layer", "is_graph_model", "is_opaque_model", "iter_layers", "map_layers"]
