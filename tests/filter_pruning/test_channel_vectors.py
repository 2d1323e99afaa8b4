"""Filter pruning masks a layer's per-channel vectors instead of its outputs where that zeroes a pruned channel exactly."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import collabopt.keras as co
from collabopt.layers import wrapper_chain
from collabopt.transform import iter_layers

L = keras.layers

#: name -> (layer under test, masked by its vectors: True, or by a multiply of its outputs: False)
CASES = {
    "conv_bias_relu": (lambda: L.Conv2D(8, 3, padding="same", activation="relu", name="probe"), True),
    "conv_swish": (lambda: L.Conv2D(8, 3, padding="same", activation="swish", use_bias=False, name="probe"), True),
    "conv_sigmoid": (lambda: L.Conv2D(8, 3, padding="same", activation="sigmoid", name="probe"), False),
    "depthwise_bias": (lambda: L.DepthwiseConv2D(3, padding="same", name="probe"), True),
    "separable_bias": (lambda: L.SeparableConv2D(8, 3, padding="same", name="probe"), True),
    "conv_transpose_bias": (lambda: L.Conv2DTranspose(8, 3, padding="same", name="probe"), True),
}


class _ConvPlusOne(L.Conv2D):
    """A Conv2D subclass whose call adds something: not known to keep a pruned channel zero."""

    def call(self, inputs):
        return super().call(inputs) + 1.0


def _model(make, seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((8, 8, 4))
    x = L.Conv2D(4, 1, name="stem")(inputs)
    x = make()(x)
    x = L.BatchNormalization(name="bn")(x)
    x = L.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, L.Dense(3, name="head")(x))
    for layer in model.layers:  # nonzero vectors and statistics, as after training
        for seed, name in enumerate(("bias", "beta", "moving_mean", "moving_variance")):
            variable = getattr(layer, name, None)
            if variable is not None:
                variable.assign(np.random.default_rng(seed).uniform(0.5, 2.0, variable.shape).astype("float32"))
    return model


def _wrappers(model):
    return {w.base_layer.name: w for layer in iter_layers(model) for w in wrapper_chain(layer) if isinstance(w, co.PruneFilters)}


def _probe_outputs(model, names, x, training, traced=False):
    probe = keras.Model(model.inputs, [model.get_layer(f"prune_filters_{n}").output for n in names])
    call = tf.function(lambda t: probe(t, training=training)) if traced else (lambda t: probe(t, training=training))
    outputs = call(x)
    return [o.numpy() for o in (outputs if isinstance(outputs, (list, tuple)) else [outputs])]


@pytest.mark.parametrize("case", sorted(CASES))
def test_pruned_channels_output_exact_zeros(case):
    make, by_vectors = CASES[case]
    pruned = co.prune_filters(_model(make), pruning_ratio=0.5)
    wrappers = _wrappers(pruned)
    assert (wrappers["probe"]._channel_vectors() is not None) == by_vectors
    assert wrappers["bn"]._channel_vectors() is not None  # gamma and beta
    x = np.random.default_rng(0).standard_normal((2, 8, 8, 4)).astype("float32")
    for training in (True, False):
        for traced in (False, True):
            for name, out in zip(("probe", "bn"), _probe_outputs(pruned, ("probe", "bn"), x, training, traced)):
                mask = wrappers[name].channel_mask.numpy()
                assert 0 < mask.sum() < len(mask)
                assert np.all(out[..., mask == 0] == 0), (case, name, training, traced)
                assert np.any(out[..., mask == 1] != 0)


def test_the_output_multiply_is_left_out_only_where_the_vectors_zero_the_channel():
    pruned = co.prune_filters(_model(CASES["conv_bias_relu"][0]), pruning_ratio=0.5)
    outputs = tf.ones((1, 8, 8, 8))
    assert _wrappers(pruned)["probe"].transform_outputs(outputs, True) is outputs
    sigmoid = co.prune_filters(_model(CASES["conv_sigmoid"][0]), pruning_ratio=0.5)
    masked = _wrappers(sigmoid)["probe"].transform_outputs(outputs, True)
    assert masked is not outputs and float(tf.reduce_sum(masked)) < float(tf.reduce_sum(outputs))


def test_a_subclass_that_changes_the_call_keeps_the_output_mask():
    pruned = co.prune_filters(_model(lambda: _ConvPlusOne(8, 3, padding="same", name="probe")), pruning_ratio=0.5)
    wrapper = _wrappers(pruned)["probe"]
    assert wrapper._channel_vectors() is None
    x = np.random.default_rng(0).standard_normal((2, 8, 8, 4)).astype("float32")
    (out,) = _probe_outputs(pruned, ("probe",), x, training=True)
    assert np.all(out[..., wrapper.channel_mask.numpy() == 0] == 0)


def test_qat_folding_a_batchnorm_adds_no_correction_on_pruned_channels():
    pruned = co.prune_filters(_model(lambda: L.Conv2D(8, 3, padding="same", name="probe")), pruning_ratio=0.5)
    mask = _wrappers(pruned)["probe"].channel_mask.numpy()
    qat = co.quantize_model(pruned)
    assert not any(getattr(layer, "name", "") == "prune_filters_bn" for layer in iter_layers(qat))  # folded into the conv
    x = np.random.default_rng(0).standard_normal((2, 8, 8, 4)).astype("float32")
    probe_layer = next(layer for layer in iter_layers(qat) if wrapper_chain(layer) and wrapper_chain(layer)[0].base_layer.name == "probe")
    probe = keras.Model(qat.inputs, probe_layer.output)
    for training in (True, False):
        out = probe(x, training=training).numpy()
        assert np.all(out[..., mask == 0] == 0), training
        assert np.any(out[..., mask == 1] != 0)
