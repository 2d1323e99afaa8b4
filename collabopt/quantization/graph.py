"""Reading a model's layer graph to place quantizers as TFLite will fuse ops.

Decides, per layer name:

* which Conv/Dense layers absorb a following BatchNormalization (folded
  during QAT, so the fake-quantized weights are the ones the int8 file holds);
* which layers leave their output unquantized because TFLite fuses the next
  layer into them (a ReLU/ReLU6 after a conv, dense or Add);
* which inputs of a layer must be quantized because they come from a model
  input or from a layer left in float.

The graph is read from each model's public ``get_config()`` (``inbound_nodes``),
recursively for nested Sequential/Functional models.
"""

from __future__ import annotations

import dataclasses

import keras

from collabopt.layers import LayerRoles, layer_roles, weight_specs
from collabopt.quantization.schemes import fusable_activation, has_linear_activation
from collabopt.transform import is_graph_model
from collabopt.transform.channel_graph import history_refs, inbound_tensors

MODEL_INPUT = "<model input>"
INTEGER_INPUT = "<integer model input>"  # token ids and other indices: never quantized


@dataclasses.dataclass
class Plan:
    """What the quantizing rewrite does with each layer (by name)."""

    fold_into: dict = dataclasses.field(default_factory=dict)  # conv name -> BN layer
    folded: set = dataclasses.field(default_factory=set)  # BN names replaced by Identity
    skip_output: set = dataclasses.field(default_factory=set)  # outputs fused into the next op
    input_flags: dict = dataclasses.field(default_factory=dict)  # name -> [quantize input i?]


def core(layer):
    """The plain layer inside any annotation or optimization wrappers."""
    while isinstance(layer, keras.layers.Wrapper):
        layer = layer.layer
    return layer


def _histories(obj, out):
    out.extend(config["keras_history"][0] for config in inbound_tensors(obj))
    return out


def _edges(model):
    """``(layers by name, producers, consumers, calls)``.

    ``producers``: name -> the names feeding it, over all its calls;
    ``consumers``: name -> the names it feeds; ``calls``: name -> one list of
    producers per call (a layer shared between call sites has several).
    """
    # ``operations`` also holds plain ops of a Functional graph (``x + 3.0``).
    layers = {op.name: op for op in getattr(model, "operations", model.layers)}
    calls: dict[str, list[list[str]]] = {}
    if isinstance(model, keras.Sequential):
        previous = _input_kind(model.layers[0]) if isinstance(model.layers[0], keras.layers.InputLayer) else MODEL_INPUT
        if model.inputs and not isinstance(model.layers[0], keras.layers.InputLayer):
            previous = INTEGER_INPUT if _is_integer(model.inputs[0].dtype) else MODEL_INPUT
        for layer in model.layers:
            if isinstance(layer, keras.layers.InputLayer):
                continue
            calls[layer.name] = [[previous]]
            previous = layer.name
    else:

        def kind(p):
            return _input_kind(layers[p]) if isinstance(layers.get(p), keras.layers.InputLayer) else p

        for entry in model.get_config()["layers"]:
            nodes = [[kind(p) for p in _histories(node, [])] for node in entry.get("inbound_nodes", [])]
            if entry["class_name"] == "InputLayer" or not any(nodes):
                continue
            calls[entry["name"]] = nodes
    producers = {name: [p for call in nodes for p in call] for name, nodes in calls.items()}
    consumers: dict[str, list[str]] = {}
    for name, srcs in producers.items():
        for src in srcs:
            src = MODEL_INPUT if src == INTEGER_INPUT else src
            consumers.setdefault(src, []).append(name)
    return layers, producers, consumers, calls


def _is_integer(dtype) -> bool:
    return "int" in str(dtype) or "bool" in str(dtype)


def _input_kind(input_layer) -> str:
    dtype = getattr(input_layer, "dtype", None) or input_layer.get_config().get("dtype")
    return INTEGER_INPUT if _is_integer(dtype) else MODEL_INPUT


def _output_names(model) -> set:
    if isinstance(model, keras.Sequential):
        return {model.layers[-1].name}
    return {ref[0] for ref in history_refs(model.get_config()["output_layers"])}


def _opaque_code(layer) -> bool:
    """True for weightless code collabopt knows nothing of: a Lambda, or a custom layer with no weights and no roles."""
    if isinstance(layer, keras.layers.Lambda):
        return True
    return (
        not layer.weights
        and not weight_specs(layer)
        and layer_roles(layer) == LayerRoles()
        and not type(layer).__module__.startswith("keras.")
    )


def _foldable_bn(layer, bn) -> bool:
    bn = core(bn)
    if not layer_roles(bn).folds_into_producer:
        return False
    axis = bn.axis if isinstance(bn.axis, int) else (bn.axis[0] if len(bn.axis) == 1 else None)
    shape = (bn.get_build_config() or {}).get("input_shape")
    last = axis == -1 or (shape is not None and axis == len(shape) - 1)
    base = core(layer)
    return bool(
        last
        and layer_roles(base).output_weight is not None
        and "use_bias" in base.get_config()
        and has_linear_activation(base)
    )


def _outputs_quantized(model, quantized) -> bool:
    """Whether every output of a nested graph model leaves it quantized."""
    layers = {l.name: l for l in model.layers}
    for name in _output_names(model):
        layer = layers[name]
        if is_graph_model(layer):
            if not _outputs_quantized(layer, quantized):
                return False
        elif not quantized(layer):
            return False
    return True


def plan(model, quantized, *, inputs_quantized=False, result: Plan | None = None) -> Plan:
    """Builds the :class:`Plan` for ``model``.

    Args:
        model: A Sequential or Functional model (nested ones are visited).
        quantized: ``layer -> bool``: whether the rewrite quantizes that layer.
        inputs_quantized: Whether this (nested) model's inputs arrive quantized.
    """
    result = result or Plan()
    layers, producers, consumers, calls = _edges(model)
    outputs = _output_names(model)
    # conv name -> the folded BatchNormalization's name in this graph (an
    # annotated model names it after its wrapper, not after the BN inside).
    folded_node = {}

    for name, layer in layers.items():
        if isinstance(layer, keras.layers.InputLayer) or not quantized(layer):
            continue
        after = consumers.get(name, [])
        if len(after) == 1 and name not in outputs and _foldable_bn(layer, layers[after[0]]):
            result.fold_into[name] = core(layers[after[0]])
            result.folded.add(after[0])
            folded_node[name] = after[0]

    def effective_consumers(name):
        return consumers.get(folded_node.get(name, name), [])

    for name, layer in layers.items():
        if isinstance(layer, keras.layers.InputLayer) or not quantized(layer):
            continue
        after = effective_consumers(name)
        fusing_op = bool(weight_specs(core(layer))) or layer_roles(core(layer)).fuses_activation
        if (
            fusing_op
            and has_linear_activation(core(layer))
            and len(after) == 1
            and name not in outputs
            and folded_node.get(name) not in outputs
            and quantized(layers[after[0]])
            and fusable_activation(core(layers[after[0]]))
        ):
            result.skip_output.add(name)

    def arrives_quantized(src):
        if src == INTEGER_INPUT:
            return True
        if src == MODEL_INPUT:
            return inputs_quantized
        producer = layers[src]
        if is_graph_model(producer):
            return _outputs_quantized(producer, quantized)
        return src in result.folded or quantized(producer)

    for name, layer in layers.items():
        if isinstance(layer, keras.layers.InputLayer) or name in result.folded:
            continue
        srcs = producers.get(name, [])
        if is_graph_model(layer):
            plan(layer, quantized, inputs_quantized=all(arrives_quantized(s) for s in srcs), result=result)
            continue
        if quantized(layer) and _opaque_code(core(layer)):
            # Weightless user code (a Lambda, a custom layer without weights):
            # the ops inside it take their ranges from calibration, and a
            # trained range on its input only adds a requantization before
            # them (DEQUANTIZE / QUANTIZE around a MUL, measured on TF 2.21).
            result.input_flags[name] = []
        elif quantized(layer):
            # One flag per input position; a layer shared between call sites
            # quantizes input i if it arrives unquantized at any of them.
            per_call = calls.get(name, [])
            width = max((len(c) for c in per_call), default=0)
            result.input_flags[name] = [
                any(i < len(c) and not arrives_quantized(c[i]) for c in per_call) for i in range(width)
            ]
    return result
