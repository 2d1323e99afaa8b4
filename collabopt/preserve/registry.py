"""Asking a wrapper chain which constraints hold on a weight.

Every :class:`~collabopt.layers.OptimizationWrapper` may record constraints
through ``recorded_constraints() -> {weight_name: [Constraint, ...]}``. A later
stage asks :func:`constraints_on` what the chain inside it guarantees.
"""

from __future__ import annotations

from collabopt.layers import wrapper_chain
from collabopt.preserve.kinds import Constraint


def constraints_on(layer, weight_name: str) -> dict[str, Constraint]:
    """Constraints recorded on ``weight_name`` by ``layer``'s wrapper chain.

    Returns kind name -> :class:`Constraint`; where several wrappers record the
    same kind, the outermost one wins (it holds the latest state).
    """
    found: dict[str, Constraint] = {}
    for wrapper in reversed(wrapper_chain(layer)):  # innermost first
        for constraint in wrapper.recorded_constraints().get(weight_name, []):
            found[constraint.kind.name] = constraint
    return found


def zero_mask(layer, weight_name: str):
    """The product of the zero masks of every constraint the chain records on a weight, or None.

    A stage that must keep zeros (sparsity-preserving clustering) asks this
    instead of any particular kind.
    """
    masks = [m for c in constraints_on(layer, weight_name).values() if (m := c.zero_mask()) is not None]
    if not masks:
        return None
    mask = masks[0]
    for m in masks[1:]:
        mask = mask * m
    return mask
