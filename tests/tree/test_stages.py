"""The deployment tree's 4-bit branches and raw-size target."""

import keras
import pytest

import collabopt.tflite as ct
from collabopt import tree
from collabopt.reference_models import compile_for_classification, reference_cnn
from collabopt.errors import InvalidArgumentError, InvalidTypeError
from collabopt.tree.report import NodeResult


def _node(raw, gzip=100):
    return NodeResult("n", "n", None, 0.9, 0.9, raw, gzip, 1.0, 10.0, 0.0, False)


def test_int4_branches_hang_off_baseline_pruned_and_sparse_clustered():
    stages = {s.name: s for s in tree.check_stages(tree.default_stages(int4=True))}
    assert {n: stages[n].parent for n in ("qat4", "p4qat", "pc4qat")} == {
        "qat4": "baseline", "p4qat": "pruned", "pc4qat": "sparse_clustered",
    }
    for name in ("qat4", "p4qat", "pc4qat"):
        assert stages[name].settings["scheme"].get_config()["num_bits_weight"] == 4
    assert "qat4" not in {s.name for s in tree.default_stages()}


def test_raw_size_target():
    target = tree.Targets(max_accuracy_drop=1.0, max_raw_bytes=1000)
    assert target.misses(_node(999), 0.9) == []
    assert target.misses(_node(1001), 0.9) == ["raw 1,001 > 1,000 bytes"]
    with pytest.raises(ValueError, match="max_raw_bytes"):
        tree.Targets(max_raw_bytes=0)


@pytest.mark.slow
def test_raw_size_target_reached_by_the_4bit_branch(digits_data, tmp_path):
    (x, y), (xt, yt) = digits_data
    keras.utils.set_random_seed(0)
    model = compile_for_classification(reference_cnn((8, 8, 1)))
    model.fit(x[:600], y[:600], epochs=2, batch_size=64, verbose=0)
    stages = [
        tree.Stage("baseline", "baseline"),
        tree.Stage("qat", "quantize", "baseline"),
        next(s for s in tree.default_stages(int4=True) if s.name == "qat4"),
    ]
    first = tree.run(model, (x[:600], y[:600]), (xt, yt), tree.Targets(max_accuracy_drop=1.0), stages=stages[:2], exhaustive=True, progress=None, verbose=0)
    qat_raw = first.node("qat").raw_bytes
    target = tree.Targets(max_accuracy_drop=1.0, max_raw_bytes=int(0.7 * qat_raw))
    report = tree.run(model, (x[:600], y[:600]), (xt, yt), target, stages=stages, out_dir=tmp_path, progress=None, verbose=0)
    assert [n.name for n in report.nodes] == ["baseline", "qat", "qat4"]
    assert report.chosen == "qat4"
    assert report.node("qat4").raw_bytes <= 0.7 * qat_raw
    assert {t.dtype for t in ct.load(tmp_path / "qat4.tflite").inspect().weights() if len(t.shape) >= 2} == {"int4"}
    assert report.settings["targets"]["max_raw_bytes"] == int(0.7 * qat_raw)


def test_default_tree_has_filter_pruned_branches_from_the_baseline():
    stages = {s.name: s for s in tree.check_stages(tree.default_stages())}
    assert {n: (stages[n].technique, stages[n].parent) for n in stages if n.startswith("filter_pruned")} == {
        "filter_pruned_30": ("filter_prune", "baseline"),
        "filter_pruned_30_qat": ("quantize", "filter_pruned_30"),
        "filter_pruned_50": ("filter_prune", "baseline"),
        "filter_pruned_50_qat": ("quantize", "filter_pruned_50"),
        "filter_pruned_50_pruned": ("prune", "filter_pruned_50"),
        "filter_pruned_50_sparse_clustered": ("cluster", "filter_pruned_50_pruned"),
        "filter_pruned_50_pcqat": ("quantize", "filter_pruned_50_sparse_clustered"),
    }
    assert stages["filter_pruned_30"].settings == {"pruning_ratio": 0.3}
    assert stages["filter_pruned_50_sparse_clustered"].settings["preserve_sparsity"] is True
    assert not any(s.technique == "filter_prune" for s in tree.default_stages(filter_ratios=()))
    assert [s.name for s in tree.default_stages(filter_ratios=(0.7,)) if s.technique == "filter_prune"] == ["filter_pruned_70"]


def test_filter_prune_stage_config_ramps_the_ratio_over_half_an_epoch():
    import collabopt.keras as co

    stage = tree.Stage("fp", "filter_prune", "baseline", {"pruning_ratio": 0.4, "criterion": "l1"})
    config = stage.config(steps_per_epoch=20)
    assert isinstance(config, co.FilterPruningConfig) and config.criterion == "l1"
    schedule = config.pruning_schedule
    assert isinstance(schedule, co.PolynomialRatio) and schedule.end_step == 10
    assert float(schedule(0)) == 0.0 and abs(float(schedule(10)) - 0.4) < 1e-6
    given = co.ConstantRatio(0.25)
    assert tree.Stage("fp", "filter_prune", "baseline", {"pruning_schedule": given}).config(5).pruning_schedule is given
    assert stage.learning_rate == 5e-4
    assert tree.Stage("fp", "filter_prune", "baseline", {"learning_rate": 1e-3}).learning_rate == 1e-3


@pytest.mark.parametrize(
    "make,match",
    [
        (lambda: tree.Stage("fp", "filter_prune", "baseline", {"sparsity": 0.5}).config(), r"unknown settings \['sparsity'\]; accepted: pruning_ratio"),
        (lambda: tree.Stage("fp", "filter_prune", "baseline", {"pruning_ratio": 1.0}).config(), r"stage 'fp' \(filter_prune\): pruning_ratio must be in \[0, 1\)"),
        (lambda: tree.Stage("fp", "filter_prune", "baseline", {"pruning_schedule": 0.5}).config(), r"TypeError: stage 'fp' \(filter_prune\): pruning_schedule must be a filter-pruning RatioSchedule"),
        (lambda: tree.default_stages(filter_ratios=(0.0,)), r"received 0.0"),
        (
            lambda: tree.check_stages([tree.Stage("b", "baseline"), tree.Stage("p", "prune", "b"), tree.Stage("fp", "filter_prune", "p")]),
            r"stage 'fp': filter_prune starts from a plain model .* its parent 'p' is a prune stage",
        ),
    ],
)
def test_bad_filter_prune_stages_are_refused_before_training(make, match):
    # A value collabopt cannot use is an InvalidArgumentError, a wrong type an InvalidTypeError.
    expected = InvalidTypeError if match.startswith("TypeError: ") else InvalidArgumentError
    with pytest.raises(expected, match=match.removeprefix("TypeError: ")):
        make()
