"""One record per layer class: a layer joins every technique, the MAC count and the bit-width rule in one call."""

import numpy as np
import pytest

import keras

import collabopt.keras as co
import collabopt.tflite as ct
from collabopt.errors import InvalidArgumentError
from collabopt.filter_pruning import count_macs
from collabopt.layers import (
    LayerRoles,
    PRODUCES,
    WeightSpec,
    layer_roles,
    layer_support,
    layer_support_registered,
    weight_specs,
)
from tests.conftest import train_steps


class Mix(keras.layers.Layer):
    """A dense-like layer collabopt knows nothing of until its record is registered."""

    def __init__(self, units, **kwargs):
        super().__init__(**kwargs)
        self.units = units

    def build(self, shape):
        self.w = self.add_weight(shape=(shape[-1], self.units), name="w")

    def call(self, x):
        return keras.ops.matmul(x, self.w)

    def get_config(self):
        return {**super().get_config(), "units": self.units}


def _model():
    inputs = keras.Input((6,))
    return keras.Model(inputs, keras.layers.Dense(3, name="head")(Mix(8, name="mix")(inputs)))


def test_one_record_adds_a_layer_to_pruning_macs_and_the_bit_width_rule():
    model = _model()
    assert weight_specs(model.get_layer("mix")) is None  # unsupported without its record
    record = dict(
        weights=[WeightSpec("w", (-1,), 0, per_channel_quantization=False)],
        roles=LayerRoles(output_weight="w", channels=PRODUCES),
        macs=lambda layer, input_shape, output_shape: input_shape[-1] * layer.units,
        weight_bits=(8, 8),
    )
    with layer_support_registered(Mix, **record):
        assert [s.name for s in weight_specs(model.get_layer("mix"))] == ["w"]
        assert layer_roles(Mix).output_weight == "w"
        assert count_macs(model) == 6 * 8 + 8 * 3
        x = np.random.default_rng(0).random((8, 6)).astype("float32")
        pruned = co.prune_low_magnitude(model, co.ConstantSparsity(0.5, 0, frequency=1))
        train_steps(pruned, x, np.arange(8) % 3, 1)
        kernel = keras.ops.convert_to_numpy(co.strip_pruning(pruned).get_layer("mix").w)
        assert np.mean(kernel == 0) == pytest.approx(0.5)
        qat = co.quantize_model(model, co.DefaultNBitQuantizeScheme(num_bits_weight=4))
        wrapper = qat.get_layer("quant_mix")
        assert wrapper.weight_quantizers["w"].num_bits == 8  # its record keeps 8 bits
        assert qat.get_layer("quant_head").weight_quantizers["kernel"].num_bits == 4
        train_steps(qat, x, np.arange(8) % 3, 1)
        assert ct.convert(qat, "int8").float_islands() == []
    assert weight_specs(model.get_layer("mix")) is None  # the record is gone again
    assert layer_support(Mix).macs is None


def test_built_in_records_hold_every_fact_of_a_layer():
    conv = layer_support(keras.layers.Conv1D)
    assert [s.name for s in conv.weights] == ["kernel"] and conv.roles.channels == PRODUCES
    assert conv.macs is not None and conv.export.expanded == ("kernel",) and conv.export.always
    assert layer_support(keras.layers.Embedding).weight_bits == (8, 8)
    assert layer_support(keras.layers.LayerNormalization).export.post_training
    assert layer_support(keras.layers.BatchNormalization).roles.folds_into_producer

    class MyConv(keras.layers.Conv1D):  # a subclass: weights and roles, not the export form (it may change call)
        pass

    sub = layer_support(MyConv)
    assert sub.weights == conv.weights and sub.roles == conv.roles and sub.export is None


def test_an_unknown_fact_is_refused_by_name():
    with pytest.raises(InvalidArgumentError, match="unknown facts \\['flops'\\]"):
        with layer_support_registered(Mix, flops=3):
            pass
