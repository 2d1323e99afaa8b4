"""PQAT, CQAT, PCQAT and sparsity-preserving clustering, proven in the int8 flatbuffer."""


import keras
import numpy as np
import pytest

import collabopt.keras as co
import collabopt.tflite as ct
from collabopt.reference_models import compile_for_classification

L = keras.layers
K = 8


def architecture():
    """Conv+BN+ReLU, conv + separate ReLU, DepthwiseConv+BN, residual Add, a nested block, Dense."""
    block_in = keras.Input((8, 8, 16))
    b = L.Conv2D(16, 3, padding="same", name="block_conv")(block_in)
    block = keras.Model(block_in, L.ReLU(name="block_relu")(b), name="block")

    i = keras.Input((8, 8, 1))
    h = L.Conv2D(16, 3, padding="same", use_bias=False, name="c1")(i)
    h = L.BatchNormalization(momentum=0.9, name="bn1")(h)
    h = L.ReLU(name="r1")(h)
    d = L.DepthwiseConv2D(3, padding="same", use_bias=False, name="dw")(h)
    d = L.BatchNormalization(momentum=0.9, name="bn_dw")(d)
    d = L.ReLU(name="r_dw")(d)
    h = L.Add(name="residual")([h, d])
    h = L.Conv2D(16, 1, name="c2")(h)
    h = L.ReLU(name="separate_relu")(h)
    h = block(h)
    h = L.MaxPooling2D(name="pool")(h)
    h = L.Flatten(name="flat")(h)
    return keras.Model(i, L.Dense(10, name="fc")(h), name="collab")


@pytest.fixture(scope="module")
def stages(digits_data):
    (x, y), (xt, yt) = digits_data
    keras.utils.set_random_seed(0)
    base = compile_for_classification(architecture())
    base.fit(x, y, epochs=8, batch_size=64, verbose=0)
    pruned = compile_for_classification(co.prune_low_magnitude(base, co.ConstantSparsity(0.5, 0, frequency=10)))
    pruned.fit(x, y, epochs=2, batch_size=64, verbose=0)
    clustered = compile_for_classification(co.cluster_weights(base, number_of_clusters=K), 1e-4)
    clustered.fit(x, y, epochs=1, batch_size=64, verbose=0)
    sparse_clustered = compile_for_classification(co.cluster_weights(pruned, number_of_clusters=K, preserve_sparsity=True), 1e-4)
    sparse_clustered.fit(x, y, epochs=1, batch_size=64, verbose=0)
    return {
        "base": base,
        "pqat": pruned,
        "cqat": clustered,
        "pcqat": sparse_clustered,
        "float_acc": base.evaluate(xt, yt, verbose=0)[1],
    }


def _kernels(tfl):
    return [t for t in tfl.inspect().weights() if t.dtype == "int8" and len(t.shape) >= 2]


def _train_save_reload_train(model, digits_data, tmp_path):
    (x, y), _ = digits_data
    qat = compile_for_classification(model, 1e-4)
    qat.fit(x, y, epochs=1, batch_size=64, verbose=0)
    qat.save(tmp_path / "mid.keras")
    reloaded = compile_for_classification(keras.saving.load_model(tmp_path / "mid.keras"), 1e-4)
    reloaded.fit(x, y, epochs=1, batch_size=64, verbose=0)
    return reloaded


@pytest.mark.slow
@pytest.mark.parametrize("scheme", ["pqat", "cqat", "pcqat"])
def test_constraints_survive_qat_save_reload_and_export(stages, scheme, digits_data, tmp_path):
    (_, _), (xt, yt) = digits_data
    qat = _train_save_reload_train(co.quantize_model(stages[scheme]), digits_data, tmp_path)
    tfl = ct.convert(qat, "int8")
    assert tfl.float_islands() == []
    kernels = _kernels(tfl)
    assert len(kernels) == 5  # c1, dw, c2, block_conv, fc
    for t in kernels:
        if scheme in ("pqat", "pcqat"):
            assert t.zeros_fraction >= 0.5, t.name
        if scheme in ("cqat", "pcqat"):
            bound = t.unique_values if not t.per_channel else t.max_unique_per_channel
            assert bound <= K, t.name
    report = ct.verify(qat, tfl)
    assert report.all_hold, str(report)
    kinds = {c.kind for c in report}
    assert kinds == {"pqat": {"sparsity"}, "cqat": {"clusters"}, "pcqat": {"sparsity", "clusters"}}[scheme]
    assert tfl.evaluate(xt, yt) >= stages["float_acc"] - 0.05


@pytest.mark.slow
def test_stripped_stages_are_detected_and_tfmot_spellings_match(stages, digits_data):
    (x, y), _ = digits_data
    stripped = co.strip_clustering(stages["pcqat"])
    native = co.quantize_model(stripped)
    explicit = co.quantize_model(stripped, preserve=("sparsity", "clusters"))
    annotated = co.quantize_annotate_model(stripped)
    tfmot = co.quantize_apply(annotated, scheme=co.Default8BitClusterPreserveQuantizeScheme(preserve_sparsity=True))
    results = []
    for model in (native, explicit, tfmot):
        keras.utils.set_random_seed(1)
        qat = compile_for_classification(model, 1e-4)
        qat.fit(x[:512], y[:512], epochs=1, batch_size=64, verbose=0, shuffle=False)
        tfl = ct.convert(qat, "int8")
        assert ct.verify(qat, tfl).all_hold
        results.append(tfl.content)
    assert results[0] == results[1] == results[2]
    pq = co.quantize_apply(co.quantize_annotate_model(co.strip_pruning(stages["pqat"])), scheme=co.Default8BitPrunePreserveQuantizeScheme())
    assert {c.kind for c in ct.verify(compile_for_classification(pq), ct.convert(co.calibrate(pq, x[:64]), "int8"))} == {"sparsity"}


def test_pqat_zeros_never_drift(stages, digits_data):
    (x, y), _ = digits_data
    qat = compile_for_classification(co.quantize_model(co.strip_pruning(stages["pqat"])), 1e-2)
    qat.fit(x, y, epochs=3, batch_size=32, verbose=0)  # a large learning rate, many steps
    for w in co.strip_quantization(qat).layers:
        if hasattr(w, "kernel") and isinstance(w.kernel, keras.Variable):
            assert np.mean(w.kernel.numpy() == 0) >= 0.5, w.name


def test_cqat_trains_the_centroids_and_keeps_indices(stages, digits_data):
    (x, y), _ = digits_data
    qat = compile_for_classification(co.quantize_model(co.strip_clustering(stages["cqat"])), 1e-3)
    wrapper = qat.get_layer("quant_fc")
    preserve = wrapper.layer
    state = preserve.recorded_constraints()["kernel"][0].state
    centroids, indices = state["centroids"].numpy().copy(), state["indices"].numpy().copy()
    qat.fit(x[:256], y[:256], epochs=1, batch_size=32, verbose=0)
    assert not np.array_equal(centroids, state["centroids"].numpy())
    np.testing.assert_array_equal(indices, state["indices"].numpy())


def test_opting_out_and_strip_clustering_cqat(stages):
    stripped = co.strip_clustering(stages["cqat"])
    plain = co.quantize_model(stripped, preserve=())
    assert all(type(w.layer).__name__ != "PreserveWrapper" for w in plain.layers if isinstance(w, co.QuantizeWrapper))
    chained = co.quantize_model(stages["cqat"])
    baked = co.strip_clustering_cqat(chained)
    fc = baked.get_layer("quant_fc")
    assert type(fc.layer).__name__ == "Dense"
    assert len(np.unique(fc.layer.kernel.numpy())) <= K


def test_sparse_clustering_warns_when_zeros_are_ambiguous():
    dense = L.Dense(4, name="few_zeros")
    model = keras.Sequential([keras.Input((50,)), dense])
    kernel = np.random.default_rng(0).normal(size=(50, 4)).astype("float32")
    kernel[0, 0] = 0.0  # 1 zero in 200: not clearly pruned
    dense.kernel.assign(kernel)
    with pytest.warns(UserWarning, match=r"layer 'few_zeros'.*only 0.50% exact zeros"):
        co.cluster_weights(model, number_of_clusters=4, preserve_sparsity=True)


def test_time_distributed_layers_go_through_the_whole_chain(tmp_path):
    """TimeDistributed(Dense / Conv2D): the wrapped layer's kernel is pruned, clustered and quantized."""
    from tests.conftest import pcqat_trained, rand

    L = keras.layers
    i = keras.Input((4, 6, 6, 2))
    h = L.TimeDistributed(L.Conv2D(8, 3, activation="relu", name="conv"), name="td_conv")(i)
    h = L.TimeDistributed(L.GlobalAveragePooling2D(), name="td_pool")(h)
    h = L.TimeDistributed(L.Dense(8, activation="relu", name="fc"), name="td_fc")(h)
    model = keras.Model(i, L.Dense(3, name="head")(L.Flatten()(h)))
    x = rand(8, 4, 6, 6, 2)
    qat = pcqat_trained(model, x, np.arange(8) % 3)
    path = tmp_path / "td.keras"
    qat.save(path)
    reloaded = keras.models.load_model(path)
    np.testing.assert_array_equal(reloaded.predict(x, verbose=0), qat.predict(x, verbose=0))
    tflite = ct.convert(reloaded, "int8")
    assert tflite.float_islands() == []
    report = ct.verify(reloaded, tflite)
    assert report.all_hold, str(report)
    assert {"td_conv", "td_fc"} <= {c.layer for c in report}
    assert {c.kind for c in report} >= {"sparsity", "clusters"}


def test_tfmot_conversion_recipe_on_the_pcqat_model_gives_the_same_int8_file():
    """TFMOT's recipe, ``TFLiteConverter.from_keras_model(qat)`` with ``Optimize.DEFAULT``, on our PCQAT model.

    The converter must fold every fake-quantized weight of the training
    graph (a select around a weight's fake quant kept the Conv2D filter from
    folding: 'tfl.transpose op has mismatched quantized axes').
    """
    import tensorflow as tf

    from tests.conftest import conv_bn_depthwise_cnn, pcqat_trained, rand

    model = conv_bn_depthwise_cnn((12, 12, 1), 10)
    x, y = rand(8, 12, 12, 1), np.arange(8) % 10
    qat = pcqat_trained(model, x, y, 8)
    converter = tf.lite.TFLiteConverter.from_keras_model(qat)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    direct = ct.TFLiteModel(converter.convert(), mode="int8")
    assert direct.float_islands() == [] and {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"} <= set(direct.ops())
    assert ct.verify(qat, direct).all_hold
    np.testing.assert_array_equal(direct.predict(x), ct.convert(qat, "int8").predict(x))
