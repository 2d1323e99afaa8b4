"""Asking a wrapper chain which constraints hold on a weight.

Every :class:`~collabopt.layers.OptimizationWrapper` may record constraints
through ``recorded_constraints() -> {weight_name: [Constraint, ...]}``. A later
stage asks :func:`constraints_on` what the chain inside it guarantees, and
:func:`derive_constraint` when the layer arrived stripped.
"""

from __future__ import annotations

import numpy as np
from keras import ops

from collabopt.layers import base_layer, get_variable, spec_for, wrapper_chain
from collabopt.preserve.kinds import Constraint, get_kind


def constraints_on(layer, weight_name: str) -> dict[str, Constraint]:
    """Constraints recorded on ``weight_name`` by ``layer``'s wrapper chain.

    Returns kind name -> :class:`Constraint`; where several wrappers record the
    same kind, the outermost one wins (it holds the latest state).
    """
    found: dict[str, Constraint] = {}
    for wrapper in reversed(wrapper_chain(layer)):  # innermost first
        recorded = getattr(wrapper, "recorded_constraints", None)
        if recorded is None:
            continue
        for constraint in recorded().get(weight_name, []):
            found[constraint.kind.name] = constraint
    return found


def derive_constraint(layer, weight_name: str, kind_name: str, options: dict | None = None):
    """Derives ``kind_name`` state from the current values of a weight.

    Args:
        layer: A layer or wrapper chain (its effective weights are used).
        weight_name: The weight.
        kind_name: A registered kind, e.g. ``"sparsity"``.
        options: Kind-specific options.

    Returns:
        ``(state as numpy arrays, warning or None)``.
    """
    kind = get_kind(kind_name)
    base = base_layer(layer)
    spec = spec_for(base, weight_name)
    if hasattr(layer, "effective_weights"):
        value = ops.convert_to_numpy(layer.effective_weights(False)[weight_name])
    else:
        value = np.asarray(get_variable(base, spec).numpy())
    return kind.derive(value, spec, options or {})
