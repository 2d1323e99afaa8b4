"""Latency-guided filter pruning: steps that make the int8 file slower are refused."""

import keras
import numpy as np
import pytest

import collabopt.keras as co
from collabopt.errors import InvalidArgumentError, InvalidTypeError
from collabopt.filter_pruning import ConstantRatio, Int8Latency, PruneFilters, apply_filter_pruning
from collabopt.filter_pruning.wrapper import pruned_channel_count
from collabopt.layers import wrapper_chain

L = keras.layers


def _three_groups():
    """Three prunable groups: 'a', 'b' (with its BN and depthwise conv) and 'c'."""
    x = keras.Input((10, 10, 3))
    h = L.Conv2D(16, 3, name="a")(x)
    h = L.Conv2D(16, 1, name="b")(h)
    h = L.BatchNormalization(name="bn")(h)
    h = L.DepthwiseConv2D(3, name="dw")(h)
    h = L.Conv2D(8, 3, name="c")(h)
    return keras.Model(x, L.Dense(3, name="out")(L.GlobalAveragePooling2D()(h)))


def _filters(model, name):
    return model.get_layer(name).filters


class FixedLatency:
    """Fixed measurements: a dense model costs 100 us; each listed layer, when narrower, adds its cost."""

    def __init__(self, costs):
        self.costs, self.calls = costs, 0

    def __call__(self, models):
        self.calls += 1
        full = {"a": 16, "b": 16, "c": 8}
        return [100.0 + sum(cost for name, cost in self.costs.items() if _filters(m, name) < full[name]) for m in models]


def test_a_step_that_makes_the_model_slower_is_refused():
    model = _three_groups()
    plan = co.latency_guided_plan(model, 0.5, measure=FixedLatency({"a": -30.0, "b": 15.0, "c": -10.0}))
    decisions = {d.layers[0]: d for d in plan.decisions}
    assert decisions["a"].pruned and decisions["c"].pruned and not decisions["b"].pruned
    assert set(decisions["b"].layers) == {"b", "bn", "dw"}  # the whole group stays
    assert decisions["b"].with_step_us > decisions["b"].without_step_us
    assert plan.left_alone == decisions["b"].layers
    assert (plan.dense_us, plan.planned_us) == (100.0, 60.0)
    assert "refused (slower)" in plan.report() and "1.67x faster" in plan.report()
    small = co.strip_pruning(co.prune_filters(model, ConstantRatio(0.5), latency_guided=plan))
    assert (_filters(small, "a"), _filters(small, "b"), _filters(small, "c")) == (8, 16, 4)
    assert small.get_layer("dw").kernel.shape[2] == 16


def test_nothing_is_pruned_when_no_step_makes_the_model_faster():
    model = _three_groups()
    measure = FixedLatency({"a": 5.0, "b": 5.0, "c": 5.0})
    plan = co.latency_guided_plan(model, 0.5, measure=measure)
    assert not any(d.pruned for d in plan.decisions) and plan.speedup == 1.0
    result = co.prune_filters(model, 0.5, latency_guided=plan)
    assert not any(wrapper_chain(layer) for layer in result.layers)
    assert result is not model and _filters(result, "a") == 16


def test_steps_that_only_pay_off_together_are_refused_if_the_sum_is_slower():
    # Each step alone is neutral but all together are slower than dense: the final comparison refuses them all.
    class Together:
        def __call__(self, models):
            return [130.0 if all(_filters(m, n) < f for n, f in (("a", 16), ("b", 16), ("c", 8))) else 100.0 for m in models]

    plan = co.latency_guided_plan(_three_groups(), 0.5, measure=Together())
    assert plan.left_alone and plan.planned_us <= plan.dense_us


def test_latency_guided_with_real_int8_measurements():
    """The default measurement converts each candidate to int8 and times it; the plan is consistent."""
    model = _three_groups()
    plan = co.latency_guided_plan(model, 0.5, measure=Int8Latency(rounds=1, runs=3, min_sample_us=200.0))
    assert len(plan.decisions) == 3
    for d in plan.decisions:
        assert np.isfinite(d.with_step_us) and np.isfinite(d.without_step_us) and d.with_step_us > 0
        assert d.pruned == (d.with_step_us <= d.without_step_us) or plan.planned_us == plan.dense_us
    pruned = co.prune_filters(model, 0.5, latency_guided=plan)
    small = co.strip_pruning(pruned) if any(wrapper_chain(layer) for layer in pruned.layers) else pruned
    for d in plan.decisions:
        assert _filters(small, d.layers[0]) == (d.kept if d.pruned else d.channels)


def test_latency_guided_true_measures_itself():
    model = _three_groups()
    pruned = co.prune_filters(model, 0.5, latency_guided=True)
    assert pruned is not model and _filters(model, "a") == 16  # the input is not modified


def test_left_alone_names_a_layer_with_output_channels():
    with pytest.raises(InvalidArgumentError, match="left_alone names \\['nope'\\]"):
        apply_filter_pruning(_three_groups(), co.FilterPruningConfig(ConstantRatio(0.5), left_alone=("nope",)))


def test_bad_latency_guided_values_are_refused():
    with pytest.raises(InvalidTypeError, match="latency_guided must be True, False or a LatencyPlan"):
        co.prune_filters(_three_groups(), 0.5, latency_guided="yes")
    with pytest.raises(InvalidArgumentError, match="measure returned 1 latencies"):
        co.latency_guided_plan(_three_groups(), 0.5, measure=lambda models: [1.0])
    with pytest.raises(InvalidArgumentError, match="pruning_ratio must be in"):
        co.latency_guided_plan(_three_groups(), 1.5)


@pytest.mark.parametrize("multiple", [1, 4, 8])
@pytest.mark.parametrize("ratio", [0.0, 0.3, 0.5, 0.9])
def test_pruned_channel_count_is_what_the_wrapper_masks(ratio, multiple):
    wrapper = PruneFilters(L.Dense(24), ConstantRatio(ratio), channel_multiple=multiple)
    wrapper.build((None, 3))
    wrapper.set_ranking(np.arange(24), np.full(24, 24))
    assert int(wrapper.pruned_output_channels().sum()) == pruned_channel_count(ratio, 24, multiple)
