"""Pruning: magnitude, block and m-by-n sparsity as Keras 3 wrappers."""

from collabopt.sparsity.api import (
    PrunableLayer,
    PruneForLatencyOnXNNPack,
    prune_low_magnitude,
    prune_scope,
    pruning_step,
    strip_pruning,
)
from collabopt.sparsity.callbacks import PruningSummaries, UpdatePruningStep, pruning_wrappers
from collabopt.sparsity.technique import PruningConfig
from collabopt.sparsity.schedules import ConstantSparsity, PolynomialDecay, PruningSchedule
from collabopt.sparsity.wrapper import PruneLowMagnitude

__all__ = [
    "ConstantSparsity",
    "PolynomialDecay",
    "PrunableLayer",
    "PruneForLatencyOnXNNPack",
    "PruneLowMagnitude",
    "PruningConfig",
    "PruningSchedule",
    "PruningSummaries",
    "UpdatePruningStep",
    "prune_low_magnitude",
    "prune_scope",
    "pruning_step",
    "pruning_wrappers",
    "strip_pruning",
]
