"""Small reference architectures used by the CLI, the benchmarks and the examples.

All use BatchNormalization momentum 0.9 (short training runs with the Keras
default 0.99 leave evaluation at chance) and return uncompiled Functional models
that output logits. ``keras_module`` lets the benchmarks build the very same
architecture with ``tf_keras`` for the TFMOT peer.
"""

from __future__ import annotations

import keras
from collabopt.errors import InvalidArgumentError
from collabopt.training import compile_classifier


def _conv_bn_relu(L, x, filters, kernel, name, strides=1):
    x = L.Conv2D(filters, kernel, strides=strides, padding="same", use_bias=False, name=f"{name}_conv")(x)
    x = L.BatchNormalization(momentum=0.9, name=f"{name}_bn")(x)
    return L.ReLU(name=f"{name}_relu")(x)


def _ds_block(L, x, filters, name, strides=1):
    x = L.DepthwiseConv2D(3, strides=strides, padding="same", use_bias=False, name=f"{name}_dw")(x)
    x = L.BatchNormalization(momentum=0.9, name=f"{name}_dw_bn")(x)
    x = L.ReLU(name=f"{name}_dw_relu")(x)
    return _conv_bn_relu(L, x, filters, 1, f"{name}_pw")


def reference_cnn(input_shape=(28, 28, 1), num_classes: int = 10, *, keras_module=keras) -> keras.Model:
    """Conv-BN-ReLU x2 with pooling, then Dense: the image reference CNN (~100k params at 28x28).

    Example:

    >>> from collabopt.reference_models import reference_cnn
    >>> reference_cnn((8, 8, 1)).output.shape
    (None, 10)
    """
    K, L = keras_module, keras_module.layers
    inputs = K.Input(input_shape, name="image")
    x = _conv_bn_relu(L, inputs, 16, 3, "block1")
    x = L.MaxPooling2D(name="pool1")(x)
    x = _conv_bn_relu(L, x, 32, 3, "block2")
    x = L.MaxPooling2D(name="pool2")(x)
    x = L.Flatten(name="flatten")(x)
    x = L.Dense(64, activation="relu", name="fc1")(x)
    outputs = L.Dense(num_classes, name="logits")(x)
    return K.Model(inputs, outputs, name="reference_cnn")


def mobilenet_style(input_shape=(28, 28, 1), num_classes: int = 10, width: int = 32, *, keras_module=keras) -> keras.Model:
    """A small MobileNet-v1-style CNN: conv stem, depthwise-separable blocks, GAP, Dense."""
    K, L = keras_module, keras_module.layers
    inputs = K.Input(input_shape, name="image")
    x = _conv_bn_relu(L, inputs, width, 3, "stem", strides=2 if input_shape[0] >= 16 else 1)
    x = _ds_block(L, x, 2 * width, "ds1")
    x = _ds_block(L, x, 2 * width, "ds2", strides=2)
    x = _ds_block(L, x, 4 * width, "ds3")
    x = _ds_block(L, x, 4 * width, "ds4", strides=2)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    outputs = L.Dense(num_classes, name="logits")(x)
    return K.Model(inputs, outputs, name="mobilenet_style")


def ds_cnn(input_shape=(40, 13, 1), num_classes: int = 10, width: int = 64, *, keras_module=keras) -> keras.Model:
    """A DS-CNN keyword-spotting model (conv stem, 4 depthwise-separable blocks, GAP, Dense)."""
    K, L = keras_module, keras_module.layers
    inputs = K.Input(input_shape, name="mfcc")
    x = _conv_bn_relu(L, inputs, width, (10, 4), "stem", strides=(2, 1))
    for i in range(4):
        x = _ds_block(L, x, width, f"ds{i + 1}")
    x = L.GlobalAveragePooling2D(name="gap")(x)
    outputs = L.Dense(num_classes, name="logits")(x)
    return K.Model(inputs, outputs, name="ds_cnn")


def compile_for_classification(model: keras.Model, learning_rate: float = 1e-3) -> keras.Model:
    """Compiles ``model`` with Adam and sparse categorical cross-entropy on logits (one trace per ``fit``).

    See :func:`collabopt.training.compile_classifier`.
    """
    return compile_classifier(model, learning_rate)


# --- the model zoo: the architectures users bring -------------------------------------------------

#: keras.applications classification families: constructor name -> smallest input side it builds at.
APPLICATIONS = {
    "MobileNet": 32,
    "MobileNetV2": 32,
    "MobileNetV3Small": 32,
    "MobileNetV3Large": 32,
    "EfficientNetB0": 32,
    "EfficientNetV2B0": 32,
    "ResNet50": 32,
    "ResNet50V2": 32,
    "DenseNet121": 32,
    "NASNetMobile": 32,
    "ConvNeXtTiny": 32,
    "Xception": 71,
    "InceptionV3": 75,
    "VGG16": 32,
}

# Width multipliers that keep the families with an ``alpha`` small.
_SMALL_ALPHA = {"MobileNet": 0.25, "MobileNetV2": 0.35, "MobileNetV3Small": 0.75, "MobileNetV3Large": 0.75}


def application(
    name: str, input_size: int | None = None, num_classes: int = 10, classifier_activation="softmax", *, keras_module=keras
) -> keras.Model:
    """A ``keras.applications`` classification model, untrained (``weights=None``), at a small input.

    Args:
        name: A key of :data:`APPLICATIONS`, e.g. ``"MobileNetV2"``.
        input_size: Image side in pixels (default: the smallest the family builds at).
        num_classes: Classes of the Dense head.
        classifier_activation: ``"softmax"`` or ``None`` (logits).
        keras_module: The Keras to build with (``tf_keras`` for the TFMOT peer).

    Example:

    >>> from collabopt.reference_models import application
    >>> application("MobileNet", 32).output.shape
    (None, 10)
    """
    if name not in APPLICATIONS:
        raise InvalidArgumentError(f"application name {name!r} is not in the zoo; accepted: {sorted(APPLICATIONS)}.")
    size = input_size or APPLICATIONS[name]
    kwargs = dict(weights=None, input_shape=(size, size, 3), classes=num_classes, classifier_activation=classifier_activation)
    if name in _SMALL_ALPHA:
        kwargs["alpha"] = _SMALL_ALPHA[name]
    if name.startswith("MobileNetV3") or name.startswith("EfficientNetV2") or name.startswith("ConvNeXt"):
        kwargs["include_preprocessing"] = True
    return getattr(keras_module.applications, name)(**kwargs)


def conv1d_kws(input_shape=(40, 13), num_classes: int = 10, width: int = 32, *, keras_module=keras) -> keras.Model:
    """A Conv1D keyword spotter over MFCC frames: Conv1D-BN-ReLU blocks, separable and depthwise convs, GAP, Dense."""
    K, L = keras_module, keras_module.layers
    inputs = K.Input(input_shape, name="mfcc")
    x = L.Conv1D(width, 5, padding="same", use_bias=False, name="stem")(inputs)
    x = L.BatchNormalization(momentum=0.9, name="stem_bn")(x)
    x = L.ReLU(name="stem_relu")(x)
    x = L.SeparableConv1D(width, 3, padding="same", activation="relu", name="sep")(x)
    x = L.MaxPooling1D(name="pool")(x)
    x = L.DepthwiseConv1D(3, padding="same", name="dw")(x)
    x = L.Conv1D(2 * width, 1, activation="relu", name="pw")(x)
    x = L.GlobalAveragePooling1D(name="gap")(x)
    x = L.Dropout(0.1, name="drop")(x)
    return K.Model(inputs, L.Dense(num_classes, activation="softmax", name="head")(x), name="conv1d_kws")


def recurrent_kws(
    cell: str = "lstm", bidirectional: bool = False, input_shape=(40, 13), num_classes: int = 10, units: int = 32, *, keras_module=keras
) -> keras.Model:
    """A keyword-spotting RNN: (Bi)LSTM or (Bi)GRU over MFCC frames, then a Dense head.

    ``cell`` is ``"lstm"`` or ``"gru"``; the last layer returns the final state.
    """
    K, L = keras_module, keras_module.layers
    layer_class = {"lstm": L.LSTM, "gru": L.GRU}[cell]
    inputs = K.Input(input_shape, name="mfcc")
    x = L.Normalization(axis=None, mean=0.5, variance=1.0 / 12.0, name="norm")(inputs)  # MFCC statistics of the data set
    rnn = layer_class(units, name=cell)
    x = (L.Bidirectional(rnn, name=f"bi_{cell}") if bidirectional else rnn)(x)
    x = L.Dense(units, activation="relu", name="fc")(x)
    name = f"{'bi' if bidirectional else ''}{cell}_kws"
    return K.Model(inputs, L.Dense(num_classes, name="logits")(x), name=name)


def tiny_transformer(
    sequence_length: int = 16, vocabulary: int = 100, num_classes: int = 4, dim: int = 32, heads: int = 2, *, keras_module=keras
) -> keras.Model:
    """A one-block Transformer text classifier: integer token ids -> Embedding -> MHA -> LN -> GELU MLP -> LN -> pool -> Dense."""
    K, L = keras_module, keras_module.layers
    tokens = K.Input((sequence_length,), dtype="int32", name="tokens")
    x = L.Embedding(vocabulary, dim, name="embedding")(tokens)
    attention = L.MultiHeadAttention(heads, dim // heads, name="attention")(x, x)
    x = L.LayerNormalization(name="ln1")(L.Add(name="res1")([x, attention]))
    h = L.Dense(2 * dim, activation="gelu", name="mlp_up")(x)
    h = L.EinsumDense("btd,de->bte", output_shape=(None, dim), bias_axes="e", name="mlp_down")(h)
    x = L.LayerNormalization(name="ln2")(L.Add(name="res2")([x, h]))
    x = L.GlobalAveragePooling1D(name="pool")(x)
    return K.Model(tokens, L.Dense(num_classes, name="logits")(x), name="tiny_transformer")


# --- KerasHub backbones, built from their constructor arguments (random weights, nothing downloaded) ---

_HUB_IMAGE_SIZE = 32
_HUB_SEQUENCE_LENGTH = 16
_HUB_VOCABULARY = 200

#: KerasHub backbone class -> small constructor arguments (image backbones take ``image_shape``).
KERAS_HUB_BACKBONES = {
    "ResNetBackbone": dict(
        input_conv_filters=[16], input_conv_kernel_sizes=[3], stackwise_num_filters=[64, 32],
        stackwise_num_blocks=[1, 1], stackwise_num_strides=[1, 2], block_type="bottleneck_block",
    ),
    "MobileNetBackbone": dict(  # MobileNetV3-Small's block types at a quarter of its depth
        stackwise_expansion=[[16], [72, 88], [96]], stackwise_num_blocks=[1, 2, 1],
        stackwise_num_filters=[[16], [24, 24], [40]], stackwise_kernel_size=[[3], [3, 3], [5]],
        stackwise_num_strides=[[2], [2, 1], [2]], stackwise_se_ratio=[[0.25], [None, None], [0.25]],
        stackwise_activation=[["relu"], ["relu", "relu"], ["hard_swish"]], stackwise_padding=[[1], [1, 1], [2]],
        output_num_filters=96, depthwise_filters=16, depthwise_stride=2, depthwise_residual=False,
        last_layer_filter=96, squeeze_and_excite=0.5,
    ),
    "EfficientNetBackbone": dict(
        stackwise_width_coefficients=[1.0] * 3, stackwise_depth_coefficients=[1.0] * 3,
        stackwise_kernel_sizes=[3, 3, 3], stackwise_num_repeats=[1, 1, 1], stackwise_input_filters=[16, 16, 24],
        stackwise_output_filters=[16, 24, 32], stackwise_expansion_ratios=[1, 4, 4],
        stackwise_squeeze_and_excite_ratios=[0.0, 0.0, 0.25], stackwise_strides=[1, 2, 2],
        stackwise_block_types=["fused", "fused", "unfused"], num_features=64,
    ),
    "DenseNetBackbone": dict(stackwise_num_repeats=[2, 2], growth_rate=8),
    "ViTBackbone": dict(patch_size=8, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64),
    "BertBackbone": dict(
        vocabulary_size=_HUB_VOCABULARY, num_layers=2, num_heads=2, hidden_dim=32, intermediate_dim=64,
        max_sequence_length=_HUB_SEQUENCE_LENGTH,
    ),
    "DistilBertBackbone": dict(
        vocabulary_size=_HUB_VOCABULARY, num_layers=2, num_heads=2, hidden_dim=32, intermediate_dim=64,
        max_sequence_length=_HUB_SEQUENCE_LENGTH,
    ),
    "GPT2Backbone": dict(
        vocabulary_size=_HUB_VOCABULARY, num_layers=2, num_heads=2, hidden_dim=32, intermediate_dim=64,
        max_sequence_length=_HUB_SEQUENCE_LENGTH,
    ),
}  # fmt: skip


def keras_hub_backbone(name: str) -> keras.Model:
    """A small KerasHub backbone of class ``name`` (a key of :data:`KERAS_HUB_BACKBONES`), random weights.

    Needs ``keras-hub`` (a test extra); nothing is downloaded: backbones are
    built from constructor arguments, never from a preset.
    """
    if name not in KERAS_HUB_BACKBONES:
        raise InvalidArgumentError(f"KerasHub backbone {name!r} is not in the zoo; accepted: {sorted(KERAS_HUB_BACKBONES)}.")
    import keras_hub

    kwargs = dict(KERAS_HUB_BACKBONES[name])
    if "vocabulary_size" not in kwargs:
        key = "input_shape" if name == "EfficientNetBackbone" else "image_shape"
        kwargs[key] = (_HUB_IMAGE_SIZE, _HUB_IMAGE_SIZE, 3)
    return getattr(keras_hub.models, name)(**kwargs)


def keras_hub_classifier(name: str, num_classes: int = 4) -> keras.Model:
    """A Functional classifier around :func:`keras_hub_backbone`: fixed input shapes, a pooled Dense head.

    Text backbones take a dict of ``token_ids`` (and ``segment_ids``,
    ``padding_mask``) of :data:`_HUB_SEQUENCE_LENGTH` tokens; their dict
    output's ``pooled_output`` (else the mean over the sequence) feeds the head.
    Image backbones end in global average pooling.
    """
    backbone = keras_hub_backbone(name)
    L = keras.layers
    if isinstance(backbone.input, dict):
        inputs = {
            key: keras.Input((_HUB_SEQUENCE_LENGTH,), dtype="int32", name=key) for key in backbone.input
        }
        features = backbone(inputs)
        if isinstance(features, dict):
            features = features.get("pooled_output", features.get("sequence_output"))
        if len(features.shape) == 3:
            features = L.GlobalAveragePooling1D(name="pool")(features)
    else:
        inputs = keras.Input(backbone.input.shape[1:], name="image")
        features = backbone(inputs)
        if len(features.shape) == 4:
            features = L.GlobalAveragePooling2D(name="pool")(features)
        elif len(features.shape) == 3:  # ViT: the class token
            features = L.Cropping1D((0, features.shape[1] - 1), name="class_token")(features)
            features = L.Flatten(name="flatten")(features)
    return keras.Model(inputs, L.Dense(num_classes, name="logits")(features), name=f"{name.removesuffix('Backbone').lower()}_classifier")


def keras_hub_data(model: keras.Model, batch: int = 4, seed: int = 0):
    """Random inputs for a :func:`keras_hub_classifier` (or backbone): images, or token ids with a full padding mask."""
    import numpy as np

    rng = np.random.default_rng(seed)

    def one(spec):
        shape = (batch,) + tuple(spec.shape[1:])
        if "padding_mask" in spec.name:
            return np.ones(shape, "int32")
        if "segment" in spec.name:
            return np.zeros(shape, "int32")
        if "int" in str(spec.dtype):
            return rng.integers(1, _HUB_VOCABULARY, shape).astype("int32")
        return rng.random(shape).astype("float32")

    if isinstance(model.input, dict):
        return {key: one(spec) for key, spec in model.input.items()}
    return one(model.input)
