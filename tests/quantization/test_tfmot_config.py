"""QuantizeConfig subclasses written for TFMOT work after the rename (its custom-layer guide, NoOpQuantizeConfig)."""

import keras
import numpy as np
import pytest

import collabopt.keras as co
import collabopt.tflite as ct
from collabopt.errors import InvalidArgumentError, InvalidTypeError
from tests.conftest import rand

L = keras.layers


class DenseKernelPerTensorConfig(co.QuantizeConfig):
    """TFMOT's guide example: 8-bit per-tensor kernel, quantized activation, no output quantizer."""

    def get_weights_and_quantizers(self, layer):
        return [(layer.kernel, co.LastValueQuantizer(num_bits=8, symmetric=True, narrow_range=False, per_axis=False))]

    def get_activations_and_quantizers(self, layer):
        return [(layer.activation, co.MovingAverageQuantizer(num_bits=8, symmetric=False, narrow_range=False, per_axis=False))]

    def set_quantize_weights(self, layer, quantize_weights):
        layer.kernel = quantize_weights[0]

    def set_quantize_activations(self, layer, quantize_activations):
        layer.activation = quantize_activations[0]

    def get_output_quantizers(self, layer):
        return []

    def get_config(self):
        return {}


class NoOpQuantizeConfig(co.QuantizeConfig):
    """TFMOT users' way to leave a layer alone inside quantize_apply."""

    def get_weights_and_quantizers(self, layer):
        return []

    def get_activations_and_quantizers(self, layer):
        return []

    def set_quantize_weights(self, layer, quantize_weights):
        pass

    def set_quantize_activations(self, layer, quantize_activations):
        pass

    def get_output_quantizers(self, layer):
        return []

    def get_config(self):
        return {}


CUSTOM = {"DenseKernelPerTensorConfig": DenseKernelPerTensorConfig, "NoOpQuantizeConfig": NoOpQuantizeConfig}


def test_tfmot_style_configs_quantize_train_save_and_export(tmp_path):
    annotate = co.quantize_annotate_layer
    # As in TFMOT's guide: annotating needs no scope, quantize_apply runs in one.
    model = co.quantize_annotate_model(
        keras.Sequential(
            [
                keras.Input((20,)),
                annotate(L.Dense(20, activation="relu", name="fc"), DenseKernelPerTensorConfig()),
                annotate(L.BatchNormalization(name="bn"), NoOpQuantizeConfig()),
                L.Dense(4, name="head"),
            ]
        )
    )
    with co.quantize_scope(CUSTOM):
        qat = co.quantize_apply(model)
    fc, bn = qat.get_layer("quant_fc"), qat.get_layer("quant_bn")
    assert list(fc.weight_quantizers) == ["kernel"] and not fc.weight_quantizers["kernel"].per_axis
    assert len(fc.output_quantizers) == 1  # the activation quantizer: after the ReLU, the layer's output
    assert not bn.weight_quantizers and not bn.output_quantizers
    x = rand(32, 20)
    qat.compile(optimizer="adam", loss="mse")
    qat.fit(x, rand(32, 4), epochs=2, verbose=0)
    kernel = fc.final_weights()["kernel"]
    assert len(np.unique(kernel)) <= 255  # one 8-bit grid for the whole kernel

    path = tmp_path / "qat.keras"
    qat.save(path)
    with co.quantize_scope(CUSTOM):
        loaded = keras.models.load_model(path)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), qat.predict(x, verbose=0))

    tflite = ct.convert(qat, "int8", representative_data=x)  # raises on any float op
    assert tflite.float_islands() == [] and "FULLY_CONNECTED" in tflite.ops()


def test_a_tfmot_config_naming_a_weight_the_layer_does_not_optimize_is_refused():
    class BiasConfig(NoOpQuantizeConfig):
        def get_weights_and_quantizers(self, layer):
            return [(layer.bias, co.LastValueQuantizer(8, symmetric=True, narrow_range=True, per_axis=False))]

    i = keras.Input((4,))
    model = keras.Model(i, co.quantize_annotate_layer(L.Dense(3, name="fc"), BiasConfig())(i))
    with pytest.raises(InvalidArgumentError, match=r"layer 'fc' \(Dense\).*BiasConfig.*not one of the layer's optimizable weights"):
        co.quantize_apply(model)


def test_a_tfmot_config_returning_a_foreign_quantizer_is_refused():
    class Foreign(NoOpQuantizeConfig):
        def get_output_quantizers(self, layer):
            return ["8bit"]

    i = keras.Input((4,))
    model = keras.Model(i, co.quantize_annotate_layer(L.Dense(3, name="fc"), Foreign())(i))
    with pytest.raises(InvalidArgumentError, match=r"layer 'fc'.*Foreign.get_output_quantizers returned '8bit'"):
        co.quantize_apply(model)


def test_scope_arguments_must_be_dicts():
    with pytest.raises(InvalidTypeError, match="scope argument 0: expected a dict"):
        with co.quantize_scope(DenseKernelPerTensorConfig):
            pass


def test_a_tfmot_config_returning_a_quantizer_where_pairs_are_expected_is_refused():
    class Unpaired(NoOpQuantizeConfig):
        def get_weights_and_quantizers(self, layer):
            return [co.LastValueQuantizer(8, symmetric=True, narrow_range=True, per_axis=False)]

    i = keras.Input((4,))
    model = keras.Model(i, co.quantize_annotate_layer(L.Dense(3, name="fc"), Unpaired())(i))
    with pytest.raises(InvalidArgumentError, match=r"layer 'fc'.*Unpaired.get_weights_and_quantizers.*expected \(variable, Quantizer\) pairs"):
        co.quantize_apply(model)
