"""Every public training-time name of collabopt, TFMOT-shaped.

Migrating from TFMOT is a rename: ``tfmot.sparsity.keras``,
``tfmot.clustering.keras`` and ``tfmot.quantization.keras`` all become
``collabopt.keras``. Nothing is defined here; names are re-exported from the
technique packages.
"""

from collabopt.layers import OptimizableLayer, WeightSpec, register_layer

__all__ = ["OptimizableLayer", "WeightSpec", "register_layer"]
