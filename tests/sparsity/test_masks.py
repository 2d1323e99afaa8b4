"""Block pruning reaches its target exactly or is refused (issue 14: a 10x6 Dense at 50% used to end at 30%)."""

import keras
import numpy as np
import pytest

import collabopt.keras as co
from collabopt.errors import InvalidArgumentError
from collabopt.sparsity import masks
from tests.conftest import rand

#: Runs unchanged on JAX and PyTorch too (CI: KERAS_BACKEND=jax / torch; see README).
pytestmark = pytest.mark.every_backend


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


@pytest.mark.parametrize("sparsity", [0.0, 0.3, 0.5, 0.77, 1.0])
def test_magnitude_mask_zeroes_exactly_the_k_smallest_with_ties_lowest_index_first(sparsity):
    # The linear-time selection must zero the same weights as a stable sort:
    # exactly round(s * n) of them, the smallest, and among equal magnitudes
    # the lowest indices first (quantized or clustered weights tie a lot).
    rng = np.random.default_rng(1)
    for weight in (rng.integers(-3, 4, (7, 9)).astype("float32"), rand(5, 4, 3), np.zeros((4, 4), "float32")):
        mask = np.asarray(masks.magnitude_mask(weight, sparsity)).reshape(-1)
        n = weight.size
        k = int(np.round(np.float32(sparsity) * n))
        ranks = np.empty(n, int)
        ranks[np.argsort(np.abs(weight).reshape(-1), kind="stable")] = np.arange(n)
        np.testing.assert_array_equal(mask, (ranks >= k).astype("float32"))


def test_magnitude_mask_of_a_large_kernel_is_exact():
    weight = rand(3, 3, 256, 512)
    mask = np.asarray(masks.magnitude_mask(weight, 0.5))
    assert mask.sum() == weight.size // 2
    assert np.abs(weight)[mask == 0].max() <= np.abs(weight)[mask == 1].min()
