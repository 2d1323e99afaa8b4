import keras
import numpy as np
import pytest

import collabopt.keras as co
import collabopt.tflite as ct
from collabopt.clustering import init_centroids, nearest_centroid
from collabopt.preserve import constraints_on
from tests.conftest import MatMul, rand, small_cnn

#: Runs unchanged on JAX and PyTorch too (CI: KERAS_BACKEND=jax / torch; see README).
pytestmark = pytest.mark.every_backend

L = keras.layers


def _fit(model, x, y, epochs=1, lr=1e-3):
    model.compile(optimizer=keras.optimizers.Adam(lr), loss="mse")
    model.fit(x, y, batch_size=8, epochs=epochs, verbose=0)


def _kernels(model):
    return {l.name: l.kernel.numpy() for l in model.layers if hasattr(l, "kernel")}


def _per_channel_unique(kernel, axis=-1):
    rows = np.moveaxis(kernel, axis, 0).reshape(kernel.shape[axis], -1)
    return max(len(np.unique(r)) for r in rows)


@pytest.mark.parametrize("init", ["LINEAR", "RANDOM", "DENSITY_BASED", "KMEANS_PLUS_PLUS"])
def test_unique_value_bound_per_tensor_after_training_and_strip(init):
    model = small_cnn()
    clustered = co.cluster_weights(model, number_of_clusters=6, cluster_centroids_init=init)
    _fit(clustered, rand(32, 8, 8, 1), rand(32, 10), epochs=2)
    x = rand(4, 8, 8, 1)
    stripped = co.strip_clustering(clustered)
    assert [l.name for l in stripped.layers] == [l.name for l in model.layers]
    for name, kernel in _kernels(stripped).items():
        assert len(np.unique(kernel)) <= 6, name
    np.testing.assert_allclose(keras.ops.convert_to_numpy(stripped(x)), keras.ops.convert_to_numpy(clustered(x)), atol=1e-5)


@pytest.mark.parametrize(
    "factory,shape,axis",
    [
        (lambda: L.Conv1D(6, 3, name="k"), (10, 4), -1),
        (lambda: L.Conv2D(6, 3, name="k"), (6, 6, 4), -1),
        (lambda: L.Conv3D(4, 2, name="k"), (4, 4, 4, 3), -1),
        (lambda: L.Conv2DTranspose(5, 3, name="k"), (5, 5, 4), -2),
    ],
)
def test_per_channel_bound_for_convolutions(factory, shape, axis):
    inputs = keras.Input(shape)
    model = keras.Model(inputs, L.Dense(2, name="head")(L.Flatten()(factory()(inputs))))
    clustered = co.cluster_weights(model, number_of_clusters=4, cluster_per_channel=True)
    _fit(clustered, rand(16, *shape), rand(16, 2))
    kernel = co.strip_clustering(clustered).get_layer("k").kernel.numpy()
    assert _per_channel_unique(kernel, axis) <= 4
    assert len(np.unique(kernel)) > 4  # really per channel, not per tensor


def test_per_channel_depthwise_and_separable():
    inputs = keras.Input((6, 6, 3))
    x = L.DepthwiseConv2D(3, depth_multiplier=2, name="dw")(inputs)
    x = L.SeparableConv2D(4, 3, name="sep")(x)
    model = keras.Model(inputs, x)
    clustered = co.cluster_weights(model, number_of_clusters=3, cluster_per_channel=True)
    _fit(clustered, rand(16, 6, 6, 3), rand(16, 2, 2, 4))
    stripped = co.strip_clustering(clustered)
    dw = stripped.get_layer("dw").kernel.numpy()  # (3, 3, 3, 2): channel = in*2+m
    assert max(len(np.unique(dw[:, :, i, m])) for i in range(3) for m in range(2)) <= 3
    sep = stripped.get_layer("sep")
    assert _per_channel_unique(sep.pointwise_kernel.numpy()) <= 3


def test_sparsity_preserving_clustering_keeps_every_zero_over_epochs():
    model = small_cnn()
    pruned = co.prune_low_magnitude(model, co.ConstantSparsity(0.5, 0, frequency=1))
    x, y = rand(64, 8, 8, 1), rand(64, 10)
    _fit(pruned, x, y)
    zeros_before = {k: v == 0 for k, v in _kernels(co.strip_pruning(pruned)).items()}
    for chained in (True, False):
        source = pruned if chained else co.strip_pruning(pruned)
        clustered = co.cluster_weights(source, number_of_clusters=5, preserve_sparsity=True)
        _fit(clustered, x, y, epochs=4, lr=1e-2)
        for name, kernel in _kernels(co.strip_clustering(clustered)).items():
            np.testing.assert_array_equal(kernel == 0, zeros_before[name])
            assert len(np.unique(kernel)) <= 5
        for layer in clustered.layers:
            if isinstance(layer, co.ClusterWeights):
                assert layer.centroids["kernel"].numpy()[0] == 0.0  # the pinned zero never drifts


@pytest.mark.tensorflow_only('exports to TFLite')
def test_clusters_constraint_recorded_for_later_stages():
    clustered = co.cluster_weights(small_cnn(), number_of_clusters=4)
    wrapper = clustered.get_layer("cluster_dense")
    constraint = constraints_on(wrapper, "kernel")["clusters"]
    assert constraint.state["centroids"] is wrapper.centroids["kernel"]
    np.testing.assert_array_equal(constraint.project(wrapper.base_layer.kernel).numpy(), wrapper.final_weights()["kernel"])


def test_save_and_load(tmp_path):
    clustered = co.cluster_weights(small_cnn(), number_of_clusters=5, cluster_per_channel=True)
    _fit(clustered, rand(16, 8, 8, 1), rand(16, 10))
    clustered.save(tmp_path / "c.keras")
    loaded = keras.saving.load_model(tmp_path / "c.keras")
    x = rand(8, 8, 8, 1)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), clustered.predict(x, verbose=0))
    _fit(loaded, rand(16, 8, 8, 1), rand(16, 10))
    assert _per_channel_unique(co.strip_clustering(loaded).get_layer("conv").kernel.numpy()) <= 5


def test_mirrored_strategy_trains_and_keeps_the_bound(mirrored):
    with mirrored.scope():
        clustered = co.cluster_weights(small_cnn(), number_of_clusters=4)
        clustered.compile(optimizer="adam", loss="mse")
    clustered.fit(rand(32, 8, 8, 1), rand(32, 10), batch_size=8, epochs=1, verbose=0)
    for kernel in _kernels(co.strip_clustering(clustered)).values():
        assert len(np.unique(kernel)) <= 4


def test_input_model_is_not_mutated_and_quantizable_after():
    model = small_cnn()
    before = [w.numpy().copy() for w in model.weights]
    co.cluster_weights(model, number_of_clusters=4)
    for a, b in zip(before, model.weights):
        np.testing.assert_array_equal(a, b.numpy())
    assert all(type(l).__name__ != "ClusterWeights" for l in model.layers)


@pytest.mark.tensorflow_only('exports to TFLite')
def test_int8_flatbuffer_keeps_the_cluster_bound():
    clustered = co.cluster_weights(small_cnn(), number_of_clusters=8)
    x = rand(64, 8, 8, 1)
    _fit(clustered, x, rand(64, 10))
    tfl = ct.convert(clustered, "int8", x)
    kernels = [t for t in tfl.inspect().weights() if t.dtype == "int8" and len(t.shape) >= 2]
    assert len(kernels) == 2
    for t in kernels:
        assert t.max_unique_per_channel <= 8
        if not t.per_channel:
            assert t.unique_values <= 8


@pytest.mark.tensorflow_only('reads TensorFlow tensors with .numpy()')
def test_nearest_centroid_matches_brute_force():
    rng = np.random.default_rng(0)
    centroids = rng.normal(size=(3, 7)).astype("float32")
    values = rng.normal(size=(3, 500)).astype("float32")
    got = nearest_centroid(values, centroids).numpy()
    brute = np.abs(values[:, :, None] - centroids[:, None, :]).argmin(-1)
    np.testing.assert_array_equal(got, brute)


def test_kmeans_init_is_sorted_and_sized():
    c = init_centroids(np.random.default_rng(0).normal(size=5000), 16, co.CentroidInitialization.KMEANS_PLUS_PLUS)
    assert c.shape == (16,) and np.all(np.diff(c) > 0)


def test_avg_gradient_aggregation_trains():
    clustered = co.cluster_weights(small_cnn(), number_of_clusters=4, cluster_gradient_aggregation="AVG")
    before = clustered.get_layer("cluster_dense").centroids["kernel"].numpy().copy()
    _fit(clustered, rand(16, 8, 8, 1), rand(16, 10))
    assert not np.array_equal(before, clustered.get_layer("cluster_dense").centroids["kernel"].numpy())


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"number_of_clusters": 1}, "number_of_clusters must be an integer >= 2"),
        ({"number_of_clusters": 2, "preserve_sparsity": True}, "integer >= 3 with preserve_sparsity"),
        ({"number_of_clusters": 300}, r"layer 'conv' \(Conv2D\): number_of_clusters=300 exceeds its 144 weights"),
        ({"number_of_clusters": 10, "cluster_per_channel": True}, r"layer 'conv' \(Conv2D\): number_of_clusters=10 exceeds its 9 weights per output channel"),
        ({"number_of_clusters": 4, "cluster_centroids_init": "KMEDOIDS"}, "cluster_centroids_init='KMEDOIDS' is not known"),
        ({"number_of_clusters": 4, "cluster_gradient_aggregation": "MAX"}, "cluster_gradient_aggregation must be one of"),
    ],
)
def test_bad_input(kwargs, match):
    model = small_cnn()
    with pytest.raises(ValueError, match=match):
        co.cluster_weights(model, **kwargs)


def test_explicit_layer_without_weights_and_double_clustering():
    with pytest.raises(ValueError, match=r"layer 'pool' \(MaxPooling2D\) has nothing it can transform"):
        co.cluster_weights([L.MaxPooling2D(name="pool")], number_of_clusters=4)
    clustered = co.cluster_weights(small_cnn(), number_of_clusters=4)
    with pytest.raises(ValueError, match="layer 'conv' is already clustered"):
        co.cluster_weights(clustered, number_of_clusters=4)


class Clusterable(MatMul):
    def get_clusterable_weights(self):
        return [("w", self.w)]


def test_clusterable_layer_protocol():
    inputs = keras.Input((8,))
    model = keras.Model(inputs, Clusterable(6, name="custom")(inputs))
    clustered = co.cluster_weights(model, number_of_clusters=3)
    _fit(clustered, rand(16, 8), rand(16, 6))
    w = clustered.get_layer("cluster_custom").final_weights()["w"]
    assert len(np.unique(w)) <= 3
