"""Rebuilding a model with pruned channels physically removed.

A filter-pruned model computes exact zeros in its pruned channels; this module
turns it into a smaller plain Keras model that computes the same outputs:
Conv/Dense layers get fewer filters or units, BatchNormalization and
DepthwiseConv2D lose the same channels, and every layer reading those
channels loses the matching kernel rows (one row per flattened position for a
Dense after ``Flatten``). The dependency groups come from
:func:`~collabopt.transform.channel_graph.analyze_channels`.
"""

from __future__ import annotations

import keras
import numpy as np

from collabopt.errors import InvalidArgumentError, OrderError
from collabopt.layers import OptimizationWrapper, base_layer, channel_behaviour, layer_roles, roles, weight_specs, wrapper_chain
from collabopt.layers.channels import cut_value
from collabopt.layers.copy import copy_layer
from collabopt.transform.channel_graph import analyze_channels
from collabopt.transform.clone import is_graph_model, iter_layers


def is_channel_pruner(wrapper) -> bool:
    """True for a wrapper that masks whole output channels (its ``pruned_output_channels()`` is not None)."""
    return isinstance(wrapper, OptimizationWrapper) and wrapper.built and wrapper.pruned_output_channels() is not None


def pruned_channel_masks(model) -> dict:
    """``{layer name: bool array, True where the output channel is pruned}`` from a model's channel-pruning wrappers."""
    masks = {}
    layers = iter_layers(model) if isinstance(model, keras.Model) else [model]
    for layer in layers:
        for wrapper in wrapper_chain(layer):
            if is_channel_pruner(wrapper):
                masks[base_layer(layer).name] = np.asarray(wrapper.pruned_output_channels(), bool)
    return masks


def removable_channels(graph, pruned: dict) -> dict:
    """Group id -> bool array of the channels every member of the group has pruned."""
    out = {}
    for group in graph.prunable_groups():
        removable = np.ones(group.size, bool)
        for name, offset in group.members:
            mask = pruned.get(name)
            if mask is None:
                removable[:] = False
                break
            removable &= mask[offset : offset + group.size]
        if removable.any():
            if removable.all():  # a layer needs at least one channel
                removable[0] = False
            out[group.id] = removable
    return out


def _kept(slices, removable, length):
    keep = np.ones(length, bool)
    for s in slices:
        mask = removable.get(s.group)
        if mask is None:
            continue
        if s.positions == 1:
            keep[s.offset : s.offset + s.size] &= ~mask
        else:
            for p in range(s.positions):
                start = p * s.total + s.offset
                keep[start : start + s.size] &= ~mask
    return keep


def _take(array, keep, axis):
    return np.compress(keep, array, axis=axis)


def _negative(axis: int, rank: int) -> int:
    return axis - rank if axis >= 0 else axis


def channel_cuts(layer, out_keep, in_keep) -> tuple[dict, dict]:
    """What removing channels does to plain ``layer``: its new config, and which entries each weight keeps.

    What is cut follows the layer's channel behaviour (``LayerRoles.channels``):
    a reshape gets a new target, a layer keeping channels loses them from every
    weight (registered weights along their first channel axis, the others
    along their only axis), and a producer loses input rows and output
    channels of its ``output_weight``, inputs of its other registered weights,
    output channels of its 1-D weights (bias) and of its ``filters`` /
    ``units`` setting.

    Returns:
        ``(config, cuts)``: ``cuts`` is ``{weight name: {negative axis: bool
        keep mask}}``, negative so that it names the same axes in a weight's
        execution form (a Conv1D kernel expanded to rank 4).
    """
    config = layer.get_config()
    shapes = {v.path.split("/")[-1]: tuple(v.shape) for v in layer.weights}
    specs = {s.name: s for s in weight_specs(layer) or ()}
    behaviour = channel_behaviour(layer)
    cuts = {}
    if behaviour in (roles.FLATTENS, roles.RESHAPES):
        config["target_shape"] = tuple(config["target_shape"][:-1]) + (int(in_keep.sum()),)
    elif behaviour == roles.KEEPS:
        keep = out_keep if out_keep is not None else in_keep
        for name, shape in shapes.items():
            axis = specs[name].channel_axes[0] if name in specs else 0
            cuts[name] = {_negative(axis, len(shape)): keep}
    else:
        output = specs[layer_roles(layer).output_weight]
        for name, shape in shapes.items():
            cut = {}
            if name == output.name:
                if in_keep is not None:
                    cut[_negative(output.input_axis, len(shape))] = in_keep
                if out_keep is not None:
                    cut[_negative(output.channel_axes[0], len(shape))] = out_keep
            elif name in specs:  # e.g. the depthwise kernel of a SeparableConv: one slice per input channel
                if in_keep is not None:
                    cut[_negative(specs[name].channel_axes[0], len(shape))] = in_keep
            elif len(shape) == 1 and out_keep is not None:
                cut[-1] = out_keep
            if cut:
                cuts[name] = cut
        if out_keep is not None:
            config["units" if "units" in config else "filters"] = int(out_keep.sum())
    return config, cuts


def _shrunk_layer(layer, out_keep, in_keep):
    """A new, unbuilt copy of plain ``layer`` with channels removed (:func:`channel_cuts`), its cut weights, and the cuts."""
    config, cuts = channel_cuts(layer, out_keep, in_keep)
    weights = [cut_value(keras.ops.convert_to_numpy(v), cuts.get(v.path.split("/")[-1], {})) for v in layer.weights]
    return type(layer).from_config(config), weights, cuts


def _removal_plan(graph, pruned: dict, what: str) -> tuple[dict, dict]:
    """``(removable, plan)``: group id -> channels removed, and layer name -> ``(out_keep, in_keep)``."""
    for name, mask in pruned.items():
        slices = graph.members.get(name)
        if slices is None:
            continue
        length = max(s.offset + s.size for s in slices)
        if np.asarray(mask).shape != (length,):
            raise InvalidArgumentError(
                f"{what}: the mask for layer '{name}' has shape {np.asarray(mask).shape}; "
                f"the layer has {length} output channels."
            )
    removable = removable_channels(graph, {k: np.asarray(v, bool) for k, v in pruned.items()})
    plan = {}
    for name in graph.layers:
        out_slices = graph.members.get(name, [])
        in_slices = graph.consumers.get(name, [])
        touched = [s for s in out_slices + in_slices if s.group in removable]
        if not touched:
            continue
        out_keep = _kept(out_slices, removable, max(s.offset + s.size for s in out_slices)) if out_slices else None
        in_keep = None
        if in_slices:
            s0 = in_slices[0]
            length = s0.total * s0.positions if s0.positions > 1 else s0.total
            in_keep = _kept(in_slices, removable, length)
        plan[name] = (out_keep, in_keep)
    return removable, plan


def shrink_model(model, pruned: dict):
    """A smaller plain copy of ``model`` with the pruned output channels removed.

    Args:
        model: A Sequential, Functional or nested model of plain Keras layers,
            whose pruned channels are exactly zero where other layers read
            them (as filter pruning leaves them). The only collabopt
            wrappers it may hold are ones that can lose channels
            (``OptimizationWrapper.without_channels``: the TFLite export
            forms of QAT layers, whose ranges are constants).
        pruned: ``{layer name: bool array over its output channels, True =
            pruned}``, e.g. from :func:`pruned_channel_masks` of the wrapped
            model. A channel is removed only where every layer holding it (its
            dependency group) has it pruned.

    Returns:
        A new model of plain Keras layers with the same names, fewer filters,
        units and BatchNormalization/depthwise channels, and sliced kernels
        downstream; ``model`` is not modified.

    Raises:
        OrderError: if ``model`` still holds collabopt wrappers that keep
            per-channel training state.
        InvalidArgumentError: if a mask does not match its layer.

    Example:

    >>> import keras, numpy as np
    >>> from collabopt.transform import shrink_model
    >>> x = keras.Input((6, 6, 1))
    >>> y = keras.layers.Conv2D(4, 3, name="a")(x)
    >>> m = keras.Model(x, keras.layers.Dense(2, name="b")(keras.layers.Flatten()(y)))
    >>> small = shrink_model(m, {"a": np.array([True, False, True, False])})
    >>> small.get_layer("a").filters, tuple(small.get_layer("b").kernel.shape)
    (2, (32, 2))
    """
    wrapped = [
        base_layer(l).name for l in iter_layers(model)
        if isinstance(l, OptimizationWrapper) and not all(w.can_lose_channels() for w in wrapper_chain(l))
    ]
    if wrapped:
        raise OrderError(
            f"shrink_model: layers {wrapped[:5]} are still wrapped; strip clustering and quantization "
            "before removing pruned channels (or strip_pruning before clustering/QAT)."
        )
    graph = analyze_channels(model)
    removable, plan = _removal_plan(graph, pruned, "shrink_model")

    pending = []

    def clone_function(layer):
        if not isinstance(layer, keras.layers.Layer):
            return layer  # a plain op of a Functional graph (``x + y``): stateless, shared as it is
        if is_graph_model(layer):
            return clone(layer, graph.nested_inputs.get(layer.name))
        base = base_layer(layer)
        if base.name in plan:
            new, weights, cuts = _shrunk_layer(base, *plan[base.name])
            pending.append((new, weights))
            for wrapper in reversed(wrapper_chain(layer)):  # innermost first
                new = wrapper.without_channels(new, cuts)
            return new
        if isinstance(layer, OptimizationWrapper):
            return layer  # an export form whose channels stay: its constants are shared, never written
        return copy_layer(layer)

    def clone(m, input_slices=None):
        input_tensors = None
        if input_slices is not None and any(s for s in input_slices if s):
            input_tensors = []
            for tensor, slices in zip(m.inputs, input_slices):
                shape = list(tensor.shape[1:])
                if slices:
                    shape[-1] = int(_kept(slices, removable, sum(s.size for s in slices)).sum())
                input_tensors.append(keras.Input(shape=tuple(shape), dtype=tensor.dtype))
            if isinstance(m, keras.Sequential):
                input_tensors = input_tensors[0]
        return keras.models.clone_model(m, input_tensors=input_tensors, clone_function=clone_function)

    result = clone(model)
    for new, weights in pending:
        new.set_weights(weights)
    return result



def removed_channel_cuts(model) -> dict:
    """``{base layer name: {weight name: {negative axis: keep mask}}}``: what export removes of each weight of a filter-pruned ``model``.

    The cuts :func:`shrink_model` applies to ``model`` (wrapped, e.g. a QAT
    chain over filter pruning) when :func:`collabopt.tflite.convert` exports
    it; empty when nothing is removed. ``collabopt.tflite.verify`` compares
    each weight, cut the same way, with the file.
    """
    pruned = pruned_channel_masks(model)
    if not pruned:
        return {}
    graph = analyze_channels(model)
    _, plan = _removal_plan(graph, pruned, "removed_channel_cuts")
    return {name: channel_cuts(base_layer(graph.layers[name]), *keeps)[1] for name, keeps in plan.items()}


def shrunk_once_unwrapped(before, stripped):
    """``stripped``, a stripped copy of ``before``, without the channels ``before``'s filter pruning masked, once no wrapper is left.

    Strip functions call this, so that ``strip_quantization`` of
    ``quantize_model(prune_filters(m))`` (or ``strip_clustering`` of a
    clustered filter-pruned model) is as small as ``strip_pruning`` makes
    the filter-pruned model. While other wrappers stay, ``stripped`` is
    returned as it is.
    """
    if not isinstance(before, keras.Model):
        return stripped
    pruned = pruned_channel_masks(before)
    if not pruned or any(isinstance(layer, OptimizationWrapper) for layer in iter_layers(stripped)):
        return stripped
    return shrink_model(stripped, pruned)
