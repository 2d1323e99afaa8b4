import json

import keras
import numpy as np
import pytest

import collabopt.tree as tree
from collabopt.cli import main
from collabopt.errors import InvalidArgumentError
from collabopt.filter_pruning import count_macs as co_count_macs
from collabopt.tree.report import choose
from collabopt.tree.runner import fresh_run_dir
from collabopt.reference_models import compile_for_classification, reference_cnn


@pytest.fixture(scope="module")
def small_run_inputs(digits_data):
    (x, y), (xt, yt) = digits_data
    keras.utils.set_random_seed(0)
    model = compile_for_classification(reference_cnn((8, 8, 1)))
    model.fit(x, y, epochs=4, batch_size=64, verbose=0)
    return model, (x[:600], y[:600]), (xt, yt)


STAGES = [
    tree.Stage("baseline", "baseline", label="Baseline"),
    tree.Stage("pruned", "prune", "baseline", {"sparsity": 0.5}, "Pruned"),
    tree.Stage("pqat", "quantize", "pruned", {}, "PQAT"),
]


def test_stops_at_the_first_optimized_node_meeting_the_targets_and_chooses_the_smallest(small_run_inputs):
    model, train, val = small_run_inputs
    report = tree.run(model, train, val, tree.Targets(max_accuracy_drop=1.0), stages=STAGES, progress=None, verbose=0)
    # the baseline meets any accuracy target by definition: the walk goes on to the first optimized node
    assert [n.name for n in report.nodes] == ["baseline", "pruned"]
    assert all(n.meets_targets for n in report.nodes)
    assert report.chosen == "pruned" and report.node("pruned").gzip_bytes < report.node("baseline").gzip_bytes
    assert report.node("pruned").zeros_fraction > 0.4 > report.node("baseline").zeros_fraction
    assert "Chosen: **Pruned**, the smallest int8 .tflite (gzip bytes" in report.to_markdown()


def test_choose_takes_the_smallest_node_meeting_every_target():
    def node(name, gzip, acc, met):
        return tree.NodeResult(name, name, None, acc, acc, gzip * 2, gzip, 1.0, 1.0, 0.0, met)

    nodes = [node("baseline", 1000, 0.95, True), node("small_miss", 100, 0.5, False), node("mid", 400, 0.94, True), node("tie", 400, 0.945, True)]
    assert choose(nodes) == "tie"  # smallest gzip meeting targets; ties to the more accurate
    assert choose([node("a", 10, 0.1, False)]) is None


def test_epochs_below_1_are_refused_before_any_training(small_run_inputs):
    model, train, val = small_run_inputs
    with pytest.raises(InvalidArgumentError, match=r"epochs must be an integer >= 1 .* received 0 for stages \['pruned', 'pqat'\]"):
        tree.run(model, train, val, stages=STAGES, epochs=0, progress=None)


def test_fresh_run_dir_never_overwrites_unless_forced(tmp_path):
    import datetime

    now = datetime.datetime(2026, 1, 2, 3, 4, 5)
    first = fresh_run_dir(tmp_path, now=now)
    second = fresh_run_dir(tmp_path, now=now)
    assert first.name == "run-20260102-030405" and second.name == "run-20260102-030405-2"
    (tmp_path / "report.json").write_text("{}")
    (tmp_path / "old.tflite").write_bytes(b"x")
    assert fresh_run_dir(tmp_path, force=True) == tmp_path
    assert not (tmp_path / "report.json").exists() and not (tmp_path / "old.tflite").exists()
    assert first.is_dir()  # other runs inside are left alone


def test_goes_deeper_until_a_size_target_is_met(small_run_inputs):
    model, train, val = small_run_inputs
    first = tree.run(model, train, val, tree.Targets(max_accuracy_drop=1.0), stages=STAGES[:1], progress=None, verbose=0)
    target = tree.Targets(max_accuracy_drop=1.0, max_gzip_bytes=int(first.nodes[0].gzip_bytes * 0.9))
    report = tree.run(model, train, val, target, stages=STAGES, progress=None, verbose=0)
    assert [n.name for n in report.nodes] == ["baseline", "pruned"]
    assert report.chosen == "pruned"


@pytest.mark.slow
def test_exhaustive_runs_every_node_and_writes_outputs(small_run_inputs, tmp_path):
    model, train, val = small_run_inputs
    before = [w.numpy().copy() for w in model.weights]
    lines = []
    report = tree.run(model, train, val, exhaustive=True, out_dir=tmp_path, progress=lines.append, verbose=0)
    assert [n.name for n in report.nodes] == [s.name for s in tree.check_stages(tree.default_stages())]
    assert any("PCQAT" in line for line in lines)
    for name in ("report.md", "report.json", "pcqat.tflite", "baseline.tflite", "size_accuracy.png", "weight_density.png"):
        assert (tmp_path / name).is_file(), name
    for n in report.nodes:  # each node's Keras model beside its .tflite, loadable
        assert (tmp_path / f"{n.name}.keras").is_file() and n.keras == str(tmp_path / f"{n.name}.keras")
    keras.saving.load_model(tmp_path / "pcqat.keras")
    assert any(n.pareto for n in report.nodes)
    chosen = report.node(report.chosen)
    assert chosen.gzip_bytes == min(n.gzip_bytes for n in report.nodes if n.meets_targets)
    assert report.chosen != "baseline"
    data = json.loads((tmp_path / "report.json").read_text())
    assert data["settings"]["versions"]["tensorflow"] and data["settings"]["versions"]["keras"]
    assert "smallest gzip bytes" in data["settings"]["chosen_by"]
    for a, b in zip(before, model.weights):  # the baseline model is not modified
        np.testing.assert_array_equal(a, b.numpy())


def test_report_json_round_trips():
    nodes = [
        tree.NodeResult("a", "A", None, 0.9, 0.89, 1000, 900, 1.0, 10.0, 1.0, True, [], False, None),
        tree.NodeResult("b", "B", "a", 0.88, 0.87, 800, 500, 1.8, 9.0, 2.0, False, ["gzip"], False, "b.tflite"),
    ]
    report = tree.TreeReport(nodes, "a", {"epochs": 1, "targets": {"max_accuracy_drop": 0.01}})
    again = tree.TreeReport.from_json(report.to_json())
    assert again == report
    assert json.loads(report.to_json())["chosen"] == "a"
    assert "| **A** |" in report.to_markdown() and "| B |" in report.to_markdown()  # the chosen row in bold


def test_pareto_front_on_hand_made_numbers():
    def node(name, gzip, acc):
        return tree.NodeResult(name, name, None, acc, acc, gzip, gzip, 1.0, 1.0, 0.0, True)

    nodes = [node("big_best", 1000, 0.95), node("small_ok", 400, 0.90), node("dominated", 600, 0.89), node("tie_worse", 400, 0.85), node("tiny", 100, 0.50)]
    front = tree.pareto_front(nodes)
    assert {n.name for n in front} == {"big_best", "small_ok", "tiny"}
    assert not nodes[2].pareto and not nodes[3].pareto


@pytest.mark.parametrize(
    "make,match",
    [
        (lambda: tree.Targets(max_accuracy_drop=-0.1), r"max_accuracy_drop must be a fraction in \[0, 1\]"),
        (lambda: tree.Targets(max_gzip_bytes=0), "max_gzip_bytes must be a positive"),
        (lambda: tree.Stage("x", "distill", "baseline"), "technique='distill'"),
        (lambda: tree.check_stages([tree.Stage("b", "baseline"), tree.Stage("p", "prune", "nowhere")]), "parent 'nowhere' is not a stage"),
        (lambda: tree.check_stages([tree.Stage("b", "baseline"), tree.Stage("b", "baseline")]), "repeated"),
    ],
)
def test_bad_targets_and_stages(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_cli_bad_input_exits_2(capsys):
    assert main(["tree", "--max-accuracy-drop", "-1"]) == 2
    assert "max_accuracy_drop must be a fraction" in capsys.readouterr().err
    assert main(["tree", "--max-size", "0"]) == 2
    assert "max_gzip_bytes must be a positive" in capsys.readouterr().err
    assert main(["tree", "--data", "nope"]) == 2
    assert "unknown data set 'nope'" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_unreachable_target_lists_the_closest_nodes(tmp_path, capsys):
    code = main(["tree", "--quick", "--data", "digits", "--max-size", "100", "--filter-ratios", "--allow-float32", "--out", str(tmp_path)])
    assert code == 1
    err = capsys.readouterr().err
    assert "no node met every target; closest:" in err and "gzip" in err and "MACs" in err
    data = json.loads(next(tmp_path.iterdir()).joinpath("report.json").read_text())
    assert len(data["nodes"]) == 8  # --filter-ratios with no value: TFMOT's tree only
    assert data["settings"]["allow_float32"] is True  # and no float32 file meets 100 bytes either
    assert all(n["deploy_format"] == "int8" and n["float32_latency_us"] > 0 for n in data["nodes"])


@pytest.mark.slow
def test_cli_tree_quick_end_to_end(tmp_path, capsys):
    assert main(["tree", "--quick", "--data", "digits", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "PCQAT" in out and "Chosen" in out and "Chosen: **Baseline**" not in out
    assert "data: digits: 719 train / 359 test samples of shape (8, 8, 1) (--quick: of 1,438 / 359)" in out
    (run,) = tmp_path.iterdir()  # a fresh timestamped run folder
    assert run.name.startswith("run-")
    data = json.loads((run / "report.json").read_text())
    assert len(data["nodes"]) == 15  # TFMOT's 8 and the filter-pruned branches (30% and 50%)
    assert "Filter-pruned 50% + QAT" in out and "| MACs |" in out
    assert data["settings"]["data"]["name"] == "digits" and data["settings"]["data"]["train_samples"] == 719
    assert data["settings"]["model"]["source"].endswith("reference_cnn") and data["settings"]["versions"]["collabopt"]
    assert main(["tree", "--quick", "--data", "digits", "--epochs", "1", "--out", str(tmp_path), "--max-size", "10", "--filter-ratios"]) == 1
    assert len(list(tmp_path.iterdir())) == 2  # the second run did not overwrite the first


def test_default_data_says_when_fashion_mnist_is_missing(monkeypatch, tmp_path):
    from collabopt import cli
    from collabopt.datasets import bundled

    monkeypatch.setattr(bundled, "FASHION_MNIST_DIRS", (tmp_path,))  # an empty folder: not installed
    name, note = cli.default_data()
    assert name == "digits" and "apt-get install dataset-fashion-mnist" in note


def _kernel_elements(path):
    import collabopt.tflite as ct

    return sum(int(np.prod(t.shape)) for t in ct.load(path).inspect().weights() if len(t.shape) >= 2)


def test_filter_pruned_node_exports_the_physically_smaller_model(small_run_inputs, tmp_path):
    from collabopt.layers import OptimizationWrapper
    from collabopt.tree.stages import filter_pruned_stages

    model, train, val = small_run_inputs
    stages = [tree.Stage("baseline", "baseline", label="Baseline"), filter_pruned_stages((0.5,))[0]]
    lines = []
    (x, y), (xv, yv) = train, val
    report = tree.run(model, (x[:256], y[:256]), (xv[:128], yv[:128]), tree.Targets(max_accuracy_drop=1.0), stages=stages,
                      exhaustive=True, out_dir=tmp_path, progress=lines.append, verbose=0, latency_runs=5, calibration_samples=64)
    base, fp = report.nodes
    assert fp.name == "filter_pruned_50" and fp.label == "Filter-pruned 50%" and fp.parent == "baseline"
    assert base.macs == co_count_macs(model) and fp.macs < 0.5 * base.macs
    assert fp.params < 0.5 * base.params and fp.raw_bytes < 0.7 * base.raw_bytes
    assert _kernel_elements(fp.tflite) < 0.5 * _kernel_elements(base.tflite)  # the file itself holds fewer weights
    saved = keras.saving.load_model(fp.keras)
    assert not any(isinstance(layer, OptimizationWrapper) for layer in saved.layers)  # stripped: plain Keras
    assert co_count_macs(saved) == fp.macs and saved.count_params() == fp.params
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert [saved.get_layer(c.name).filters for c in convs] == [c.filters // 2 for c in convs]
    assert any(f"MACs {fp.macs:,}" in line for line in lines)
    for node in (base, fp):  # int8 and float32 files timed side by side, at batch 1 and per sample at batch 64
        assert node.float32_latency_us > 0 and node.batched_latency_us > 0 and node.float32_batched_latency_us > 0
        assert node.float32_gzip_bytes > node.gzip_bytes and node.deploy_format == "int8"
        assert abs(node.float32_top1 - node.float_top1) <= 0.02  # the float32 file computes what the model computes
        assert isinstance(node.int8_slower, bool)
    assert base.float32_gzip_bytes == report.settings["float32_baseline_gzip_bytes"]
    assert "| MACs | params |" in report.to_markdown() and f"| {fp.macs:,} | {fp.params:,} |" in report.to_markdown()
    data = json.loads((tmp_path / "report.json").read_text())
    assert [n["macs"] for n in data["nodes"]] == [base.macs, fp.macs]
    assert data["settings"]["int8_slower"] == [n.name for n in report.nodes if n.int8_slower]
    assert data["settings"]["latency"]["batched"] == 64 and data["nodes"][1]["float32_latency_us"] == fp.float32_latency_us
    assert data["settings"]["stages"][1] == {"name": "filter_pruned_50", "technique": "filter_prune", "parent": "baseline",
                                             "settings": {"pruning_ratio": 0.5}}


@pytest.mark.slow
def test_filter_pruned_chain_with_qat_and_pcqat(small_run_inputs, tmp_path):
    import collabopt.tflite as ct
    from collabopt.tree.stages import filter_pruned_stages

    model, train, val = small_run_inputs
    before = [w.numpy().copy() for w in model.weights]
    stages = [tree.Stage("baseline", "baseline")] + filter_pruned_stages((0.5,))
    report = tree.run(model, train, val, tree.Targets(max_accuracy_drop=1.0), stages=stages, exhaustive=True, out_dir=tmp_path,
                      progress=None, verbose=0, latency_runs=5)
    names = [n.name for n in report.nodes]
    assert names == ["baseline", "filter_pruned_50", "filter_pruned_50_qat", "filter_pruned_50_pruned",
                     "filter_pruned_50_sparse_clustered", "filter_pruned_50_pcqat"]
    base, fp = report.node("baseline"), report.node("filter_pruned_50")
    for n in report.nodes[2:]:  # every child keeps the smaller model's MACs
        assert n.macs == fp.macs < base.macs
    pcqat = report.node("filter_pruned_50_pcqat")
    assert pcqat.zeros_fraction > 0.4 and pcqat.gzip_bytes < fp.gzip_bytes
    for name in ("filter_pruned_50_qat", "filter_pruned_50_pcqat"):  # QAT ranges: a full int8 file
        assert {t.dtype for t in ct.load(tmp_path / f"{name}.tflite").inspect().weights() if len(t.shape) >= 2} == {"int8"}
        keras.saving.load_model(tmp_path / f"{name}.keras")
    for a, b in zip(before, model.weights):  # the baseline model is not modified
        np.testing.assert_array_equal(a, b.numpy())


def test_node_macs_is_n_a_for_layers_it_cannot_count():
    from collabopt.tree.runner import node_macs, parameter_count

    x = keras.Input((6, 4))
    y = keras.layers.Dense(3, name="logits")(keras.layers.LSTM(5, name="lstm")(keras.layers.Conv1D(4, 3, name="conv")(x)))
    model = keras.Model(x, y)
    assert node_macs(model) == {"macs": None, "macs_uncounted": ["lstm"]}
    dense = keras.Sequential([keras.Input((6, 4)), keras.layers.Conv1D(4, 3), keras.layers.Flatten(), keras.layers.Dense(3)])
    assert node_macs(dense) == {"macs": 4 * 3 * 4 * 4 + 16 * 3, "macs_uncounted": []}
    assert parameter_count(dense) == dense.count_params()
