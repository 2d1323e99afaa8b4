"""Which output channels of a model must be removed together (channel dependency groups).

Removing output channel ``c`` of a Conv2D changes every layer that sees that
channel: a following BatchNormalization and DepthwiseConv2D lose channel ``c``
too, the next Conv2D loses input row ``c``, every branch added to it in a
residual ``Add`` loses ``c``, a ``Concatenate`` shifts it by an offset, and a
Dense after ``Flatten`` loses one input row per spatial position. This module
reads a Sequential, Functional or nested model's graph from the public
``get_config()`` (each layer's ``inbound_nodes``) and propagates channel
*segments* through it, merging the channels that are tied together with a
union-find. The result, a :class:`ChannelGraph`, lists

* the *groups*: sets of output channels (of one or more layers) that must be
  pruned together, each with its size and, when it cannot be pruned, why;
* per layer, which slices of its output channels belong to which group
  (``members``: Conv/Dense/SeparableConv outputs, BatchNormalization and
  depthwise channels);
* per layer, which slices of its input channels (rows of its kernel) belong
  to which group (``consumers``), with the number of flattened positions for
  a Dense after ``Flatten``.

A channel is only removable if, in the masked model, it is exactly zero
wherever a layer reduces over channels. Masked layers output zeros; a zero
stays zero through ReLU-like activations, pooling, padding and dropout (each
weightless layer is tested on a zero input), through ``Add`` of zeros and
through ``Multiply`` by anything (squeeze-excite). Channels tied to a model
input or output, reaching a layer this module does not understand, or made
non-zero (e.g. by a sigmoid) before a reduction are *frozen*: left alone and
reported.

What a layer does to the channel axis is its ``LayerRoles.channels``
(:mod:`collabopt.layers.roles`); a custom layer joins by registering it.
"""

from __future__ import annotations

import dataclasses
import inspect

import keras
import numpy as np

from collabopt.errors import InvalidArgumentError, UnsupportedLayerError
from collabopt.layers import base_layer, channel_behaviour, roles
from collabopt.transform.clone import is_graph_model

@dataclasses.dataclass(frozen=True)
class Segment:
    """``size`` consecutive channels of a tensor that are channels of group-source ``source``.

    ``zero``: whether these channels are exactly zero in the masked model when
    their group is pruned.
    """

    source: int
    size: int
    zero: bool = True


@dataclasses.dataclass(frozen=True)
class Channels:
    """The channel axis of one tensor: its segments, and the spatial positions flattened in front of them."""

    segments: tuple
    positions: int = 1

    @property
    def total(self) -> int:
        return sum(s.size for s in self.segments)


@dataclasses.dataclass(frozen=True)
class Slice:
    """Channels ``[offset, offset + size)`` of a layer's output (or input) axis belong to ``group``.

    For an input slice of a Dense after ``Flatten``, ``positions`` is the number
    of flattened spatial positions and ``total`` the channels per position.
    """

    offset: int
    size: int
    group: int
    positions: int = 1
    total: int = 0


@dataclasses.dataclass
class Group:
    """Output channels that are pruned together.

    Attributes:
        id: Group number.
        size: Number of channels.
        members: ``[(layer name, offset)]``: layers whose output channels
            ``[offset, offset + size)`` are this group's channels.
        frozen: Why the group cannot be pruned, or ``None``.
    """

    id: int
    size: int
    members: list
    frozen: str | None = None

    @property
    def prunable(self) -> bool:
        return self.frozen is None


@dataclasses.dataclass
class ChannelGraph:
    """The channel dependency analysis of a model (see the module docstring).

    Attributes:
        groups: Group id -> :class:`Group`.
        members: Layer name -> output :class:`Slice` list.
        consumers: Layer name -> input :class:`Slice` list (for a Reshape
            whose target names the channel count: its output's).
        layers: Layer name -> the (possibly wrapped) layer.
        nested_inputs: Nested model name -> per input, its channel
            :class:`Slice` list (``None`` where unknown).
    """

    groups: dict
    members: dict
    consumers: dict
    layers: dict
    nested_inputs: dict = dataclasses.field(default_factory=dict)

    def prunable_groups(self) -> list:
        return [g for g in self.groups.values() if g.prunable]

    def frozen_groups(self) -> list:
        return [g for g in self.groups.values() if not g.prunable]

    def report(self) -> str:
        """One line per group: its members and whether (or why not) it can be pruned."""
        lines = []
        for g in self.groups.values():
            names = ", ".join(n for n, _ in g.members) or "(no weights)"
            status = "prunable" if g.prunable else f"left alone: {g.frozen}"
            lines.append(f"group {g.id} ({g.size} channels; {names}): {status}")
        return "\n".join(lines)


class _Analysis:
    def __init__(self):
        self.parent: list[int] = []
        self.size: list[int] = []
        self.frozen: dict[int, str] = {}
        self.members: dict[str, list] = {}  # name -> [(offset, size, source)]
        self.consumers: dict[str, tuple] = {}  # name -> Channels seen at its input
        self.layers: dict[str, keras.layers.Layer] = {}
        self.sources: dict[str, int] = {}  # producer name -> its source
        self.nested_inputs: dict[str, list] = {}  # nested model name -> Channels of its inputs
        self.reshapes: dict[str, Channels] = {}  # Reshape name -> Channels of its output

    # --- union-find ------------------------------------------------------------
    def new_source(self, size, frozen=None):
        self.parent.append(len(self.parent))
        self.size.append(int(size))
        if frozen:
            self.frozen[len(self.parent) - 1] = frozen
        return len(self.parent) - 1

    def find(self, s):
        while self.parent[s] != s:
            self.parent[s] = self.parent[self.parent[s]]
            s = self.parent[s]
        return s

    def union(self, a, b):
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return
        self.parent[rb] = ra
        reason = self.frozen.pop(rb, None)
        if reason and ra not in self.frozen:
            self.frozen[ra] = reason

    def freeze(self, channels, reason):
        if channels is None:
            return
        for seg in channels.segments:
            root = self.find(seg.source)
            self.frozen.setdefault(root, reason)

    # --- layers ----------------------------------------------------------------
    def record_member(self, name, channels, zero=True):
        slices, offset = [], 0
        for seg in channels.segments:
            slices.append((offset, seg.size, seg.source))
            offset += seg.size
        previous = self.members.get(name)
        if previous is not None and [s[1:] for s in previous] != [s[1:] for s in slices]:
            self.freeze(channels, f"layer '{name}' is shared between different channel layouts")
            for _, _, src in previous:
                self.frozen.setdefault(self.find(src), f"layer '{name}' is shared between different channel layouts")
        self.members[name] = slices
        return Channels(tuple(Segment(s.source, s.size, zero) for s in channels.segments))

    def record_consumer(self, name, channels, allow_positions=False):
        if channels is None:
            return
        for seg in channels.segments:
            if not seg.zero:
                self.freeze(Channels((seg,)), f"its pruned channels are not zero where layer '{name}' reads them")
        if channels.positions != 1 and not allow_positions:
            self.freeze(channels, f"layer '{name}' reads them flattened")
            return
        previous = self.consumers.get(name)
        if previous is not None and previous != channels:
            self.freeze(channels, f"layer '{name}' is shared between different channel layouts")
            self.freeze(previous, f"layer '{name}' is shared between different channel layouts")
        self.consumers[name] = channels

    def apply(self, layer, inputs, input_shapes):
        if not isinstance(layer, keras.layers.Layer):
            # A plain op of a Functional graph (keras.ops.relu(x), x + y):
            # the channels reaching it are left alone.
            for c in inputs:
                self.freeze(c, f"they reach operation '{layer.name}' (a keras.ops call, not a layer), which filter pruning does not handle")
            return [None]
        base = base_layer(layer)
        name = base.name
        self.layers[name] = layer
        if is_graph_model(layer):
            self.nested_inputs[name] = list(inputs)
            return self.walk(layer, inputs)
        x = inputs[0] if inputs else None
        shape = input_shapes[0] if input_shapes else None
        unknown = f"they reach layer '{name}' ({type(base).__name__}), which filter pruning does not handle"

        def give_up():
            for c in inputs:
                self.freeze(c, unknown)
            return [None]

        config = base.get_config()
        channels_last = config.get("data_format", "channels_last") == "channels_last"
        behaviour = channel_behaviour(base)
        if behaviour == roles.PRODUCES:
            if len(inputs) != 1 or not channels_last or config.get("groups", 1) != 1 or config.get("depth_multiplier", 1) != 1:
                return give_up()
            # A flattened input (positions > 1) reaches only layers taking
            # vectors (Dense): their kernel rows are the flattened positions.
            self.record_consumer(name, x, allow_positions=True)
            out = config.get("filters") or config.get("units")
            if name not in self.sources:
                self.sources[name] = self.new_source(out)
            return [self.record_member(name, Channels((Segment(self.sources[name], out),)))]
        if behaviour == roles.KEEPS and base.weights:  # per-channel weights (DepthwiseConv, BatchNormalization)
            axis = config.get("axis", -1)
            axis = axis[0] if isinstance(axis, (list, tuple)) and len(axis) == 1 else axis
            rank = len(shape) if shape is not None else None
            last = axis == -1 or (rank is not None and axis == rank - 1)
            if x is None or x.positions != 1 or not channels_last or not last or config.get("depth_multiplier", 1) != 1:
                return give_up()
            return [self.record_member(name, x)]
        if base.weights:
            return give_up()
        if behaviour in (roles.MERGES, roles.MULTIPLIES):
            return [self.merge(base, inputs, multiply=behaviour == roles.MULTIPLIES)]
        if behaviour == roles.CONCATENATES:
            if any(c is None for c in inputs):
                return give_up()
            axis = config["axis"]
            rank = len(shape) if shape is not None else None
            if any(c.positions != 1 for c in inputs):  # flattened vectors: positions and channels interleave
                return give_up()
            if axis == -1 or (rank is not None and axis == rank - 1):
                return [Channels(tuple(s for c in inputs for s in c.segments))]
            return [self.merge(base, inputs)]  # along another axis, channels line up as in an Add
        if behaviour == roles.FLATTENS:
            if x is None or x.positions != 1 or shape is None or None in shape[1:]:
                return give_up()
            positions = int(np.prod(shape[1:-1])) if len(shape) > 2 else 1
            out = Channels(x.segments, positions)
            if "target_shape" in config:  # a Reshape names the channel count
                self.reshapes[name] = out
            return [out]
        if behaviour == roles.RESHAPES:
            target = tuple(config["target_shape"])
            if x is None or shape is None or x.positions != 1 or target[-1] != shape[-1]:
                return give_up()
            self.reshapes[name] = x
            return [x]
        if behaviour in (roles.KEEPS, roles.ELEMENTWISE):
            if x is None:
                return [None]
            if x.positions != 1 and behaviour != roles.ELEMENTWISE:
                return give_up()
            keeps_zero = _maps_zero_to_zero(base, shape)
            return [Channels(tuple(Segment(s.source, s.size, s.zero and keeps_zero) for s in x.segments), x.positions)]
        return give_up()

    def merge(self, base, inputs, multiply=False):
        name = base.name
        if any(c is None for c in inputs):
            for c in inputs:
                self.freeze(c, f"they are merged in layer '{name}' with channels it cannot follow")
            return None
        wide = [c for c in inputs if c.total > 1]
        broadcast = len(wide) < len(inputs)
        if not wide:
            return inputs[0]
        layout = [(s.size for s in c.segments) for c in wide]
        layout = [tuple(sizes) for sizes in layout]
        if any(lay != layout[0] for lay in layout) or any(c.positions != wide[0].positions for c in wide):
            for c in inputs:
                self.freeze(c, f"the inputs of layer '{name}' have different channel layouts")
            return None
        segments = []
        for k, seg in enumerate(wide[0].segments):
            column = [c.segments[k] for c in wide]
            for other in column[1:]:
                self.union(seg.source, other.source)
            if multiply:
                zero = any(s.zero for s in column)
            else:
                zero = all(s.zero for s in column) and not broadcast
            segments.append(Segment(seg.source, seg.size, zero))
        return Channels(tuple(segments), wide[0].positions)

    # --- graphs ----------------------------------------------------------------
    def walk(self, model, inputs):
        if isinstance(model, keras.Sequential):
            x = inputs[0] if inputs else None
            shape = tuple(model.inputs[0].shape)
            for layer in model.layers:
                if isinstance(layer, keras.layers.InputLayer):
                    continue
                x = self.apply(layer, [x], [shape])[0]
                try:
                    shape = tuple(layer.compute_output_shape(shape))
                except (ValueError, TypeError, NotImplementedError):  # cannot tell: later layers get no shape
                    shape = None
            return [x]
        config = model.get_config()
        # ``operations`` also holds plain ops of a Functional graph (``x + y``).
        layers = {l.name: l for l in getattr(model, "operations", model.layers)}
        values: dict[tuple, list] = {}
        for (name, node, _), x in zip(history_refs(config["input_layers"]), inputs):
            values[(name, node)] = [x]
        for entry in config["layers"]:
            if entry["class_name"] == "InputLayer":
                continue
            for node_index, node in enumerate(entry.get("inbound_nodes", [])):
                histories = _histories(node, [])
                ins = [_lookup(values, h) for h in histories]
                shapes = [h[1] for h in histories]
                values[(entry["name"], node_index)] = self.apply(layers[entry["name"]], ins, shapes)
        return [_lookup(values, (tuple(ref), None)) for ref in history_refs(config["output_layers"])]


def history_refs(structure) -> list:
    """The ``[layer, node, tensor]`` entries of a serialized ``input_layers`` / ``output_layers`` structure.

    One entry is stored unnested; several as a list, or a dict for dict inputs or outputs.

    >>> history_refs({"pooled": ["dense", 0, 0], "sequence": ["ln", 0, 0]})
    [['dense', 0, 0], ['ln', 0, 0]]
    """
    if isinstance(structure, (list, tuple)) and len(structure) == 3 and isinstance(structure[0], str):
        return [list(structure)]
    values = structure.values() if isinstance(structure, dict) else structure
    return [ref for item in values for ref in history_refs(item)]


def inbound_tensors(obj, out=None) -> list[dict]:
    """The configs of the Keras tensors referenced in a layer's serialized ``inbound_nodes`` (in order)."""
    out = [] if out is None else out
    if isinstance(obj, dict):
        if obj.get("class_name") == "__keras_tensor__":
            out.append(obj["config"])
        else:
            for v in obj.values():
                inbound_tensors(v, out)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            inbound_tensors(v, out)
    return out


def _histories(obj, out):
    for config in inbound_tensors(obj):
        shape = config.get("shape")
        out.append((tuple(config["keras_history"]), tuple(shape) if shape is not None else None))
    return out


def _lookup(values, history):
    (name, node, tensor), _ = history
    outputs = values.get((name, node))
    if outputs is None:
        return None
    return outputs[tensor] if tensor < len(outputs) else None


def _maps_zero_to_zero(layer, shape) -> bool:
    if shape is None or None in shape[1:]:
        return False
    zeros = np.zeros((1,) + tuple(int(d) for d in shape[1:]), np.float32)
    out = keras.ops.convert_to_numpy(layer(zeros, training=False) if _takes_training(layer) else layer(zeros))
    return bool(np.all(out == 0))


def _takes_training(layer) -> bool:
    return "training" in inspect.signature(layer.call).parameters


def analyze_channels(model) -> ChannelGraph:
    """Finds the channel dependency groups of a Sequential, Functional or nested model.

    Args:
        model: A built graph model (plain, or with collabopt wrappers: the
            layer types are read from the wrapped base layers). Layer names
            must be unique across nested models.

    Returns:
        A :class:`ChannelGraph`.

    Raises:
        ValueError: for a subclassed model or duplicate layer names.

    Example:

    >>> import keras
    >>> from collabopt.transform import analyze_channels
    >>> x = keras.Input((8, 8, 3))
    >>> y = keras.layers.Conv2D(8, 3, name="a")(x)
    >>> y = keras.layers.Conv2D(4, 3, name="b")(y)
    >>> graph = analyze_channels(keras.Model(x, y))
    >>> [(g.size, g.prunable) for g in graph.groups.values()]
    [(8, True), (4, False)]
    """
    if not isinstance(model, keras.Model) or not is_graph_model(model):
        raise UnsupportedLayerError(
            f"channel analysis needs a Sequential or Functional model; received {type(model).__name__} "
            f"'{getattr(model, 'name', model)}'. Rebuild subclassed models as Functional ones."
        )
    if not model.built:
        raise InvalidArgumentError(f"model '{model.name}' is not built; give it an Input first.")
    _check_unique_names(model, InvalidArgumentError)
    analysis = _Analysis()
    inputs = []
    for tensor in model.inputs:
        size = tensor.shape[-1]
        inputs.append(Channels((Segment(analysis.new_source(size or 1, "they are channels of a model input"), size or 1, False),)))
    outputs = analysis.walk(model, inputs)
    for out in outputs:
        analysis.freeze(out, "they are channels of a model output")
    return _result(analysis)


def _check_unique_names(model, error):
    seen: dict[str, int] = {}

    def visit(m):
        for layer in m.layers:
            if isinstance(layer, keras.layers.InputLayer):
                continue
            if seen.get(layer.name, id(layer)) != id(layer):
                raise error(
                    f"layer name '{layer.name}' is used by two different layers of model '{model.name}' "
                    "(in nested models); filter pruning addresses layers by name, so give them unique names."
                )
            seen[layer.name] = id(layer)
            if isinstance(layer, keras.Model) and is_graph_model(layer):
                visit(layer)

    visit(model)


def _result(analysis: _Analysis) -> ChannelGraph:
    roots: dict[int, int] = {}
    groups: dict[int, Group] = {}
    for source in range(len(analysis.parent)):
        root = analysis.find(source)
        if root not in roots:
            roots[root] = len(roots)
            groups[roots[root]] = Group(roots[root], analysis.size[root], [], analysis.frozen.get(root))
    members = {}
    for name, slices in analysis.members.items():
        members[name] = [Slice(off, size, roots[analysis.find(src)]) for off, size, src in slices]
        for off, _, src in slices:
            groups[roots[analysis.find(src)]].members.append((name, off))
    consumers = {name: _slices(channels, analysis, roots) for name, channels in analysis.consumers.items()}
    # A Reshape's target shape names the channel count: it "consumes" the channels it reshapes.
    consumers.update({name: _slices(channels, analysis, roots) for name, channels in analysis.reshapes.items()})
    nested = {}
    for name, inputs in analysis.nested_inputs.items():
        nested[name] = [None if c is None else _slices(c, analysis, roots) for c in inputs]
    # Groups with no layer holding their channels (model inputs) are reported
    # only if frozen for another reason than being an input.
    groups = {k: g for k, g in groups.items() if g.members}
    return ChannelGraph(groups, members, consumers, analysis.layers, nested)


def _slices(channels, analysis, roots):
    out, offset = [], 0
    for seg in channels.segments:
        out.append(Slice(offset, seg.size, roots[analysis.find(seg.source)], channels.positions, channels.total))
        offset += seg.size
    return out
