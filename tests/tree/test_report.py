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


def _timed(name, gzip, int8_us, float32_us, acc=0.9, parent="baseline"):
    node = _node(name, gzip, int8_us, 1000, acc=acc, parent=parent)
    node.float32_latency_us, node.float32_top1 = float32_us, acc + 0.002
    node.float32_raw_bytes, node.float32_gzip_bytes = 8 * gzip, 4 * gzip
    node.int8_slower = int8_us > 1.05 * float32_us
    return node


def _judged(nodes, targets, allow_float32=False):
    for n in nodes:
        targets.judge(n, nodes[0].float_top1, allow_float32)
    return choose(nodes)


def test_where_int8_is_slower_than_float32_the_report_says_so_and_float32_can_meet_a_latency_target():
    # A CPU where every int8 file runs slower than its float32 file (as issue #26 reported for a narrow residual CNN).
    def measured():
        return [_timed("baseline", 100_000, 40.0, 25.0, acc=0.90, parent=None), _timed("pcqat", 30_000, 39.0, 24.0),
                _timed("filter_pruned_50", 50_000, 39.0, 12.4)]

    targets = tree.Targets(max_accuracy_drop=0.01, max_latency_us=30.0)
    nodes = measured()
    assert _judged(nodes, targets) is None  # judged by the int8 files: no node is fast enough
    assert all("latency 39 > 30 us" in n.misses or "latency 40 > 30 us" in n.misses for n in nodes)
    nodes = measured()
    # allowed, every node's float32 file meets 30 us; the smallest deployed file wins (float32 gzip = 4x int8 gzip here)
    assert _judged(nodes, targets, allow_float32=True) == "pcqat"
    assert [n.deploy_format for n in nodes] == ["float32"] * 3
    report = tree.TreeReport(nodes, "pcqat", {"targets": {"max_latency_us": 30.0}})
    md = report.to_markdown()
    assert "smallest float32 .tflite (gzip bytes: 120,000)" in md
    assert "int8 runs slower than float32 (batch 1) for: baseline (40.0 vs 25.0 us), pcqat (39.0 vs 24.0 us)" in md
    assert tree.TreeReport.from_json(report.to_json()) == report
    # a tighter target only the filter-pruned float32 file meets
    nodes = measured()
    assert _judged(nodes, tree.Targets(max_accuracy_drop=0.01, max_latency_us=20.0), allow_float32=True) == "filter_pruned_50"
    assert "float32 latency 24 > 20 us" not in nodes[1].misses and "latency 39 > 20 us" in nodes[1].misses


def test_a_node_without_float32_figures_is_judged_by_its_int8_file_only():
    node = _node("old", 10, 50.0, 100)  # a report written before float32 latency was measured
    tree.Targets(max_latency_us=30.0).judge(node, 0.9, allow_float32=True)
    assert node.deploy_format == "int8" and node.misses == ["latency 50 > 30 us"]
