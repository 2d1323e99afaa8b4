"""The preserve registry: constraint kinds and how stages record, derive, keep and save them.

The one place that knows constraint kinds (sparsity, clusters, ...). A stage
records its constraint as state in its wrapper's variables; a later stage
asks :func:`constraints_on` what the chain inside it guarantees and keeps it,
or wraps a stripped layer in a :class:`PreserveWrapper` that derives the state
from the weights.
"""

from collabopt.preserve.channels import CHANNELS, ChannelsKind
from collabopt.preserve.clusters import CLUSTERS, ClustersKind, gather_clustered
from collabopt.preserve.kinds import (
    SPARSITY,
    Constraint,
    ConstraintKind,
    SparsityKind,
    StateVariable,
    get_kind,
    in_projection_order,
    kind_registered,
    known_kinds,
    register_kind,
)
from collabopt.preserve.registry import constraints_on, zero_mask
from collabopt.preserve.wrapper import PreserveWrapper

__all__ = [
    "CHANNELS",
    "CLUSTERS",
    "SPARSITY",
    "ChannelsKind",
    "ClustersKind",
    "Constraint",
    "ConstraintKind",
    "PreserveWrapper",
    "SparsityKind",
    "StateVariable",
    "constraints_on",
    "gather_clustered",
    "get_kind",
    "in_projection_order",
    "kind_registered",
    "known_kinds",
    "register_kind",
    "zero_mask",
]
