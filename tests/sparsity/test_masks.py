"""Block pruning reaches its target exactly or is refused (issue 14: a 10x6 Dense at 50% used to end at 30%)."""

import keras
import numpy as np
import pytest

import collabopt.keras as co
from collabopt.errors import InvalidArgumentError
from collabopt.sparsity import masks
from tests.conftest import rand


def _dense_10x6():
    return keras.Sequential([keras.Input((10,)), keras.layers.Dense(6, name="fc")])


def test_a_block_that_does_not_tile_the_weight_is_refused_with_one_that_does():
    model = _dense_10x6()
    before = [w.numpy().copy() for w in model.weights]
    with pytest.raises(
        InvalidArgumentError,
        match=r"layer 'fc' \(Dense\), weight 'kernel' of shape \(10, 6\): block_size=\(3, 4\) does not tile it .* \(e\.g\. \(2, 3\)\)",
    ):
        co.prune_low_magnitude(model, co.ConstantSparsity(0.5, 0, frequency=1), block_size=(3, 4))
    for a, b in zip(before, model.weights):
        np.testing.assert_array_equal(a, b.numpy())


@pytest.mark.parametrize("block", [(2, 3), (5, 2), (10, 1), (1, 6)])
def test_a_tiling_block_reaches_the_target_sparsity_exactly(block):
    pruned = co.prune_low_magnitude(_dense_10x6(), co.ConstantSparsity(0.5, 0, frequency=1), block_size=block)
    pruned.compile("sgd", "mse")
    pruned.train_on_batch(rand(4, 10), rand(4, 6))
    kernel = co.strip_pruning(pruned).get_layer("fc").kernel.numpy()
    assert np.mean(kernel == 0) == 0.5
    bh, bw = block
    blocks = kernel.reshape(10 // bh, bh, 6 // bw, bw).transpose(0, 2, 1, 3).reshape(-1, bh * bw)
    assert set(np.count_nonzero(blocks, axis=1).tolist()) <= {0, bh * bw}


def test_block_mask_zeroes_whole_blocks_by_pooled_magnitude():
    weight = np.arange(1, 25, dtype="float32").reshape(4, 6)
    mask = keras.ops.convert_to_numpy(masks.block_mask(weight, 0.5, (2, 3), "AVG"))
    # the two blocks of the top rows have the smallest average magnitudes
    np.testing.assert_array_equal(mask[:2], 0)
    np.testing.assert_array_equal(mask[2:], 1)
