"""The one apply / strip path: chain order enforced at apply time, legal chains unchanged."""

import keras
import numpy as np
import pytest

import collabopt.keras as co
from collabopt.errors import InvalidArgumentError, OrderError
from collabopt.technique import apply, check_chain, get_technique, strip
from tests.conftest import rand

#: Runs unchanged on JAX and PyTorch too (CI: KERAS_BACKEND=jax / torch; see README).
pytestmark = pytest.mark.every_backend

L = keras.layers


def _model():
    return keras.Sequential([keras.Input((8,)), L.Dense(8, name="d"), L.Dense(4, name="e")], name="m")


def _pruned():
    pruned = co.prune_low_magnitude(_model(), co.ConstantSparsity(0.5, 0, frequency=1))
    pruned(rand(2, 8), training=True)  # one pruning step: masks hold zeros
    return pruned


def _weights(model):
    return [w.numpy().copy() for w in model.weights]


@pytest.mark.parametrize(
    "make,later,match",
    [
        (
            lambda m: co.cluster_weights(m, number_of_clusters=3),
            co.quantize_model,
            r"quantize_model\(cluster_weights\(model\)\)",
        ),
        (co.prune_low_magnitude, co.quantize_model, r"quantize_model\(prune_low_magnitude\(model\)\)"),
        (
            co.prune_low_magnitude,
            lambda m: co.cluster_weights(m, number_of_clusters=3),
            r"cluster_weights\(prune_low_magnitude\(model\)\)",
        ),
        (co.prune_low_magnitude, co.quantize_annotate_model, r"quantize_model\(prune_low_magnitude\(model\)\)"),
    ],
)
def test_a_stage_on_top_of_a_later_one_is_refused_naming_the_layer_and_the_order(make, later, match):
    first = later(_model())
    before = _weights(first)
    with pytest.raises(OrderError, match=r"layer 'd' is already (quantized|clustered).*" + match):
        make(first)
    for a, b in zip(before, _weights(first)):  # nothing changed
        np.testing.assert_array_equal(a, b)


def test_the_order_error_says_what_to_strip_first():
    with pytest.raises(OrderError, match="To cluster a quantized model, strip_quantization first"):
        co.cluster_weights(co.quantize_model(_model()), number_of_clusters=3)
    with pytest.raises(OrderError, match="To prune a clustered model, strip_clustering first"):
        co.prune_low_magnitude(co.cluster_weights(_model(), number_of_clusters=3))
    assert issubclass(OrderError, ValueError)


def test_layer_wise_apis_enforce_the_order_too():
    qat = co.quantize_model(_model())
    with pytest.raises(OrderError, match="layer 'd' is already quantized"):
        co.prune_low_magnitude(qat.layers[0])
    with pytest.raises(OrderError, match="layer 'd' is already quantized"):
        co.cluster_weights([qat.layers[0]], number_of_clusters=3)
    clustered = co.cluster_weights(L.Dense(4, name="single"), number_of_clusters=3)
    with pytest.raises(OrderError, match="layer 'single' is already clustered"):
        co.prune_low_magnitude([clustered])
    with pytest.raises(InvalidArgumentError, match="layer 'single' is already clustered"):
        co.cluster_weights(clustered, number_of_clusters=3)


def test_strip_clustering_on_a_cqat_model_points_to_strip_clustering_cqat():
    cqat = co.quantize_model(co.cluster_weights(_model(), number_of_clusters=3))
    with pytest.raises(
        OrderError,
        match=r"layer 'd' is clustered under quantize.*strip_clustering_cqat\(model\).*strip_quantization\(model\) first",
    ):
        co.strip_clustering(cqat)
    baked = co.strip_clustering_cqat(cqat)  # the way that works keeps QAT
    assert [type(l).__name__ for l in baked.layers] == ["QuantizeWrapper", "QuantizeWrapper"]
    x = rand(3, 8)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(baked(x)), keras.ops.convert_to_numpy(cqat(x)), atol=1e-6)


def test_strip_pruning_under_a_stage_that_keeps_its_zeros_is_refused():
    sparse_clustered = co.cluster_weights(_pruned(), number_of_clusters=4, preserve_sparsity=True)
    with pytest.raises(
        OrderError, match=r"strip_pruning: layer 'd' is pruned under cluster.*strip_clustering\(model\) first"
    ):
        co.strip_pruning(sparse_clustered)


def test_legal_chains_and_strips_work_as_before():
    pruned = _pruned()
    x = rand(3, 8)
    pcqat = co.quantize_model(co.cluster_weights(pruned, number_of_clusters=4, preserve_sparsity=True))
    chain = [type(w).__name__ for w in _chain(pcqat.layers[0])]
    assert chain == ["QuantizeWrapper", "ClusterWeights", "PruneLowMagnitude"]
    # pruning stripped from under QAT: QAT stays, outputs unchanged
    pqat = co.quantize_model(pruned)
    stripped = co.strip_pruning(pqat)
    assert [type(l).__name__ for l in stripped.layers] == ["QuantizeWrapper", "QuantizeWrapper"]
    np.testing.assert_allclose(keras.ops.convert_to_numpy(stripped(x)), keras.ops.convert_to_numpy(pqat(x)), atol=1e-6)
    # pruning stripped from under clustering (not sparsity-preserving)
    clustered = co.cluster_weights(pruned, number_of_clusters=4)
    assert [type(l.layer).__name__ for l in co.strip_pruning(clustered).layers] == ["Dense", "Dense"]
    assert [type(l).__name__ for l in co.strip_clustering(clustered).layers] == ["Dense", "Dense"]


def _chain(layer):
    out = []
    while isinstance(layer, keras.layers.Wrapper):
        out.append(layer)
        layer = layer.layer
    return [w for w in out if type(w).__name__ != "PreserveWrapper"]


def test_apply_takes_any_registered_config_and_strip_any_technique():
    model = _model()
    pruned = apply(model, co.PruningConfig(co.ConstantSparsity(0.5, 0, frequency=1)), what="my_prune")
    assert [type(l).__name__ for l in pruned.layers] == ["PruneLowMagnitude", "PruneLowMagnitude"]
    assert [type(l).__name__ for l in strip(pruned, "prune").layers] == ["Dense", "Dense"]
    with pytest.raises(InvalidArgumentError, match="my_prune: layer 'd' is already pruned"):
        apply(pruned, co.PruningConfig(), what="my_prune")
    with pytest.raises(InvalidArgumentError, match="expects a technique config"):
        apply(model, {"number_of_clusters": 3})
    check_chain(pruned.layers[0], get_technique("cluster"), "x")  # clustering may follow pruning


def test_a_policy_selects_layers_through_the_config():
    inputs = keras.Input((8, 8, 4))
    x = L.Conv2D(4, 1, name="pointwise")(inputs)
    x = L.Conv2D(4, 3, name="spatial")(x)
    model = keras.Model(inputs, x)
    pruned = co.prune_low_magnitude(model, pruning_policy=co.PruneForLatencyOnXNNPack())
    assert [type(l).__name__ for l in pruned.layers[1:]] == ["PruneLowMagnitude", "Conv2D"]
