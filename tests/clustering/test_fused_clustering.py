"""ClusterWeights' fused training step on TensorFlow: the same indices, values and gradients as the op-by-op pipeline."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import collabopt.clustering.fused as fused_clustering
import collabopt.keras as co
import collabopt.fused as fusing

pytestmark = pytest.mark.tensorflow_only


def _model(kind, sparse):
    keras.utils.set_random_seed(0)
    layer = keras.layers.DepthwiseConv2D(3, depth_multiplier=2) if kind == "depthwise" else keras.layers.Conv2D(64, 3)
    model = keras.Sequential([keras.Input((12, 12, 32)), layer])
    if sparse:
        model = co.prune_low_magnitude(model, co.ConstantSparsity(0.5, 0, frequency=1))
        x = np.random.default_rng(0).random((2, 12, 12, 32)).astype("float32")
        model.compile(loss="mse")
        model.fit(x, model.predict(x, verbose=0), verbose=0, callbacks=[co.UpdatePruningStep()])
    return model


def _step(wrapper, fused, monkeypatch):
    _set_fused(monkeypatch, fused)
    x = tf.constant(np.random.default_rng(1).random((2, 12, 12, 32)).astype("float32"))
    with tf.GradientTape() as tape:
        y = wrapper(x, training=True)
        loss = tf.reduce_sum(y * tf.sin(y))
    grads = tape.gradient(loss, wrapper.trainable_variables)
    return y.numpy(), [g.numpy() for g in grads], wrapper.indices["kernel"].numpy().copy()


@pytest.mark.parametrize("kind", ["conv", "depthwise"])
@pytest.mark.parametrize("per_channel", [False, True], ids=["per_tensor", "per_channel"])
@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "preserve_sparsity"])
@pytest.mark.parametrize("large", [False, True], ids=["counted", "select_chain"])
def test_fused_step_matches_the_op_by_op_step(kind, per_channel, sparse, large, monkeypatch):
    # (large: the weights take the form of large ones, a chain of selects in a kernel of their own)
    monkeypatch.setattr(fused_clustering, "PADDED_BELOW", 1 if large else fused_clustering.PADDED_BELOW)
    clustered = co.cluster_weights(_model(kind, sparse), number_of_clusters=8, cluster_per_channel=per_channel, preserve_sparsity=sparse)
    wrapper = clustered.layers[0]
    y_fused, grads_fused, indices_fused = _step(wrapper, True, monkeypatch)
    y_ref, grads_ref, indices_ref = _step(wrapper, False, monkeypatch)
    np.testing.assert_array_equal(indices_fused, indices_ref)
    np.testing.assert_allclose(y_fused, y_ref, rtol=0, atol=1e-5)
    for fused, ref in zip(grads_fused, grads_ref):  # the kernel's (straight through) and the centroids' (summed)
        np.testing.assert_allclose(fused, ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())
    if sparse:
        assert np.all(indices_fused[wrapper.layer.masks["kernel"].numpy() == 0] == 0)


def test_a_large_layer_trains_without_search_and_segment_sum():
    clustered = co.cluster_weights(
        keras.Sequential([keras.Input((8, 8, 64)), keras.layers.Conv2D(256, 3)]), number_of_clusters=16
    )
    x = tf.TensorSpec((2, 8, 8, 64), tf.float32)
    function = tf.function(lambda a: tf.gradients(tf.reduce_sum(clustered(a, training=True)), clustered.trainable_variables))
    types = {op.type for op in function.get_concrete_function(x).graph.get_operations()}
    assert not types & {"LowerBound", "UnsortedSegmentSum", "GatherV2"}, types & {"LowerBound", "UnsortedSegmentSum", "GatherV2"}
    assert "DenseBincount" in types or "Bincount" in types


def test_small_per_tensor_weights_of_one_size_class_share_one_kernel():
    fused_clustering._kernel.cache_clear()
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((20,)), keras.layers.Dense(30), keras.layers.Dense(25), keras.layers.Dense(10)])
    clustered = co.cluster_weights(model, number_of_clusters=4)  # kernels of 600, 750 and 250 elements: all padded to 1024
    x = tf.constant(np.random.default_rng(0).random((4, 20)).astype("float32"))
    grads = tf.function(lambda a: tf.gradients(tf.reduce_sum(clustered(a, training=True)), clustered.trainable_variables))(x)
    assert all(g is not None for g in grads)
    assert fused_clustering._kernel(None, 1, False, False).tracing_count() == 1
    for layer in clustered.layers:  # the padding is not in the weights or their indices
        assert layer.indices["kernel"].shape == layer.layer.kernel.shape


def _set_fused(monkeypatch, fused):
    """Every tensor takes the fused path (eager and traced), or none does."""
    for threshold in ("FUSED_MIN_ELEMENTS", "TRACED_WEIGHT_MIN_ELEMENTS"):
        monkeypatch.setattr(fusing, threshold, 1 if fused else 1 << 40)


def test_a_traced_step_fuses_every_clustered_weight_and_an_eager_one_only_large_ones():
    small = tf.zeros((3, 3, 4, 8))
    assert not fusing.fused_on_tensorflow(small, traced_min_elements=fusing.TRACED_WEIGHT_MIN_ELEMENTS)
    traced = tf.function(lambda a: fusing.fused_on_tensorflow(a, traced_min_elements=fusing.TRACED_WEIGHT_MIN_ELEMENTS))
    assert traced(small)
    clustered = co.cluster_weights(keras.Sequential([keras.Input((6, 6, 3)), keras.layers.Conv2D(4, 3)]), number_of_clusters=4)
    x = tf.TensorSpec((2, 6, 6, 3), tf.float32)
    function = tf.function(lambda a: tf.gradients(tf.reduce_sum(clustered(a, training=True)), clustered.trainable_variables))
    types = {op.type for op in function.get_concrete_function(x).graph.get_operations()}
    assert not types & {"LowerBound", "UnsortedSegmentSum", "GatherV2"}, types & {"LowerBound", "UnsortedSegmentSum", "GatherV2"}
