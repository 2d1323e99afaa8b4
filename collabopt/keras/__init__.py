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
    ClusteringConfig,
    ClusterWeights,
    cluster_scope,
    cluster_weights,
    strip_clustering,
)
from collabopt.layers import OptimizableLayer, WeightSpec, register_layer
from collabopt.preserve import PreserveWrapper
from collabopt.quantization import (
    AllValuesQuantizer,
    Default8BitClusterPreserveQuantizeScheme,
    Default8BitPrunePreserveQuantizeScheme,
    Default8BitQuantizeScheme,
    Default16x8QuantizeScheme,
    DefaultNBitQuantizeScheme,
    FoldedBatchNormalization,
    FixedQuantizer,
    LastValueQuantizer,
    MovingAverageQuantizer,
    QuantizationConfig,
    QuantizeAnnotate,
    QuantizeConfig,
    QuantizeScheme,
    QuantizeWrapper,
    Quantizer,
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
    PruningConfig,
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
    "ClusteringConfig",
    "ConstantSparsity",
    "Default16x8QuantizeScheme",
    "Default8BitClusterPreserveQuantizeScheme",
    "Default8BitPrunePreserveQuantizeScheme",
    "FoldedBatchNormalization",
    "Default8BitQuantizeScheme",
    "DefaultNBitQuantizeScheme",
    "FixedQuantizer",
    "LastValueQuantizer",
    "MovingAverageQuantizer",
    "OptimizableLayer",
    "PolynomialDecay",
    "PreserveWrapper",
    "PrunableLayer",
    "PruneForLatencyOnXNNPack",
    "PruneLowMagnitude",
    "PruningConfig",
    "PruningSchedule",
    "PruningSummaries",
    "QuantizationConfig",
    "QuantizeAnnotate",
    "QuantizeConfig",
    "QuantizeScheme",
    "QuantizeWrapper",
    "Quantizer",
    "UpdatePruningStep",
    "WeightSpec",
    "calibrate",
    "cluster_scope",
    "cluster_weights",
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
    "strip_pruning",
    "strip_clustering_cqat",
    "strip_quantization",
]
