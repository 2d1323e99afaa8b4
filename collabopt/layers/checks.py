"""Checks on weight values shared by the techniques and the exporter.

Example:

>>> import numpy as np
>>> from collabopt.layers.checks import check_finite
>>> check_finite("dense", "kernel", np.ones((2, 2)))
>>> try:
...     check_finite("dense", "kernel", np.array([1.0, np.nan]))
... except ValueError as error:
...     print(error)
layer 'dense', weight 'kernel': 1 of 2 values are NaN or infinite (first at index (1,)); only finite weights can be optimized or exported. Retrain from a checkpoint taken before the values diverged, or lower the learning rate.
"""

from __future__ import annotations

import keras
import numpy as np

from collabopt.errors import InvalidWeightError


def check_finite(layer, weight_name: str, value) -> None:
    """Raises :class:`InvalidWeightError` if ``value`` holds NaN or infinite entries.

    Args:
        layer: The layer (or its name), for the message.
        weight_name: The weight's name, for the message.
        value: The weight's values (array, tensor or variable).
    """
    array = keras.ops.convert_to_numpy(value) if not isinstance(value, np.ndarray) else value
    if not np.issubdtype(array.dtype, np.floating):
        return
    bad = ~np.isfinite(array)
    if not bad.any():
        return
    name = f"layer '{layer}'" if isinstance(layer, str) else f"layer '{layer.name}' ({type(layer).__name__})"
    first = tuple(int(i) for i in np.argwhere(bad)[0]) if array.ndim else ()
    raise InvalidWeightError(
        f"{name}, weight '{weight_name}': {int(bad.sum())} of {array.size} values are NaN or infinite"
        f"{f' (first at index {first})' if first else ''}; only finite weights can be optimized or "
        "exported. Retrain from a checkpoint taken before the values diverged, or lower the learning rate."
    )


def _own_variables(layer) -> list:
    inner = getattr(layer, "layer", None) if isinstance(layer, keras.layers.Wrapper) else None
    if inner is None:
        return list(layer.weights)
    inner_ids = {id(v) for v in inner.weights}
    return [v for v in layer.weights if id(v) not in inner_ids]


def check_finite_weights(model) -> None:
    """Checks every floating-point variable of ``model`` (nested models and wrappers included).

    Raises:
        InvalidWeightError: naming the first layer and weight holding NaN or inf.
    """
    seen = set()

    def visit(layer):
        if id(layer) in seen:
            return
        seen.add(id(layer))
        if isinstance(layer, keras.Model) and not isinstance(layer, keras.layers.Wrapper):
            for sub in layer.layers:
                visit(sub)
            return
        for variable in _own_variables(layer):
            check_finite(layer, variable.name, variable)
        if isinstance(layer, keras.layers.Wrapper):
            visit(layer.layer)

    visit(model)
