"""uncounted_layers: which layers count_macs cannot count (reported as n/a, never silently 0)."""

import keras

import collabopt.keras as co
from collabopt.filter_pruning.macs import uncounted_layers


def test_layers_count_macs_cannot_count_are_named():
    tokens = keras.Input((6,), dtype="int32")
    x = keras.layers.Embedding(20, 8, name="embedding")(tokens)  # a lookup: no MACs, nothing missing
    x = keras.layers.MultiHeadAttention(2, 4, name="attention")(x, x)
    x = keras.layers.LSTM(4, name="lstm", return_sequences=True)(x)
    y = keras.layers.Dense(3, name="logits")(keras.layers.Flatten()(x))
    model = keras.Model(tokens, y)
    assert uncounted_layers(model) == ["attention", "lstm"]
    assert co.count_macs(model) == 24 * 3  # only what it can count


def test_a_conv_on_inputs_of_any_size_is_uncounted_and_fixed_sizes_are_exact():
    def model(size):
        return keras.Sequential([keras.Input((size, size, 3)), keras.layers.Conv2D(4, 3, name="conv"),
                                 keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(2, name="logits")])

    assert uncounted_layers(model(None)) == ["conv"]
    fixed = model(8)
    assert uncounted_layers(fixed) == [] and co.count_macs(fixed) == 6 * 6 * 9 * 3 * 4 + 4 * 2
    assert uncounted_layers(co.quantize_model(fixed)) == [] and co.count_macs(co.quantize_model(fixed)) == co.count_macs(fixed)
