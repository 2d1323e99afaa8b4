"""Techniques as data: a config plus a handler, registered once, applied through one path.

A technique package (``sparsity/``, ``clustering/``, ``quantization/``, ...)
defines a :class:`TechniqueConfig` (its public function's arguments as plain
data) and a handler (its wrapper class), and registers them once with
:func:`register_technique`, stating its place in the chain and the constraint
kinds it records and keeps. :func:`apply` and :func:`strip` then do what every
technique shares: layer selection, "already applied" and chain-order checks
(prune / filter-prune -> cluster -> quantize), wrapping, building. This
package sits below the techniques and imports none of them.
"""

from collabopt.technique.apply import apply, built_like, check_chain, strip
from collabopt.technique.config import TechniqueConfig
from collabopt.technique.registry import (
    CLUSTER_STAGE,
    PRUNE_STAGE,
    QUANTIZE_STAGE,
    Technique,
    chain_techniques,
    get_technique,
    register_technique,
    technique_names,
    technique_of,
    technique_registered,
    tfmot_scope,
)

__all__ = [
    "CLUSTER_STAGE",
    "PRUNE_STAGE",
    "QUANTIZE_STAGE",
    "Technique",
    "TechniqueConfig",
    "apply",
    "built_like",
    "chain_techniques",
    "check_chain",
    "get_technique",
    "register_technique",
    "strip",
    "technique_names",
    "technique_of",
    "technique_registered",
    "tfmot_scope",
]
