"""Applying a per-layer wrapper to a layer, a list of layers or a whole model."""

from __future__ import annotations

import warnings
from typing import Callable

import keras

from collabopt.errors import InvalidArgumentError, UnsupportedLayerError
from collabopt.layers import base_layer, unreached_weights, weight_specs
from collabopt.transform.clone import is_opaque_model, map_layers

WRAP, PASS, UNSUPPORTED = "wrap", "pass", "unsupported"


def apply_per_layer(
    target,
    *,
    classify: Callable[[keras.layers.Layer], str],
    wrap: Callable[[keras.layers.Layer], keras.layers.Layer],
    replace: Callable[[keras.layers.Layer], keras.layers.Layer | None] | None = None,
    what: str,
    accepted: str,
    reuse_layers: bool = False,
):
    """Wraps the layers of ``target`` that ``classify`` accepts.

    Args:
        target: A layer (wrapped as is, for building models), a list of layers
            (each must be wrappable), or a Sequential / Functional / nested
            model (rewritten into a new model; the input is not modified).
        classify: ``layer -> WRAP | PASS | UNSUPPORTED``; raises ValueError for
            layers that must not be wrapped (e.g. already wrapped).
        wrap: ``layer -> wrapper``.
        replace: ``layer -> replacement or None`` for the layers of a model
            that are not wrapped (default: all kept).
        what: The public function's name, for messages.
        accepted: What would be accepted, for the error on an explicit layer.
        reuse_layers: ``target`` is a model the caller built and drops; its
            layers go into the result uncopied (see :func:`map_layers`).

    Returns:
        The wrapped layer, list, or new model. Unsupported layers of a model
        pass through with one warning listing them.
    """

    def explicit(layer):
        if not isinstance(layer, keras.layers.Layer):
            raise InvalidArgumentError(f"{what}: expected a keras layer or model; received {layer!r}.")
        status = classify(layer)
        if status != WRAP:
            raise UnsupportedLayerError(
                f"{what}: layer '{layer.name}' ({type(layer).__name__}) has nothing it can "
                f"transform; accepted: {accepted}."
            )
        return layer

    if isinstance(target, (list, tuple)):
        layers = [explicit(layer) for layer in target]  # validate all before wrapping any
        return [wrap(layer) for layer in layers]
    if isinstance(target, keras.Model):
        skipped: list[str] = []
        partial: list[str] = []  # weights inside wrapped composite layers that no technique reaches

        def fn(layer):
            if is_opaque_model(layer):
                inner = [sub for sub in _sublayers(layer) if classify(sub) == WRAP]
                if inner:
                    raise UnsupportedLayerError(
                        f"{what}: '{layer.name}' is a subclassed model nested in '{target.name}' and "
                        f"holds layers to transform ({', '.join(sub.name for sub in inner[:5])}); its graph "
                        "cannot be rewritten. Wrap those layers where the subclassed model builds them."
                    )
                return None
            status = classify(layer)
            if status == WRAP:
                partial.extend(f"{base_layer(layer).name}/{path}" for path in unreached_weights(base_layer(layer)))
                return wrap(layer)
            if status == UNSUPPORTED:
                skipped.append(f"{layer.name} ({type(layer).__name__})")
            return replace(layer) if replace is not None else None

        result = map_layers(target, fn, what=what, reuse_layers=reuse_layers)
        if skipped:
            warnings.warn(
                f"{what}: left unchanged {len(skipped)} layer(s) it does not support: {', '.join(skipped)}.",
                stacklevel=3,
            )
        if partial:
            warnings.warn(
                f"{what}: left unchanged {len(partial)} weight(s) inside composite layers that hold no layer it "
                f"supports: {', '.join(partial[:10])}{' ...' if len(partial) > 10 else ''}. Register their layer "
                "class (collabopt.layers.register_layer) to optimize them.",
                stacklevel=3,
            )
        return result
    if isinstance(target, keras.layers.Layer):
        return wrap(explicit(target))
    raise InvalidArgumentError(f"{what}: expected a keras layer, a list of layers or a model; received {target!r}.")


def support_status(layer) -> str:
    """WRAP if the (base) layer has optimizable weights, PASS if it has none, UNSUPPORTED if it has unknown ones."""
    base = base_layer(layer)
    specs = weight_specs(base)
    if specs is None:
        return UNSUPPORTED if base.weights else PASS
    return WRAP if specs else PASS


def _sublayers(layer):
    """Layers tracked inside a subclassed model (``Model.layers`` is public), recursively."""
    out = []
    for sub in getattr(layer, "layers", []):
        out.append(sub)
        out.extend(_sublayers(sub))
    return out
