"""KerasHub backbones, built offline from constructor arguments (random weights, no preset), end to end.

Every backbone is a Functional model of KerasHub's composite layers
(``TransformerEncoder``, ``InvertedResidualBlock``, ``ViTPatchingAndEmbedding``,
...). Each one, under a small classifier head, converts to int8
post-training with no float op, then goes through prune 50% ->
sparsity-preserving clustering -> QAT (a few eager steps each), a ``.keras``
round trip, and int8 with calibration (the tensors inside the composite
layers are calibrated); the file has no float op, every recorded constraint
holds in it, and the chain reached at least 95% of the kernel parameters.
"""

import numpy as np
import pytest

import keras

import collabopt.keras as co
import collabopt.tflite as ct
from collabopt import reference_models as zoo
from tests.conftest import pcqat_trained, train_steps

pytest.importorskip("keras_hub")
pytestmark = pytest.mark.slow


@pytest.mark.parametrize("name", sorted(zoo.KERAS_HUB_BACKBONES))
def test_backbone_through_the_chain_to_full_int8(name, tmp_path):
    model = zoo.keras_hub_classifier(name)
    x = zoo.keras_hub_data(model)
    y = np.arange(4) % 4
    ptq = ct.convert(model, "int8", representative_data=x)  # raises on any float op
    assert ptq.float_islands() == [] and "NEG" not in ptq.ops()

    qat = pcqat_trained(model, x, y)
    path = str(tmp_path / f"{name}.keras")
    qat.save(path)
    loaded = keras.models.load_model(path)
    for a, b in zip(qat.weights, loaded.weights):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))

    tflite = ct.convert(loaded, "int8", representative_data=x)
    assert tflite.float_islands() == []
    report = ct.verify(loaded, tflite)
    assert report.all_hold, str(report)
    assert report.reached_share(model) >= 0.95, (report.reached_share(model), str(report))


def test_a_backbone_with_dict_inputs_and_dict_outputs_quantizes_and_exports():
    backbone = zoo.keras_hub_backbone("BertBackbone")
    inputs = {key: keras.Input((16,), dtype="int32", name=key) for key in backbone.input}
    model = keras.Model(inputs, backbone(inputs))  # fixed sequence length; outputs a dict
    x = zoo.keras_hub_data(model)
    pruned = co.prune_low_magnitude(model, co.ConstantSparsity(0.5, 0, frequency=1))
    qat = co.quantize_model(pruned)
    qat(x, training=True)
    tflite = ct.convert(qat, "int8", representative_data=x)
    assert tflite.float_islands() == []
    assert len(tflite.output_details) == 2  # sequence_output and pooled_output
    assert ct.verify(qat, tflite).all_hold


def test_fit_trains_a_pruned_backbone():
    model = zoo.keras_hub_classifier("DistilBertBackbone")
    x = zoo.keras_hub_data(model, batch=8)
    y = np.arange(8) % 4
    pruned = co.prune_low_magnitude(model, co.ConstantSparsity(0.5, 0, frequency=1))
    pruned.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    pruned.fit(x, y, epochs=1, batch_size=4, verbose=0)
    train_steps(pruned, x, y, 1)
    stripped = co.strip_pruning(pruned)
    encoder = [l for l in stripped.layers if isinstance(l, keras.Model)][0].get_layer("transformer_layer_0")
    kernel = keras.ops.convert_to_numpy(encoder._feedforward_intermediate_dense.kernel)
    assert np.mean(kernel == 0) == pytest.approx(0.5, abs=0.01)
