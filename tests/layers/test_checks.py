import keras
import numpy as np
import pytest

import collabopt.keras as co
import collabopt.tflite as ct
from collabopt.errors import InvalidWeightError
from collabopt.layers.checks import check_finite, check_finite_weights


def _model_with(bad_value, where=(1, 2)):
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((8, 8, 1)), keras.layers.Conv2D(4, 3, name="conv"), keras.layers.Flatten(), keras.layers.Dense(3, name="fc")]
    )
    kernel = model.get_layer("fc").kernel.numpy()
    kernel[where] = bad_value
    model.get_layer("fc").kernel.assign(kernel)
    return model


def test_check_finite_names_layer_weight_and_index():
    check_finite("dense", "kernel", np.ones(3, "float32"))
    check_finite("ids", "table", np.arange(3))  # integers are always finite
    with pytest.raises(InvalidWeightError, match=r"layer 'dense', weight 'kernel': 2 of 4 values are NaN or infinite \(first at index \(0, 1\)\)"):
        check_finite("dense", "kernel", np.array([[1.0, np.inf], [np.nan, 0.0]]))


@pytest.mark.parametrize("mode", ct.MODES)
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_convert_refuses_non_finite_weights_in_every_mode(mode, bad):
    model = _model_with(bad)
    x = np.random.default_rng(0).random((8, 8, 8, 1)).astype("float32")
    with pytest.raises(InvalidWeightError, match=r"layer 'fc' \(Dense\), weight 'kernel': 1 of \d+ values are NaN or infinite"):
        ct.convert(model, mode, x)


def test_convert_refuses_nan_inside_wrappers():
    model = _model_with(np.nan)
    pruned = co.prune_low_magnitude(model, co.ConstantSparsity(0.5, 0, frequency=1))
    with pytest.raises(InvalidWeightError, match="layer 'fc' \\(Dense\\), weight 'kernel'"):
        ct.convert(pruned, "float32")


def test_clustering_refuses_non_finite_weights_and_leaves_the_model_alone():
    model = _model_with(np.nan)
    before = [w.numpy().copy() for w in model.weights]
    with pytest.raises(InvalidWeightError, match=r"layer 'fc' \(Dense\), weight 'kernel': 1 of 432 values are NaN"):
        co.cluster_weights(model, number_of_clusters=4)
    for a, b in zip(before, model.weights):
        np.testing.assert_array_equal(a, b.numpy())


def test_check_finite_weights_walks_nested_models_and_wrappers():
    inner = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="deep")], name="block")
    model = keras.Sequential([keras.Input((4,)), inner, keras.layers.Dense(2, name="head")])
    check_finite_weights(model)
    inner.get_layer("deep").bias.assign([0.0, np.inf, 0.0])
    with pytest.raises(InvalidWeightError, match="layer 'deep' \\(Dense\\), weight 'bias'"):
        check_finite_weights(co.prune_low_magnitude(model))
