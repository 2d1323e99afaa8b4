"""The deployment tree's 4-bit branches and raw-size target."""

import keras
import pytest

import collabopt.tflite as ct
from collabopt import tree
from collabopt.reference_models import compile_for_classification, reference_cnn
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
