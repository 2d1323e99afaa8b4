"""Which weights of which Keras layers can be optimized, and along which axes.

Every technique (pruning, clustering, quantization) asks this module, never a
layer class by name, which variables of a layer it may transform. A weight is
described by a :class:`WeightSpec`: the variable, the axes that together form
its output channels (the axis TFLite quantizes per channel) and its
input-channel axis (the axis m-by-n sparsity groups along).

Custom layers join in one of two ways:

* define ``get_optimizable_weights(self) -> list[WeightSpec]`` on the layer
  (the :class:`OptimizableLayer` protocol), or
* call :func:`register_layer` once for the class.

What a layer class *is* to the techniques besides its weights (pass-through,
same-scale, BN-fold target, channel behaviour) is its
:class:`~collabopt.layers.LayerRoles` (:mod:`collabopt.layers.roles`), which
:func:`register_layer` sets too.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from typing import Protocol, runtime_checkable

import keras

from collabopt.errors import InvalidArgumentError
from collabopt.layers.composite import (
    is_composite,
    redirected_calls,
    resolve_sublayer,
    sublayer_at,
    sublayer_items,
    sublayer_output_hooks,
)
from collabopt.layers.execution import call_in_tflite_form, has_tflite_form, internal_tensors
from collabopt.layers.roles import LayerRoles, layer_roles, register_layer_roles
from collabopt.layers.support import register_layer_support, support_fact


@dataclasses.dataclass(frozen=True)
class WeightSpec:
    """One optimizable weight of a layer.

    Attributes:
        name: Key of the weight within its layer: the attribute that holds
            the variable (``"kernel"``), or its path through sublayers
            (``"query/kernel"`` in a MultiHeadAttention).
        channel_axes: Axes that together index the output channels, in order
            (e.g. ``(-1,)`` for Conv2D, ``(2, 3)`` for DepthwiseConv2D, whose
            output channel is ``in_channel * multiplier + m``).
        input_axis: The input-channel axis, or ``None`` if the weight has none
            (e.g. Embedding).
    """

    name: str
    channel_axes: tuple[int, ...] = (-1,)
    input_axis: int | None = -2
    #: Whether int8 TFLite quantizes this weight per output channel; None:
    #: by rank (per channel for rank >= 3 kernels, per tensor for Dense).
    per_channel_quantization: bool | None = None

    def quantized_per_channel(self, rank: int) -> bool:
        """Whether int8 TFLite quantizes this weight, of ``rank``, per output channel.

        >>> WeightSpec("kernel").quantized_per_channel(4), WeightSpec("kernel").quantized_per_channel(2)
        (True, False)
        """
        return per_channel_by_rank(rank) if self.per_channel_quantization is None else self.per_channel_quantization

    @property
    def variable_name(self) -> str:
        """``name`` usable in a Keras variable name (no ``/``), for state a wrapper keeps per weight."""
        return self.name.replace("/", "__")


def per_channel_by_rank(rank: int) -> bool:
    """The default per-channel rule: convolution kernels (rank >= 3) per channel, matrices per tensor."""
    return rank >= 3


@runtime_checkable
class OptimizableLayer(Protocol):
    """Protocol for custom layers whose weights collabopt may optimize.

    Example:

    >>> import keras
    >>> from collabopt.layers import WeightSpec
    >>> class Scale(keras.layers.Layer):
    ...     def build(self, shape):
    ...         self.w = self.add_weight(shape=(shape[-1], 4), name="w")
    ...     def call(self, x):
    ...         return x @ self.w
    ...     def get_optimizable_weights(self):
    ...         return [WeightSpec("w", channel_axes=(-1,), input_axis=0)]
    """

    def get_optimizable_weights(self) -> list[WeightSpec]: ...


def register_layer(layer_class: type, weights=None, *, roles: LayerRoles | None = None) -> None:
    """Declares the optimizable weights and the roles of a layer class (and its subclasses).

    Args:
        layer_class: A ``keras.layers.Layer`` subclass.
        weights: Its optimizable weights (``WeightSpec.name``: the attribute
            that holds each variable, or its path through sublayers), or a
            function ``layer -> list[WeightSpec]`` when they depend on the
            layer's configuration; None: leave them as they are (a layer
            with no weights, or one declaring them through a protocol).
        roles: Its :class:`~collabopt.layers.LayerRoles` (same-scale for
            QAT, BN-fold target, channel behaviour for filter pruning, ...);
            None: those of its nearest registered base class.

    Example:

    >>> import keras
    >>> from collabopt.layers import PRODUCES, LayerRoles, WeightSpec, layer_roles, register_layer
    >>> class MyDense(keras.layers.Dense):
    ...     pass
    >>> register_layer(MyDense, [WeightSpec("kernel", (-1,), 0)])
    >>> layer_roles(MyDense).channels == PRODUCES  # inherited from Dense
    True
    >>> class Flip(keras.layers.Layer):  # weightless: reverses the channel order, keeps the scale
    ...     def call(self, x):
    ...         return keras.ops.flip(x, axis=-1)
    >>> register_layer(Flip, roles=LayerRoles(passthrough=True, same_scale=True))
    """
    if not (isinstance(layer_class, type) and issubclass(layer_class, keras.layers.Layer)):
        raise InvalidArgumentError(
            f"register_layer expects a keras.layers.Layer subclass; received {layer_class!r}."
        )
    if weights is None and roles is None:
        raise InvalidArgumentError(
            f"register_layer({layer_class.__name__}): give its weights (a list of WeightSpec or a function "
            "of the layer), its roles (a LayerRoles), or both."
        )
    if roles is not None:
        register_layer_roles(layer_class, roles)
    if weights is not None:
        register_layer_support(layer_class, weights=weights)


def _einsum_spec(name: str, equation: str) -> WeightSpec:
    """Axes of an einsum kernel: output channels are its axes that reach the output, input the first contracted one."""
    inputs, output = equation.split("->")
    kernel = inputs.split(",")[1]
    rank = len(kernel)
    out_axes = tuple(i - rank for i, c in enumerate(kernel) if c in output)
    contracted = [i - rank for i, c in enumerate(kernel) if c not in output]
    return WeightSpec(name, out_axes or (-1,), contracted[0] if contracted else None, per_channel_quantization=False)


def einsum_dense_specs(layer) -> tuple[WeightSpec, ...]:
    return (_einsum_spec("kernel", layer.equation),)


def recurrent_specs(layer) -> tuple[WeightSpec, ...]:
    # The input and recurrent kernels of every cell (both directions of a
    # Bidirectional), addressed by their path inside the layer.
    # (A copied layer may build its sublayers outside its own name scope, so
    # their paths may or may not start with the layer's name.)
    specs = []
    prefix = layer.name + "/"
    for variable in layer.weights:
        path = variable.path[len(prefix):] if variable.path.startswith(prefix) else variable.path
        if path.split("/")[-1] in ("kernel", "recurrent_kernel"):
            specs.append(WeightSpec(path, (-1,), 0, per_channel_quantization=False))
    return tuple(specs)


def multi_head_attention_specs(layer) -> tuple[WeightSpec, ...]:
    # Public properties of the built layer; their variables are found by path.
    specs = []
    for attribute in ("query_dense", "key_dense", "value_dense", "output_dense"):
        dense = getattr(layer, attribute, None)
        if dense is not None:
            specs.append(_einsum_spec(f"{dense.name}/kernel", dense.equation))
    return tuple(specs)


def time_distributed_specs(layer) -> tuple[WeightSpec, ...] | None:
    # The wrapped layer's weights, addressed by their path below the wrapper;
    # TimeDistributed applies the layer to every step, so its axes are the
    # wrapped layer's. Unsupported (None) when the wrapped layer is.
    inner = weight_specs(layer.layer)
    if inner is None:
        return None
    return tuple(dataclasses.replace(spec, name=f"{layer.layer.name}/{spec.name}") for spec in inner)


# Methods a custom layer may define to declare its weights, in order of
# preference. Techniques add their TFMOT-compatible protocols here
# (``get_prunable_weights``, ``get_clusterable_weights``) so this module never
# needs to know them.
_PROTOCOL_METHODS: list[str] = ["get_optimizable_weights"]


def register_weights_protocol(method_name: str) -> None:
    """Lets layers declare their optimizable weights through ``method_name()``.

    The method may return :class:`WeightSpec` objects, variables, or
    ``(name, variable)`` pairs; for the latter two the output-channel axis is
    the last and the input-channel axis the one before it.
    """
    if method_name not in _PROTOCOL_METHODS:
        _PROTOCOL_METHODS.append(method_name)


def _spec_from_declared(layer, item) -> WeightSpec:
    if isinstance(item, WeightSpec):
        return item
    name, variable = item if isinstance(item, tuple) else (None, item)
    if not isinstance(variable, keras.Variable):
        raise InvalidArgumentError(
            f"layer '{layer.name}' ({type(layer).__name__}) declared {item!r} as an optimizable "
            "weight; expected a WeightSpec, a keras.Variable or a (name, keras.Variable) pair."
        )
    name = name or variable.path.split("/")[-1]
    rank = len(variable.shape)
    return WeightSpec(name, (-1,), -2 if rank >= 2 else None)


def declared_specs(layer, method_name: str) -> tuple[WeightSpec, ...] | None:
    """Specs from one protocol method of ``layer`` (None if it does not define it)."""
    method = getattr(layer, method_name, None)
    if not callable(method) or isinstance(layer, type):
        return None
    return tuple(_spec_from_declared(layer, item) for item in method())


def weight_specs(layer: keras.layers.Layer) -> tuple[WeightSpec, ...] | None:
    """The optimizable weights of ``layer``, or ``None`` if it is unsupported.

    A protocol method on the layer (:class:`OptimizableLayer`, or a technique's
    TFMOT-style one) wins over the class's record, searched along the MRO, so
    subclasses of supported layers are supported. Layers whose roles say
    ``passthrough`` give an empty tuple; an unregistered layer holding
    sublayers gives its sublayers' (:func:`composite_specs`).
    """
    source, value = _weight_source(layer)
    if source == "composite":
        specs = composite_specs(layer)
        return specs if specs or not layer.weights else None
    return value


def _weight_source(layer):
    """Where ``layer``'s optimizable weights come from, and what it says: the one order of precedence.

    A protocol method on the layer wins over its class's record (looked up
    along the MRO: a Conv2D subclass that changes the convolution still
    stores its weight under the same attribute); a pass-through role gives
    no weights; an unregistered layer holding sublayers is a composite;
    anything else is unsupported.
    """
    for method_name in _PROTOCOL_METHODS:
        specs = declared_specs(layer, method_name)
        if specs is not None:
            return "declared", specs
    entry = support_fact(layer, "weights")
    if entry is not None:
        return "record", tuple(entry(layer)) if callable(entry) else entry
    if layer_roles(layer).passthrough:
        return "passthrough", ()
    if is_composite(layer):
        return "composite", None
    return "unsupported", None


def handled_as_composite(layer) -> bool:
    """True when collabopt reaches ``layer``'s weights through its sublayers (no protocol, record or roles of its own).

    >>> import keras
    >>> handled_as_composite(keras.layers.MultiHeadAttention(2, 4))  # registered: a layer of its own
    False
    """
    return _weight_source(layer)[0] == "composite"


def composite_specs(layer) -> tuple[WeightSpec, ...]:
    """The optimizable weights inside a composite layer, each named by its attribute path.

    Every supported sublayer contributes its own specs (recursively: a
    composite inside a composite, lists and dicts of sublayers) with its
    attribute path in front: ``conv1/kernel``, ``convs/0/kernel``,
    ``attention/query/kernel``. Sublayers that are unsupported contribute
    nothing (:func:`unreached_weights` names their variables).

    >>> import keras
    >>> class Block(keras.layers.Layer):
    ...     def __init__(self, **kwargs):
    ...         super().__init__(**kwargs)
    ...         self.conv = keras.layers.Conv2D(4, 3)
    ...         self.norm = keras.layers.BatchNormalization()
    ...         self.heads = [keras.layers.Dense(2), keras.layers.Dense(3)]
    ...     def call(self, x):
    ...         x = self.norm(self.conv(x))
    ...         return [head(x) for head in self.heads]
    >>> block = Block()
    >>> _ = block(keras.ops.zeros((1, 5, 5, 1)))
    >>> [spec.name for spec in weight_specs(block)]
    ['conv/kernel', 'heads/0/kernel', 'heads/1/kernel']
    """
    specs = []
    for path, sub in sublayer_items(layer):
        if not sub.built:  # created but never called (EfficientNet's unused squeeze-excite): no weights
            continue
        for spec in weight_specs(sub) or ():
            specs.append(dataclasses.replace(spec, name=f"{path}/{spec.name}"))
    return tuple(specs)


class _RecordingScope(keras.StatelessScope):
    """A StatelessScope that also remembers which variables were assigned in it (to apply their updates after).

    A variable it does not map reads its value from the scope it was entered
    in: on JAX, ``fit`` runs the model in a StatelessScope of its own holding
    every variable's traced value (the variables themselves hold none then).
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.assigned = {}  # id -> variable

    def add_update(self, update):
        super().add_update(update)
        self.assigned[id(update[0])] = update[0]

    def get_current_value(self, variable):
        value = super().get_current_value(variable)
        outer = getattr(self, "original_scope", None)
        if value is None and outer is not None:
            return outer.get_current_value(variable)
        return value


def _between_output(between, index, outputs):
    return between(outputs, index) if keras.ops.is_tensor(outputs) and "float" in str(outputs.dtype) else outputs


def unreached_weights(layer) -> list[str]:
    """Paths of the variables of ``layer`` that no technique can reach (not optimizable, not statistics).

    For a composite: variables of its unsupported sublayers and its own
    trainable variables outside any sublayer, e.g. ``position_embedding/embeddings``
    of a user's PositionEmbedding. Empty for any other layer (an unsupported
    plain layer is named as a whole where it is left unchanged; a
    registered layer holding sublayers, such as GRU and its cell, has the
    weights its record names).
    """
    if not handled_as_composite(layer):
        return []
    out = []
    covered = set()
    for path, sub in sublayer_items(layer):
        covered.update(id(v) for v in sub.weights)
        below = unreached_weights(sub) if weight_specs(sub) is not None else [v.path for v in sub.weights if v.trainable]
        out.extend(f"{path}/{name}" for name in _relative(sub, below))
    out.extend(_relative(layer, [v.path for v in layer.weights if id(v) not in covered and v.trainable]))
    return out


def _relative(layer, paths):
    prefix = layer.name + "/"
    return [p.split(prefix, 1)[1] if prefix in p else p.split("/")[-1] for p in paths]


def is_passthrough(layer: keras.layers.Layer) -> bool:
    """True if ``layer`` has nothing to optimize and can be left as it is."""
    if layer_roles(layer).passthrough:
        return True
    return weight_specs(layer) is None and not layer.weights


def get_variable(layer: keras.layers.Layer, spec: WeightSpec) -> keras.Variable:
    """The ``keras.Variable`` that ``spec`` names on ``layer``.

    Raises:
        ValueError: if the layer has no such variable (named after the layer
            and the weight), e.g. a Dense layer with LoRA enabled, whose
            ``kernel`` is a computed tensor.
    """
    value = getattr(layer, spec.name, None) if "/" not in spec.name else None
    if isinstance(value, keras.Variable):
        return value
    if "/" in spec.name:
        sub, rest = resolve_sublayer(layer, spec.name)
        if sub is not None:  # an attribute path inside a composite layer
            return get_variable(sub, dataclasses.replace(spec, name=rest))
    # An attribute computed from variables (LoRA's kernel + a @ b) is what
    # the layer computes with: optimizing a variable under it would not reach it.
    matches = [] if value is not None else [v for v in layer.weights if v.path == spec.name or v.path.endswith("/" + spec.name)]
    if len(matches) == 1:
        return matches[0]
    raise InvalidArgumentError(
        f"layer '{layer.name}' ({type(layer).__name__}): weight '{spec.name}' is not a "
        f"variable of this layer (got {type(value).__name__}). Optimizable weights must be "
        "keras.Variable objects. A layer with LoRA enabled computes kernel + lora_kernel_a @ lora_kernel_b: "
        "optimize a copy built without enable_lora holding that merged kernel."
    )


def optimizable_variables(layer: keras.layers.Layer) -> dict[str, keras.Variable]:
    """Maps each optimizable weight name of ``layer`` to its variable."""
    specs = weight_specs(layer) or ()
    return {spec.name: get_variable(layer, spec) for spec in specs}


def spec_for(layer: keras.layers.Layer, name: str) -> WeightSpec:
    """The :class:`WeightSpec` called ``name`` on ``layer`` (ValueError if none)."""
    for spec in weight_specs(layer) or ():
        if spec.name == name:
            return spec
    accepted = [s.name for s in weight_specs(layer) or ()]
    raise InvalidArgumentError(
        f"layer '{layer.name}' ({type(layer).__name__}) has no optimizable weight "
        f"'{name}'; it has {accepted}."
    )


def call_with_weights(
    layer: keras.layers.Layer,
    inputs,
    weights: dict[str, object],
    *args,
    between=None,
    tflite_form: bool = False,
    sublayer_calls: dict | None = None,
    variables: list | None = None,
    **kwargs,
):
    """Runs ``layer`` on ``inputs`` with some of its weights replaced.

    Keras 3 layers expose ``kernel`` as a read-only property, so the weight
    cannot be swapped by assignment. ``keras.StatelessScope`` maps each named
    variable to a replacement tensor for the duration of the call; every read
    of the variable inside the layer's ``call`` sees the replacement, and the
    gradient flows into whatever the replacement was computed from. Measured
    on TF 2.21 / Keras 3.15: the same step time as calling
    ``convolution_op``/``matmul`` directly (the scope only exists while
    tracing), and it works for every layer without re-implementing its call.

    Args:
        layer: A built layer.
        inputs: The layer's inputs.
        weights: Weight name (as in :class:`WeightSpec`) -> replacement tensor
            of the variable's shape, or of its execution form
            (:func:`collabopt.layers.execution.to_execution_form`).
        between: For layers that TFLite runs as several ops
            (:func:`collabopt.layers.execution.internal_tensors`), a function
            applied to the tensor between them (e.g. a fake quantizer).
        tflite_form: Compute the layer as the ops TFLite executes, where
            :mod:`collabopt.layers.execution` has a runner for it (the same
            values; quantization needs the op boundaries).
        sublayer_calls: For a composite layer, ``{attribute path: call}``:
            sublayers that compute something else for this call (a folded
            BatchNormalization passes its input on).
        variables: Further ``(variable, value)`` pairs the layer computes
            with for this call (a conv's bias plus a folded correction).
        **kwargs: Passed to the layer's call (e.g. ``training``).

    Returns:
        The layer's outputs computed with the replacement weights.
    """
    if tflite_form and has_tflite_form(layer):
        if not variables:
            return call_in_tflite_form(layer, inputs, weights, between)
        with _RecordingScope(state_mapping=list(variables)):  # the runners read the layer's other variables
            return call_in_tflite_form(layer, inputs, weights, between)
    specs = {s.name: s for s in weight_specs(layer) or ()}
    mapping = []
    for name, value in weights.items():
        if name not in specs:
            raise InvalidArgumentError(
                f"layer '{layer.name}' ({type(layer).__name__}) has no optimizable "
                f"weight '{name}'; it has {sorted(specs)}."
            )
        mapping.append((get_variable(layer, specs[name]), value))
    mapping.extend(variables or ())
    with contextlib.ExitStack() as hooks:
        if sublayer_calls:
            hooks.enter_context(redirected_calls([(sublayer_at(layer, p), lambda _, c=call: c) for p, call in sublayer_calls.items()]))
        if between is not None and handled_as_composite(layer):
            # QAT inside a composite layer: its sublayers' outputs pass through
            # ``between`` (one fake quantizer each) as the layer computes them.
            paths = internal_tensors(layer)
            hooks.enter_context(
                sublayer_output_hooks(layer, {p: functools.partial(_between_output, between, i) for i, p in enumerate(paths)})
            )
        if not mapping:
            return layer(inputs, *args, **kwargs)
        # StatelessScope also captures the variable assignments made during the
        # call (a BatchNormalization's moving statistics inside a composite
        # layer, the ranges of the fake quantizers between its sublayers): they
        # are applied once the scope is left.
        with _RecordingScope(state_mapping=mapping) as scope:
            outputs = layer(inputs, *args, **kwargs)
    replaced = {id(variable) for variable, _ in mapping}
    for key, variable in scope.assigned.items():
        if key not in replaced:
            variable.assign(scope.get_current_value(variable))
    return outputs
