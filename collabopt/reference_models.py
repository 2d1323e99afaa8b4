"""Small reference architectures used by the CLI, the benchmarks and the examples.

All use BatchNormalization momentum 0.9 (short training runs with the Keras
default 0.99 leave evaluation at chance) and return uncompiled Functional models
that output logits. ``keras_module`` lets the benchmarks build the very same
architecture with ``tf_keras`` for the TFMOT peer.
"""

from __future__ import annotations

import keras


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
    """Compiles ``model`` with Adam and sparse categorical cross-entropy on logits."""
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model
