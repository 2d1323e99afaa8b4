"""Channel dependency groups on residual, depthwise, concatenate, squeeze-excite and nested models."""

import keras
import pytest

from collabopt.errors import InvalidArgumentError, UnsupportedLayerError
from collabopt.transform import analyze_channels
from tests.filter_pruning.models import ALL

L = keras.layers


def _group_of(graph, name, offset=0):
    for s in graph.members[name]:
        if s.offset <= offset < s.offset + s.size:
            return graph.groups[s.group]
    raise AssertionError(name)


def test_residual_branches_are_one_group():
    graph = analyze_channels(ALL["residual"]())
    group = _group_of(graph, "stem")
    assert {n for n, _ in group.members} == {"stem", "stem_bn", "res0_b", "res1_b"}
    assert group.prunable
    assert _group_of(graph, "res0_a").members == [("res0_a", 0)]
    assert not _group_of(graph, "logits").prunable


def test_depthwise_and_batchnorm_follow_their_input_and_flatten_positions():
    graph = analyze_channels(ALL["depthwise"]())
    assert {n for n, _ in _group_of(graph, "conv1").members} == {"conv1", "bn1", "dw", "bn_dw"}
    (dense_rows,) = graph.consumers["logits"]
    assert (dense_rows.positions, dense_rows.total, dense_rows.size) == (16, 12, 12)
    assert graph.consumers["pw"][0].group == _group_of(graph, "conv1").id


def test_concatenate_gives_offsets():
    graph = analyze_channels(ALL["concatenate"]())
    a, b = graph.members["cat_bn"]
    assert (a.offset, a.size, b.offset, b.size) == (0, 6, 6, 10)
    assert [(s.offset, s.size) for s in graph.consumers["after"]] == [(0, 6), (6, 10)]
    assert a.group == _group_of(graph, "branch_a").id and b.group == _group_of(graph, "branch_b").id


def test_squeeze_excite_expand_is_tied_to_the_main_branch():
    graph = analyze_channels(ALL["squeeze_excite"]())
    group = _group_of(graph, "main")
    assert {n for n, _ in group.members} == {"main", "se_expand"}
    assert group.prunable  # sigmoid(0) != 0, but it is multiplied by the zero channel
    assert _group_of(graph, "se_reduce").prunable


def test_nested_models_are_followed():
    graph = analyze_channels(ALL["nested"]())
    assert graph.consumers["inner_conv"][0].group == _group_of(graph, "outer_conv").id
    assert _group_of(graph, "inner_conv").prunable


def test_channels_that_cannot_shrink_are_reported():
    x = keras.Input((8, 8, 4))
    a = L.Conv2D(4, 1, name="tied_to_input")(x)
    h = L.Add(name="add_input")([x, a])
    b = L.Conv2D(6, 1, name="before_norm")(h)
    h = L.LayerNormalization(name="ln")(b)
    c = L.Conv2D(5, 1, name="sigmoid_out")(h)
    d = L.Conv2D(3, 1, name="reads_sigmoid")(L.Activation("sigmoid")(c))  # sigmoid(0) = 0.5 reaches a conv
    graph = analyze_channels(keras.Model(x, L.Flatten()(d)))
    assert "model input" in _group_of(graph, "tied_to_input").frozen
    assert "'ln'" in _group_of(graph, "before_norm").frozen
    assert "not zero" in _group_of(graph, "sigmoid_out").frozen
    assert "model output" in _group_of(graph, "reads_sigmoid").frozen
    assert "left alone" in graph.report()


def test_concatenated_flat_vectors_are_left_alone():
    x = keras.Input((4, 4, 1))
    a = L.Flatten()(L.Conv2D(4, 1, name="a")(x))
    b = L.Flatten()(L.Conv2D(4, 1, name="b")(x))
    graph = analyze_channels(keras.Model(x, L.Dense(2)(L.Concatenate()([a, b]))))
    assert not _group_of(graph, "a").prunable and not _group_of(graph, "b").prunable


def test_bad_models_are_refused():
    class Sub(keras.Model):
        def call(self, x):
            return x

    with pytest.raises(UnsupportedLayerError, match="Functional"):
        analyze_channels(Sub())
    inner = keras.Sequential([keras.Input((4,)), L.Dense(4, name="same")], name="inner")
    x = keras.Input((4,))
    clash = keras.Model(x, L.Dense(2, name="out")(inner(L.Dense(4, name="same")(x))))
    with pytest.raises(InvalidArgumentError, match="'same'"):
        analyze_channels(clash)
