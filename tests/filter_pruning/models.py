"""Tiny models with every channel dependency filter pruning must handle."""

import keras

L = keras.layers


def residual():
    """Conv-BN-ReLU, two residual blocks (Add), GAP, Dense."""
    x = keras.Input((8, 8, 3))
    h = L.Conv2D(8, 3, padding="same", use_bias=False, name="stem")(x)
    h = L.BatchNormalization(name="stem_bn")(h)
    h = L.ReLU(name="stem_relu")(h)
    for i in range(2):
        b = L.Conv2D(8, 3, padding="same", name=f"res{i}_a")(h)
        b = L.ReLU(name=f"res{i}_relu")(b)
        b = L.Conv2D(8, 3, padding="same", name=f"res{i}_b")(b)
        h = L.Add(name=f"res{i}_add")([h, b])
    h = L.GlobalAveragePooling2D(name="gap")(h)
    return keras.Model(x, L.Dense(4, name="logits")(h), name="residual")


def depthwise():
    """MobileNet-style: conv, BN, depthwise, BN, pointwise conv; Flatten + Dense head."""
    x = keras.Input((8, 8, 1))
    h = L.Conv2D(8, 3, padding="same", name="conv1")(x)
    h = L.BatchNormalization(name="bn1")(h)
    h = L.ReLU(max_value=6.0, name="relu1")(h)
    h = L.DepthwiseConv2D(3, padding="same", name="dw")(h)
    h = L.BatchNormalization(name="bn_dw")(h)
    h = L.ReLU(name="relu_dw")(h)
    h = L.Conv2D(12, 1, name="pw")(h)
    h = L.BatchNormalization(name="bn_pw")(h)
    h = L.ReLU(name="relu_pw")(h)
    h = L.MaxPooling2D(name="pool")(h)
    h = L.Flatten(name="flatten")(h)
    h = L.Dropout(0.1, name="drop")(h)
    return keras.Model(x, L.Dense(3, name="logits")(h), name="depthwise")


def concatenate():
    """Two branches concatenated, then BN and a conv reading both at their offsets."""
    x = keras.Input((8, 8, 2))
    a = L.Conv2D(6, 3, padding="same", activation="relu", name="branch_a")(x)
    b = L.Conv2D(10, 1, padding="same", activation="relu", name="branch_b")(x)
    h = L.Concatenate(name="cat")([a, b])
    h = L.BatchNormalization(name="cat_bn")(h)
    h = L.Conv2D(8, 3, padding="same", activation="relu", name="after")(h)
    h = L.GlobalMaxPooling2D(name="gmp")(h)
    return keras.Model(x, L.Dense(3, name="logits")(h), name="concatenate")


def squeeze_excite():
    """A conv whose output is rescaled by a squeeze-excite branch (Multiply)."""
    x = keras.Input((8, 8, 3))
    h = L.Conv2D(16, 3, padding="same", activation="swish", name="main")(x)
    s = L.GlobalAveragePooling2D(keepdims=True, name="se_squeeze")(h)
    s = L.Conv2D(4, 1, activation="relu", name="se_reduce")(s)
    s = L.Conv2D(16, 1, activation="sigmoid", name="se_expand")(s)
    h = L.Multiply(name="se_scale")([h, s])
    h = L.Conv2D(8, 1, name="project")(h)
    h = L.BatchNormalization(name="project_bn")(h)
    h = L.GlobalAveragePooling2D(name="gap")(h)
    return keras.Model(x, L.Dense(3, name="logits")(h), name="squeeze_excite")


def nested():
    """A Sequential block nested in a Functional model, between two convs."""
    block = keras.Sequential(
        [keras.Input((8, 8, 8)), L.Conv2D(8, 3, padding="same", name="inner_conv"), L.ReLU(name="inner_relu")],
        name="block",
    )
    x = keras.Input((8, 8, 1))
    h = L.Conv2D(8, 3, padding="same", activation="relu", name="outer_conv")(x)
    h = block(h)
    h = L.Flatten(name="flatten")(h)
    return keras.Model(x, L.Dense(3, name="logits")(h), name="nested")


def sequential():
    return keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            L.Conv2D(8, 3, activation="relu", name="conv"),
            L.BatchNormalization(name="bn"),
            L.MaxPooling2D(name="pool"),
            L.Flatten(name="flatten"),
            L.Dense(16, activation="relu", name="fc"),
            L.Dense(3, name="logits"),
        ],
        name="sequential",
    )


ALL = {
    "residual": residual,
    "depthwise": depthwise,
    "concatenate": concatenate,
    "squeeze_excite": squeeze_excite,
    "nested": nested,
    "sequential": sequential,
}
