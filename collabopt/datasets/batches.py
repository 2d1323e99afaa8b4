"""Normalising and checking representative / evaluation data against a model's inputs."""

from __future__ import annotations

from typing import Iterator

import numpy as np

from collabopt.errors import InvalidArgumentError


def input_signature(model) -> list[tuple[str, tuple, str]]:
    """``(name, shape with None batch, dtype)`` of each model input."""
    sig = []
    for t in model.inputs:
        sig.append((t.name, tuple(t.shape), str(getattr(t.dtype, "name", t.dtype))))
    return sig


def _to_numpy(x):
    if isinstance(x, np.ndarray):
        return x
    if hasattr(x, "numpy"):
        return x.numpy()
    return np.asarray(x)


def _split_element(element, n_inputs: int):
    """Takes the model inputs out of a dataset element ``x``, ``(x, y)`` or ``(x, y, w)``."""
    if isinstance(element, dict):
        return element
    if isinstance(element, (tuple, list)):
        if n_inputs == 1:
            return [element[0]] if len(element) in (2, 3) else [element[0]]
        first = element[0]
        if isinstance(first, (tuple, list, dict)):
            return first if isinstance(first, dict) else list(first)
        return list(element)
    return [element]


def check_inputs(arrays, model, argument: str) -> list[np.ndarray]:
    """Checks that ``arrays`` (one per model input) fit the model; returns them as float32 numpy."""
    sig = input_signature(model)
    if isinstance(arrays, dict):
        missing = [name for name, _, _ in sig if name not in arrays]
        if missing:
            raise InvalidArgumentError(f"{argument}: missing inputs {missing}; the model's inputs are {[s[0] for s in sig]}.")
        arrays = [arrays[name] for name, _, _ in sig]
    if len(arrays) != len(sig):
        raise InvalidArgumentError(
            f"{argument}: the model has {len(sig)} inputs {[s[0] for s in sig]}, received {len(arrays)} arrays."
        )
    out = []
    for (name, shape, dtype), arr in zip(sig, arrays):
        arr = _to_numpy(arr)
        expected = tuple(shape)
        ok = arr.ndim == len(expected) and all(e is None or e == a for e, a in zip(expected[1:], arr.shape[1:]))
        if not ok:
            raise InvalidArgumentError(
                f"{argument}: input '{name}' expects batches of shape {expected} ({dtype}), "
                f"received an array of shape {arr.shape} ({arr.dtype})."
            )
        if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
            raise InvalidArgumentError(
                f"{argument}: input '{name}' expects numeric data ({dtype}), received dtype {arr.dtype}."
            )
        out.append(arr.astype(dtype if dtype.startswith("float") or dtype.startswith("int") else np.float32))
    return out


def iter_batches(data, model, argument: str = "representative_data") -> Iterator[list[np.ndarray]]:
    """Yields checked batches (a list with one array per input) from any accepted data form.

    Accepted: a numpy array (single input), a list/tuple/dict of arrays (one per
    input), a ``tf.data.Dataset`` or any iterable of batches (each ``x``,
    ``(x, y)`` or ``(x, y, w)``, where ``x`` is an array, or a list/dict of
    arrays for multi-input models).
    """
    n_inputs = len(model.inputs)
    if isinstance(data, np.ndarray):
        yield check_inputs([data], model, argument)
        return
    if isinstance(data, dict) or (
        isinstance(data, (tuple, list)) and n_inputs > 1 and len(data) == n_inputs and all(isinstance(d, np.ndarray) for d in data)
    ):
        yield check_inputs(data, model, argument)
        return
    if isinstance(data, (str, bytes)) or not hasattr(data, "__iter__"):
        raise InvalidArgumentError(
            f"{argument}: expected a numpy array, a tf.data.Dataset or an iterable of batches; "
            f"received {type(data).__name__}."
        )
    for element in data:
        yield check_inputs(_split_element(element, n_inputs), model, argument)


def samples(data, model, limit: int, argument: str = "representative_data") -> list[list[np.ndarray]]:
    """Up to ``limit`` single-sample batches (batch size 1) for converter calibration."""
    out = []
    for batch in iter_batches(data, model, argument):
        for i in range(len(batch[0])):
            out.append([a[i : i + 1] for a in batch])
            if len(out) >= limit:
                return out
    if not out:
        raise InvalidArgumentError(f"{argument}: received no samples.")
    return out
