"""Every public training-time name of collabopt, TFMOT-shaped.

Migrating from TFMOT is a rename: ``tfmot.sparsity.keras``,
``tfmot.clustering.keras`` and ``tfmot.quantization.keras`` all become
``collabopt.keras``. Nothing is defined here; names are re-exported from the
technique packages.

Example:

>>> import keras, collabopt.keras as co
>>> model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4)])
>>> pruned = co.prune_low_magnitude(model, pruning_schedule=co.ConstantSparsity(0.5, 0))
"""

from collabopt.clustering import (
    CentroidInitialization,
    ClusterableLayer,
    ClusterWeights,
    cluster_scope,
    cluster_weights,
    strip_clustering,
)
from collabopt.filter_pruning import (
    ConstantRatio,
    FilterPruningConfig,
    PolynomialRatio,
    PruneFilters,
    RatioSchedule,
    count_macs,
    filter_groups,
    prune_filters,
)
from collabopt.layers import OptimizableLayer, WeightSpec, register_layer
from collabopt.preserve import PreserveWrapper
from collabopt.quantization import (
    AllValuesQuantizer,
    Default8BitClusterPreserveQuantizeScheme,
    Default8BitPrunePreserveQuantizeScheme,
    Default8BitQuantizeScheme,
    Default16x8QuantizeScheme,
    FixedQuantizer,
    FoldedBatchNormalization,
    LastValueQuantizer,
    MovingAverageQuantizer,
    QuantizeAnnotate,
    QuantizeConfig,
    Quantizer,
    QuantizeScheme,
    QuantizeWrapper,
    calibrate,
    quantize_annotate_layer,
    quantize_annotate_model,
    quantize_apply,
    quantize_model,
    quantize_scope,
    strip_clustering_cqat,
    strip_quantization,
)
from collabopt.sparsity import (
    ConstantSparsity,
    PolynomialDecay,
    PrunableLayer,
    PruneForLatencyOnXNNPack,
    PruneLowMagnitude,
    PruningSchedule,
    PruningSummaries,
    UpdatePruningStep,
    prune_low_magnitude,
    prune_scope,
    pruning_step,
    strip_pruning,
)

__all__ = [
    "AllValuesQuantizer",
    "CentroidInitialization",
    "ClusterWeights",
    "ClusterableLayer",
    "ConstantRatio",
    "ConstantSparsity",
    "Default8BitClusterPreserveQuantizeScheme",
    "Default8BitPrunePreserveQuantizeScheme",
    "Default8BitQuantizeScheme",
    "Default16x8QuantizeScheme",
    "FilterPruningConfig",
    "FixedQuantizer",
    "FoldedBatchNormalization",
    "LastValueQuantizer",
    "MovingAverageQuantizer",
    "OptimizableLayer",
    "PolynomialDecay",
    "PolynomialRatio",
    "PreserveWrapper",
    "PrunableLayer",
    "PruneFilters",
    "PruneForLatencyOnXNNPack",
    "PruneLowMagnitude",
    "PruningSchedule",
    "PruningSummaries",
    "QuantizeAnnotate",
    "QuantizeConfig",
    "QuantizeScheme",
    "QuantizeWrapper",
    "Quantizer",
    "RatioSchedule",
    "UpdatePruningStep",
    "WeightSpec",
    "calibrate",
    "cluster_scope",
    "cluster_weights",
    "count_macs",
    "filter_groups",
    "prune_filters",
    "prune_low_magnitude",
    "prune_scope",
    "pruning_step",
    "quantize_annotate_layer",
    "quantize_annotate_model",
    "quantize_apply",
    "quantize_model",
    "quantize_scope",
    "register_layer",
    "strip_clustering",
    "strip_clustering_cqat",
    "strip_pruning",
    "strip_quantization",
]
