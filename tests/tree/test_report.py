"""The report's MACs column and the choice of a node under a latency target (given measurements, no timing)."""

import json

from collabopt import tree
from collabopt.tree.report import choose, format_macs


def _node(name, gzip, latency_us, macs, acc=0.9, parent="baseline"):
    return tree.NodeResult(name, name, parent, acc, acc, 2 * gzip, gzip, 1.0, latency_us, 0.0, False, macs=macs, params=macs // 10)


def _measured_tree():
    # As measured on the Fashion-MNIST reference CNN (benchmarks/RESULTS.md): magnitude pruning and
    # clustering shrink the gzip file but keep every MAC, so only filter pruning lowers latency.
    return [
        _node("baseline", 106_292, 65.5, 1_117_056, acc=0.863, parent=None),
        _node("pruned", 60_000, 65.0, 1_117_056),
        _node("pcqat", 30_000, 64.0, 1_117_056),
        _node("filter_pruned_30", 53_999, 58.0, 622_701),
        _node("filter_pruned_50", 28_074, 30.2, 307_648),
        _node("filter_pruned_50_qat", 26_220, 30.3, 307_648),
        _node("filter_pruned_50_pcqat", 20_000, 29.0, 307_648, acc=0.80),
    ]


def _decide(nodes, targets):
    for n in nodes:
        n.misses = targets.misses(n, nodes[0].float_top1)
        n.meets_targets = not n.misses
    return choose(nodes)


def test_a_latency_target_selects_the_smallest_filter_pruned_node_meeting_it():
    nodes = _measured_tree()
    chosen = _decide(nodes, tree.Targets(max_accuracy_drop=0.01, max_latency_us=40.0))
    # pcqat is smaller but as slow as the baseline; the fp50 + PCQAT node is smaller and fast but 6 points less accurate
    assert chosen == "filter_pruned_50_qat"
    assert {n.name for n in nodes if n.meets_targets} == {"filter_pruned_50", "filter_pruned_50_qat"}
    assert "latency 64 > 40 us" in next(n for n in nodes if n.name == "pcqat").misses
    # without the latency target the smallest file wins, whatever its MACs
    assert _decide(_measured_tree(), tree.Targets(max_accuracy_drop=0.01)) == "filter_pruned_50_qat"
    assert _decide(_measured_tree(), tree.Targets(max_accuracy_drop=0.1, max_latency_us=40.0)) == "filter_pruned_50_pcqat"
    assert _decide(_measured_tree(), tree.Targets(max_accuracy_drop=0.01, max_latency_us=20.0)) is None


def test_markdown_and_json_show_macs_and_params_per_node():
    nodes = _measured_tree()
    nodes.append(tree.NodeResult("rnn", "RNN", "baseline", 0.9, 0.9, 10, 9, 1.0, 1.0, 0.0, False, macs_uncounted=["lstm"]))
    report = tree.TreeReport(nodes, "filter_pruned_50", {"targets": {"max_latency_us": 40.0}})
    md = report.to_markdown()
    header = md.splitlines()[2]
    assert "| MACs | params |" in header
    assert "| **filter_pruned_50** | 90.00 | 90.00 | 307,648 | 30,764 |" in md
    assert "| rnn | 90.00 | 90.00 | n/a (lstm) | n/a |" in md.replace("RNN", "rnn")
    data = json.loads(report.to_json())
    assert data["nodes"][4]["macs"] == 307_648 and data["nodes"][-1]["macs"] is None
    assert data["nodes"][-1]["macs_uncounted"] == ["lstm"]
    assert tree.TreeReport.from_json(report.to_json()) == report


def test_reports_written_before_macs_were_recorded_still_load():
    old = {"chosen": None, "settings": {}, "nodes": [{"name": "a", "label": "A", "parent": None, "float_top1": 0.9, "int8_top1": 0.9,
           "raw_bytes": 10, "gzip_bytes": 9, "compression": 1.0, "latency_us": 1.0, "seconds": 0.0, "meets_targets": True}]}
    (node,) = tree.TreeReport.from_json(json.dumps(old)).nodes
    assert node.macs is None and format_macs(node) == "n/a"
