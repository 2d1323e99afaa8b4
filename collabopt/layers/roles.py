"""What each layer class is to the techniques: the one table of layer roles.

Every fact a technique needs about a layer *class*, other than its weights
(:mod:`collabopt.layers.registry`), is a field of :class:`LayerRoles`, kept in
one table that every consumer reads:

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

    Example:

    >>> from collabopt.layers import KEEPS, LayerRoles
    >>> LayerRoles(same_scale=True, channels=KEEPS).passthrough
    False
    """

    passthrough: bool = False
    same_scale: bool = False
    output_weight: str | None = None
    channels: str | Callable | None = None

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
_ROLES: dict[type, LayerRoles] = {}


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
    _ROLES[layer_class] = roles


def layer_roles(layer) -> LayerRoles:
    """The :class:`LayerRoles` of a layer (or layer class): its class's, else its nearest registered base's."""
    cls = layer if isinstance(layer, type) else type(layer)
    for klass in cls.__mro__:
        roles = _ROLES.get(klass)
        if roles is not None:
            return roles
    return _NONE


def channel_behaviour(layer) -> str | None:
    """What ``layer`` does to the channel axis (one of :data:`CHANNEL_BEHAVIOURS`), or None if unknown."""
    behaviour = layer_roles(layer).channels
    return behaviour(layer) if callable(behaviour) else behaviour


def roles_classes(**wanted) -> tuple[type, ...]:
    """The registered classes whose roles have the given field values, e.g. ``roles_classes(passthrough=True)``."""
    return tuple(c for c, r in _ROLES.items() if all(getattr(r, k) == v for k, v in wanted.items()))


def _activation_channels(layer):
    activation = layer.get_config().get("activation")
    return None if str(activation) in ("softmax", "log_softmax") else ELEMENTWISE


def _reshape_channels(layer):
    return FLATTENS if len(layer.get_config()["target_shape"]) == 1 else RESHAPES


L = keras.layers
#: keras.layers classes that return their input unchanged at inference
#: (checked with ``training=False``); a name this Keras lacks is skipped.
_AUGMENTATION_LAYERS = tuple(
    getattr(L, name)
    for name in (
        "RandomFlip", "RandomRotation", "RandomZoom", "RandomTranslation", "RandomContrast", "RandomBrightness",
        "RandomColorDegeneration", "RandomColorJitter", "RandomElasticTransform", "RandomErasing",
        "RandomGaussianBlur", "RandomGrayscale", "RandomHue", "RandomInvert", "RandomPerspective",
        "RandomPosterization", "RandomSaturation", "RandomSharpness", "RandomShear", "AugMix", "RandAugment",
        "CutMix", "MixUp",
    )
    if hasattr(L, name)
)  # fmt: skip
_BUILT_IN: list[tuple[tuple, LayerRoles]] = [
    # Weightless; outputs are values of the input (TFLite keeps its scale).
    ((L.InputLayer, L.Permute), LayerRoles(passthrough=True, same_scale=True)),
    ((L.Flatten,), LayerRoles(passthrough=True, same_scale=True, channels=FLATTENS)),
    ((L.Reshape,), LayerRoles(passthrough=True, same_scale=True, channels=_reshape_channels)),
    ((L.Dropout, L.GaussianNoise, L.Identity), LayerRoles(passthrough=True, same_scale=True, channels=ELEMENTWISE)),
    # Data augmentation: random in training, the identity at inference (so
    # in the exported file), where a scale of its own would leave a requantize.
    (_AUGMENTATION_LAYERS, LayerRoles(passthrough=True, same_scale=True, channels=ELEMENTWISE)),
    (
        (
            L.SpatialDropout1D, L.SpatialDropout2D, L.MaxPooling1D, L.MaxPooling2D, L.MaxPooling3D,
            L.ZeroPadding1D, L.ZeroPadding2D, L.Cropping1D, L.Cropping2D,
            # TFLite's int8 AVERAGE_POOL_2D requires its output on the input's scale.
            L.AveragePooling1D, L.AveragePooling2D, L.AveragePooling3D,
        ),
        LayerRoles(passthrough=True, same_scale=True, channels=KEEPS),
    ),  # fmt: skip
    # Weightless; new values (their own output scale).
    ((L.Activation,), LayerRoles(passthrough=True, channels=_activation_channels)),
    ((L.ReLU, L.LeakyReLU, L.ELU), LayerRoles(passthrough=True, channels=ELEMENTWISE)),
    ((L.GaussianDropout, L.AlphaDropout), LayerRoles(passthrough=True, channels=ELEMENTWISE)),
    (
        (
            L.GlobalMaxPooling1D, L.GlobalMaxPooling2D, L.GlobalAveragePooling1D, L.GlobalAveragePooling2D, L.GlobalAveragePooling3D,
            L.UpSampling1D, L.UpSampling2D, L.Rescaling,
        ),
        LayerRoles(passthrough=True, channels=KEEPS),
    ),  # fmt: skip
    (
        (L.SpatialDropout3D, L.GlobalMaxPooling3D, L.UpSampling3D, L.ZeroPadding3D, L.Cropping3D),
        LayerRoles(passthrough=True, channels=KEEPS),
    ),
    ((L.Add, L.Subtract, L.Average, L.Maximum, L.Minimum), LayerRoles(passthrough=True, channels=MERGES)),
    ((L.Multiply,), LayerRoles(passthrough=True, channels=MULTIPLIES)),
    ((L.Concatenate,), LayerRoles(passthrough=True, channels=CONCATENATES)),
    ((L.Softmax, L.RepeatVector), LayerRoles(passthrough=True)),
    # Variables, none to optimize.
    ((L.BatchNormalization,), LayerRoles(passthrough=True, channels=KEEPS)),
    ((L.PReLU, L.LayerNormalization, L.Normalization), LayerRoles(passthrough=True)),
    # Optimizable weights (collabopt.layers.registry) holding output channels.
    (
        (L.Dense, L.Conv1D, L.Conv2D, L.Conv3D, L.Conv1DTranspose, L.Conv2DTranspose, L.Conv3DTranspose),
        LayerRoles(output_weight="kernel", channels=PRODUCES),
    ),
    ((L.SeparableConv1D, L.SeparableConv2D), LayerRoles(output_weight="pointwise_kernel", channels=PRODUCES)),
    ((L.DepthwiseConv1D, L.DepthwiseConv2D), LayerRoles(output_weight="kernel", channels=KEEPS)),
]
for _classes, _roles in _BUILT_IN:
    for _cls in _classes:
        _ROLES[_cls] = _roles
