"""PreserveWrapper warns only about the weights it really derives from."""

import warnings

import keras
import numpy as np
import pytest

import collabopt.keras as co
from collabopt.layers import base_layer, wrapper_chain
from collabopt.preserve import PreserveWrapper

#: Runs unchanged on JAX and PyTorch too (CI: KERAS_BACKEND=jax / torch; see README).
pytestmark = pytest.mark.every_backend

FALSE_ALARMS = ("has no exact zeros", "does not look clustered", "Gradients do not exist")


def _model():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(4, 3, name="conv")(inputs)
    x = keras.layers.Flatten()(x)
    return keras.Model(inputs, keras.layers.Dense(10, name="fc")(x))


def _fit(model, steps=4):
    rng = np.random.default_rng(0)
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(rng.random((8 * steps, 8, 8, 1)).astype("float32"), rng.integers(0, 10, 8 * steps), batch_size=8, epochs=1, verbose=0)
    return model


def _messages(record):
    return [str(w.message) for w in record]


def _reload(model, path):
    model.save(path)
    return keras.saving.load_model(path)


@pytest.mark.slow
def test_prune_strip_cluster_strip_quantize_chain_raises_no_false_warnings(tmp_path):
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        pruned = _reload(_fit(co.prune_low_magnitude(_model(), co.ConstantSparsity(0.5, 0, frequency=1))), tmp_path / "p.keras")
        stripped = co.strip_pruning(pruned)
        clustered = _reload(_fit(co.cluster_weights(stripped, number_of_clusters=8, preserve_sparsity=True)), tmp_path / "c.keras")
        plain = co.strip_clustering(clustered)
        qat = _reload(_fit(co.quantize_model(plain)), tmp_path / "q.keras")
    alarms = [m for m in _messages(record) if any(a in m for a in FALSE_ALARMS)]
    assert alarms == []
    # the constraints really held through the chain
    kernel = co.strip_clustering(clustered).get_layer("fc").kernel.numpy()
    assert np.mean(kernel == 0) == pytest.approx(0.5, abs=0.01) and len(np.unique(kernel)) <= 8
    assert qat is not None


def test_a_loaded_or_copied_preserve_wrapper_does_not_derive_again(tmp_path):
    model = _model()
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        clustered = co.cluster_weights(model, number_of_clusters=4, preserve_sparsity=True)
    assert any("has no exact zeros" in m for m in _messages(record))  # a true warning: nothing was pruned
    wrapper = next(w for layer in clustered.layers for w in wrapper_chain(layer) if isinstance(w, PreserveWrapper))
    assert wrapper.get_config()["derived"] is True
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        again = _reload(clustered, tmp_path / "c.keras")
        co.strip_clustering(again)
    assert not any("exact zeros" in m for m in _messages(record))
    for a, b in zip(clustered.weights, again.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_clusters_constraint_freezes_the_weight_it_replaces():
    clustered = _fit(co.cluster_weights(_model(), number_of_clusters=4))
    plain = co.strip_clustering(clustered)
    qat = co.quantize_model(plain)
    trainable = {id(v) for v in qat.trainable_weights}
    for layer in qat.layers:
        chain = wrapper_chain(layer)
        preserve = [w for w in chain if isinstance(w, PreserveWrapper)]
        if not preserve:
            continue
        assert id(base_layer(layer).kernel) not in trainable  # replaced by centroids[indices]: no gradient
        assert any("centroids" in v.name for v in preserve[0].trainable_weights)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        _fit(qat)
    assert not any("Gradients do not exist" in m for m in _messages(record))


class _DenseStaysDense:
    """A pruning policy leaving the Dense layer dense (as TFMOT leaves depthwise kernels)."""

    def allow_pruning(self, layer):
        return not isinstance(layer, keras.layers.Dense)


@pytest.mark.parametrize("stripped", [False, True], ids=["wrapped", "stripped"])
def test_a_layer_left_dense_beside_pruned_ones_is_clustered_without_a_zero_or_a_warning(stripped):
    pruned = _fit(co.prune_low_magnitude(_model(), co.ConstantSparsity(0.5, 0, frequency=1), pruning_policy=_DenseStaysDense()))
    source = co.strip_pruning(pruned) if stripped else pruned
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        clustered = co.cluster_weights(source, number_of_clusters=4, preserve_sparsity=True)
    assert not [m for m in _messages(record) if "no exact zeros" in m]
    fc = clustered.get_layer("cluster_fc")
    assert not fc.preserve_sparsity and not any(isinstance(w, PreserveWrapper) for w in wrapper_chain(fc))
    assert np.count_nonzero(keras.ops.convert_to_numpy(fc.effective_weights()["kernel"]) == 0) == 0
    conv = clustered.get_layer("cluster_conv")  # the pruned layer keeps its zeros under a pinned zero centroid
    assert conv.preserve_sparsity
    kernel = keras.ops.convert_to_numpy(conv.effective_weights()["kernel"])
    assert np.mean(kernel == 0) == pytest.approx(0.5, abs=0.01) and len(np.unique(kernel)) <= 4
