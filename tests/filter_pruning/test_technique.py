"""Filter pruning as a registered technique: one apply path, its place in the chain, refused orders."""

import keras
import numpy as np
import pytest

import collabopt.keras as co
from collabopt.errors import OrderError
from collabopt.filter_pruning import FILTER_PRUNING, FilterPruningConfig, PolynomialRatio
from collabopt.technique import PRUNE_STAGE, apply, chain_techniques, get_technique

#: Runs unchanged on JAX and PyTorch too (CI: KERAS_BACKEND=jax / torch; see README).
pytestmark = pytest.mark.every_backend

L = keras.layers


def _model():
    x = keras.Input((6, 6, 2))
    h = L.Conv2D(4, 3, name="conv")(x)
    h = L.GlobalAveragePooling2D(name="pool")(L.ReLU(name="relu")(h))
    return keras.Model(x, L.Dense(3, name="logits")(h))


def test_registered_in_the_prune_stage():
    technique = get_technique("filter_prune")
    assert technique is FILTER_PRUNING and technique.handler is co.PruneFilters and technique.stage == PRUNE_STAGE
    assert technique.function == "prune_filters" and technique.strip == "strip_pruning"
    assert {k.name for k in technique.records} == {"channels", "sparsity"}


def test_the_one_apply_path_gives_what_prune_filters_gives():
    model = _model()
    config = FilterPruningConfig(co.ConstantRatio(0.5), "l1")
    by_config = apply(model, config)
    by_function = co.prune_filters(model, pruning_ratio=0.5, criterion="l1")
    wrapper = by_config.get_layer("prune_filters_conv")
    assert [t.name for _, t in chain_techniques(wrapper)] == ["filter_prune"]
    np.testing.assert_array_equal(wrapper.channel_mask.numpy(), by_function.get_layer("prune_filters_conv").channel_mask.numpy())
    assert int(wrapper.channel_mask.numpy().sum()) == 2
    assert FilterPruningConfig.from_config(config.get_config()).get_config() == config.get_config()


def test_settings_ramp_the_ratio_over_half_the_steps():
    config = FilterPruningConfig.from_settings({"pruning_ratio": 0.3}, steps=10)
    assert isinstance(config.pruning_schedule, PolynomialRatio)
    assert (config.pruning_schedule.final_ratio, config.pruning_schedule.end_step, config.criterion) == (0.3, 5, "l2")


@pytest.mark.parametrize(
    "first, held, order",
    [
        (lambda m: co.cluster_weights(m, number_of_clusters=3), "clustered", r"cluster_weights\(prune_filters\(model\)\); to filter-prune a clustered model, strip_clustering\(model\) first"),
        (co.quantize_model, "quantized", r"quantize_model\(prune_filters\(model\)\); to filter-prune a quantized model, strip_quantization\(model\) first"),
        (co.prune_low_magnitude, "pruned", r"prune_filters -> strip_pruning -> \(prune_filters again \| prune_low_magnitude\)"),
        (co.prune_filters, "filter-pruned", r"prune_filters -> strip_pruning"),
    ],
    ids=["clustered", "qat", "pruned", "filter_pruned"],
)
def test_refused_orders_name_the_layer_and_the_order_that_works(first, held, order):
    model = first(_model())
    before = [layer.name for layer in model.layers]
    with pytest.raises(OrderError, match=rf"layer '(conv|logits)' of model '.*' is already {held} .*{order}"):
        co.prune_filters(model, pruning_ratio=0.5)
    assert [layer.name for layer in model.layers] == before


def test_later_stages_go_on_top_of_filter_pruning():
    pruned = co.prune_filters(_model(), pruning_ratio=0.5)
    clustered = co.cluster_weights(pruned, number_of_clusters=3)
    assert [t.name for _, t in chain_techniques(clustered.get_layer("cluster_conv"))] == ["cluster", "filter_prune"]
    magnitude = co.prune_low_magnitude(pruned)
    assert [t.name for _, t in chain_techniques(magnitude.get_layer("prune_low_magnitude_conv"))] == ["prune", "filter_prune"]
    small = co.strip_pruning(magnitude)
    assert small.get_layer("conv").filters == 2
