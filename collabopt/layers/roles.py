"""What each layer class is to the techniques: the one table of layer roles.

Every fact a technique needs about what a layer *class* is, other than its
weights (:mod:`collabopt.layers.registry`), is a field of :class:`LayerRoles`,
kept in the class's record (:mod:`collabopt.layers.support`; the built-in
ones in :mod:`collabopt.layers.builtin`) that every consumer reads:

* ``passthrough``: nothing to optimize even if it owns variables
  (BatchNormalization's statistics, PReLU's slopes); techniques leave it as is.
* ``same_scale``: its outputs are values of its input (pooling, reshapes,
  dropout): TFLite keeps the input's quantization parameters, so QAT puts no
  output quantizer after it. Only for layers that convert to ops LiteRT's
  converter keeps the scale through (reshape, transpose, pooling, padding,
  slicing); measured on TF 2.21: a weightless layer converting to
  ``REVERSE_V2`` and declared same-scale is left in float.
* ``output_weight``: the weight that holds the layer's output channels. A
  following BatchNormalization folds into it during QAT (the layer must also
  take ``use_bias`` and have a linear activation) and filter pruning masks it.
* ``folds_into_producer``: a BatchNormalization: QAT and the converter fold it
  into the conv / dense before it.
* ``fused_activation``: an activation TFLite fuses into the conv, dense or add
  before it (ReLU, ReLU6; a function of the layer when it depends on the
  configuration).
* ``fuses_activation``: a weightless op TFLite fuses a following activation
  into (Add); layers with weights are such ops already.
* ``output_activation``: the activation a weightless layer ends in
  (``"softmax"`` for Softmax), for the fixed output ranges of int8 kernels.
* ``channel_vectors``: the per-output-channel vectors besides
  ``output_weight`` that reach an output channel (a conv's ``bias``, a
  BatchNormalization's ``gamma`` and ``beta``). With these and the output
  weight zeroed on a channel, and an activation that keeps 0
  (:func:`activation_keeps_zero`), the channel outputs exact zeros, so
  filter pruning masks them instead of every output activation. None: not
  known (filter pruning masks the outputs).
* ``channels``: what the layer does to the channel axis, for filter pruning
  (one of :data:`CHANNEL_BEHAVIOURS`, or a function of the layer giving one
  when it depends on the configuration; None: filter pruning does not handle
  the layer, so channels reaching it are left alone).

Roles are looked up along the class's MRO, so a subclass of a known layer has
its roles; custom layers join with :func:`register_layer_roles` (or the
``roles=`` argument of :func:`collabopt.layers.register_layer`).
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import keras

from collabopt.errors import InvalidArgumentError
from collabopt.layers.support import register_layer_support, registered_records, support_fact

#: New output channels computed from all input channels through a kernel; the
#: input channels are kernel rows (Conv, Dense). Shrinking slices
#: ``output_weight`` along its output and input axes, other registered
#: weights along their first channel axis (inputs), 1-D weights (bias) per
#: output channel, and sets the ``filters`` or ``units`` config entry.
PRODUCES = "produces"
#: Output channel ``c`` is computed from input channel ``c`` alone, keeping the
#: spatial layout (pooling, padding, DepthwiseConv with multiplier 1,
#: BatchNormalization). A weighted one owns per-channel weights, sliced with
#: its channels.
KEEPS = "keeps"
#: Computes each element from the same element alone (activations, dropout):
#: also on flattened vectors.
ELEMENTWISE = "elementwise"
#: Combines several inputs element by element (Add, Maximum, ...); a pruned
#: channel stays zero only if it is zero in every input.
MERGES = "merges"
#: Multiplies its inputs element by element: zero in any input gives zero.
MULTIPLIES = "multiplies"
#: Stacks its inputs' channels (along the last axis).
CONCATENATES = "concatenates"
#: Flattens positions and channels into one axis (Flatten, Reshape to 1-D).
FLATTENS = "flattens"
#: Reshapes the spatial axes, keeping the channel axis when its target does.
RESHAPES = "reshapes"

CHANNEL_BEHAVIOURS = (PRODUCES, KEEPS, ELEMENTWISE, MERGES, MULTIPLIES, CONCATENATES, FLATTENS, RESHAPES)


@dataclasses.dataclass(frozen=True)
class LayerRoles:
    """The roles of one layer class (see the module docstring for each field).

    Attributes:
        passthrough: Nothing to optimize, even if the layer owns variables.
        same_scale: TFLite keeps its input's quantization parameters.
        output_weight: Name of the weight holding the output channels (BN-fold
            target, filter-pruning mask), or None.
        channels: Channel behaviour for filter pruning (one of
            :data:`CHANNEL_BEHAVIOURS`, or ``layer -> behaviour or None``), or None.
        folds_into_producer: A BatchNormalization (folded into the op before it).
        fused_activation: An activation fused into the op before it (or
            ``layer -> bool``).
        fuses_activation: A weightless op a following activation fuses into.
        output_activation: The activation a weightless layer ends in.
        channel_vectors: Per-output-channel vectors besides ``output_weight``
            that reach an output channel (``("bias",)``), or None: not known.

    Example:

    >>> from collabopt.layers import KEEPS, LayerRoles
    >>> LayerRoles(same_scale=True, channels=KEEPS).passthrough
    False
    """

    passthrough: bool = False
    same_scale: bool = False
    output_weight: str | None = None
    channels: str | Callable | None = None
    folds_into_producer: bool = False
    fused_activation: bool | Callable = False
    fuses_activation: bool = False
    output_activation: str | None = None
    channel_vectors: tuple[str, ...] | None = None

    def __post_init__(self):
        if not (self.channels is None or callable(self.channels) or self.channels in CHANNEL_BEHAVIOURS):
            raise InvalidArgumentError(
                f"LayerRoles: channels={self.channels!r}; accepted: None, one of {CHANNEL_BEHAVIOURS}, "
                "or a function of the layer returning one."
            )
        if self.output_weight is not None and not isinstance(self.output_weight, str):
            raise InvalidArgumentError(
                f"LayerRoles: output_weight must be a weight name (str) or None; received {self.output_weight!r}."
            )


_NONE = LayerRoles()


def register_layer_roles(layer_class: type, roles: LayerRoles) -> None:
    """Declares the roles of a layer class (and its subclasses), replacing any it had.

    Args:
        layer_class: A ``keras.layers.Layer`` subclass.
        roles: Its :class:`LayerRoles`.

    Example:

    >>> import keras
    >>> from collabopt.layers import KEEPS, LayerRoles, layer_roles, register_layer_roles
    >>> class Clip6(keras.layers.Layer):  # weightless, per element: keeps channels and scale
    ...     def call(self, x):
    ...         return keras.ops.clip(x, 0.0, 6.0)
    >>> register_layer_roles(Clip6, LayerRoles(passthrough=True, same_scale=True, channels=KEEPS))
    >>> layer_roles(Clip6()).same_scale
    True
    """
    if not (isinstance(layer_class, type) and issubclass(layer_class, keras.layers.Layer)):
        raise InvalidArgumentError(
            f"register_layer_roles expects a keras.layers.Layer subclass; received {layer_class!r}."
        )
    if not isinstance(roles, LayerRoles):
        raise InvalidArgumentError(
            f"register_layer_roles({layer_class.__name__}, ...): roles must be a LayerRoles; received {roles!r}."
        )
    register_layer_support(layer_class, roles=roles)


def layer_roles(layer) -> LayerRoles:
    """The :class:`LayerRoles` of a layer (or layer class): its class's, else its nearest registered base's."""
    return support_fact(layer, "roles") or _NONE


#: Element-wise activations (by their Keras name) that map 0 to exactly 0.
ZERO_KEEPING_ACTIVATIONS = frozenset(
    {"linear", "relu", "relu6", "leaky_relu", "elu", "selu", "celu", "gelu", "silu", "hard_silu", "tanh", "mish", "softsign"}
)


def activation_keeps_zero(layer) -> bool:
    """True if ``layer``'s own activation maps an all-zero output channel to zeros (no ``activation``: linear).

    False for an activation not known to (softmax, sigmoid, a custom function).

    >>> import keras
    >>> from collabopt.layers.roles import activation_keeps_zero
    >>> activation_keeps_zero(keras.layers.Conv2D(4, 3, activation="relu6")), activation_keeps_zero(keras.layers.Dense(4, activation="sigmoid"))
    (True, False)
    """
    activation = getattr(layer, "activation", None)
    if activation is None:
        return True
    try:
        name = keras.activations.serialize(activation)
    except (TypeError, ValueError):  # a callable Keras cannot name
        return False
    return isinstance(name, str) and name in ZERO_KEEPING_ACTIVATIONS


def is_fused_activation(layer) -> bool:
    """True for an activation layer TFLite fuses into the conv / dense / add before it (ReLU, ReLU6)."""
    fused = layer_roles(layer).fused_activation
    return bool(fused(layer) if callable(fused) else fused)


def channel_behaviour(layer) -> str | None:
    """What ``layer`` does to the channel axis (one of :data:`CHANNEL_BEHAVIOURS`), or None if unknown."""
    behaviour = layer_roles(layer).channels
    return behaviour(layer) if callable(behaviour) else behaviour


def roles_classes(**wanted) -> tuple[type, ...]:
    """The registered classes whose roles have the given field values, e.g. ``roles_classes(passthrough=True)``."""
    return tuple(
        c
        for c, record in registered_records().items()
        if record.roles is not None and all(getattr(record.roles, k) == v for k, v in wanted.items())
    )
