"""Finding a weight's tensors by content: renamed, transposed, split along output channels; never twice."""

import numpy as np

from collabopt.tflite.attribution import Piece, Weight, attribute, combined_stats
from collabopt.tflite.inspection import TensorStats


def _int8(name, real, per_channel=False):
    """The TensorStats of ``real`` stored as symmetric int8, per tensor or per row (axis 0)."""
    real = np.asarray(real, np.float64)
    if per_channel:
        scales = np.abs(real).reshape(real.shape[0], -1).max(axis=1) / 127
        scales[scales == 0] = 1.0
        stored = np.round(real / scales.reshape((-1,) + (1,) * (real.ndim - 1))).astype(np.int8)
    else:
        scales = np.array([np.abs(real).max() / 127])
        stored = np.round(real / scales[0]).astype(np.int8)
    rows = stored.reshape(stored.shape[0], -1)
    return TensorStats(
        name=name,
        dtype="int8",
        shape=stored.shape,
        is_weight=True,
        zeros_fraction=float(np.mean(stored == 0)),
        unique_values=int(np.unique(stored).size),
        max_unique_per_channel=int(max(np.unique(r).size for r in rows)),
        scales=tuple(float(s) for s in scales),
        zero_points=(0,) * len(scales),
        quantized_dimension=0,
        values=stored,
    )


def _pruned(shape, seed):
    """A (in, out) kernel with half its values zero, as channel rows (out, in), and its zeros."""
    rng = np.random.default_rng(seed)
    kernel = rng.normal(size=shape)
    kernel[np.abs(kernel) < np.median(np.abs(kernel))] = 0.0
    rows = kernel.T.copy()
    return rows, rows == 0


def test_equal_sized_weights_get_their_own_renamed_transposed_tensors():
    forward, forward_zeros = _pruned((3, 16), 0)
    backward, backward_zeros = _pruned((3, 16), 1)
    weights = [
        Weight("f", {"bi"}, "forward/kernel", forward, forward_zeros),
        Weight("b", {"bi"}, "backward/kernel", backward, backward_zeros),
    ]
    # The file lists the backward kernel first, under names that mention neither; the forward one is stored (in, out).
    stats = [_int8("arith.constant", backward, per_channel=True), _int8("arith.constant1", forward.T)]
    found = attribute(stats, weights)
    assert [p.tensor.name for p in found["f"]] == ["arith.constant1"] and found["f"][0].layout == "columns"
    assert [p.tensor.name for p in found["b"]] == ["arith.constant"] and found["b"][0].layout == "rows"


def test_a_tensor_with_other_content_is_not_attributed():
    weight, zeros = _pruned((4, 12), 0)
    unrelated = np.random.default_rng(5).normal(size=(12, 4))
    assert attribute([_int8("arith.constant", unrelated)], [Weight("k", {"gru"}, "kernel", weight, zeros)]) == {}
    # The same weight before pruning: its values match, its zeros do not (the recorded zeros count as much).
    dense = weight + (weight == 0) * np.random.default_rng(6).normal(size=weight.shape)
    assert attribute([_int8("arith.constant", dense)], [Weight("k", {"gru"}, "kernel", weight, zeros)]) == {}


def test_gates_stored_as_three_tensors_are_reassembled_into_one():
    kernel, zeros = _pruned((4, 12), 2)  # rows: 12 output channels = 3 gates of 4
    pieces = [_int8(f"gate{i}", kernel[4 * i : 4 * i + 4]) for i in (2, 0, 1)]  # per-tensor scale each
    found = attribute(pieces, [Weight("k", {"gru"}, "kernel", kernel, zeros)])
    assert [(p.tensor.name, p.start, p.stop) for p in found["k"]] == [
        ("gate0", 0, 4),
        ("gate1", 4, 8),
        ("gate2", 8, 12),
    ]
    merged = combined_stats(found["k"], Weight("k", {"gru"}, "kernel", kernel, zeros))
    assert merged.shape == (12, 4) and merged.name == "gate0 + gate1 + gate2"
    assert merged.zeros_fraction == 0.5
    # Different scales per gate: one scale per channel, so clusters are counted per channel.
    assert merged.per_channel and len(merged.scales) == 12
    np.testing.assert_allclose(merged.dequantized(), kernel, atol=max(merged.scales))


def test_one_piece_is_the_tensor_itself_and_a_weight_needs_all_its_channels():
    kernel, zeros = _pruned((4, 12), 3)
    tensor = _int8("t", kernel)
    weight = Weight("k", {"x"}, "kernel", kernel, zeros)
    assert combined_stats([Piece(tensor, 0, 12, "rows")], weight) is tensor
    # Two of three gates in the file: the weight is not found (and neither piece is claimed).
    assert attribute([_int8("g0", kernel[:4]), _int8("g1", kernel[4:8])], [weight]) == {}


def test_a_name_is_trusted_only_when_the_content_agrees_or_nothing_else_matches():
    kernel, zeros = _pruned((1, 16), 4)  # a (1, 16) kernel has the size of its layer's bias
    weight = Weight("k", {"lstm"}, "lstm_cell/kernel", kernel, zeros)
    bias = _int8("model/lstm_1/lstm_cell_1/BiasAdd/ReadVariableOp", np.random.default_rng(7).normal(size=16))
    found = attribute([bias, _int8("arith.constant", kernel)], [weight])
    assert [p.tensor.name for p in found["k"]] == ["arith.constant"]
    # A file exported before pruning: nothing matches the recorded zeros, so the named tensor is checked (and lacks them).
    dense = kernel + (kernel == 0) * np.random.default_rng(8).normal(size=kernel.shape)
    found = attribute([_int8("model/lstm_1/MatMul", dense)], [weight])
    assert [p.tensor.name for p in found["k"]] == ["model/lstm_1/MatMul"]
