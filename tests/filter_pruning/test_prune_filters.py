"""prune_filters: group scoring, masks as state, schedules, saving, errors."""

import warnings

import keras
import numpy as np
import pytest

import collabopt.keras as co
from collabopt.errors import InvalidArgumentError, InvalidTypeError, OrderError
from collabopt.filter_pruning import channel_scores
from tests.conftest import rand
from tests.filter_pruning.models import ALL

#: Runs unchanged on JAX and PyTorch too (CI: KERAS_BACKEND=jax / torch; see README).
pytestmark = pytest.mark.every_backend

L = keras.layers


def _masks(model):
    return {l.base_layer.name: l.channel_mask.numpy() for l in model.layers if isinstance(l, co.PruneFilters)}


def test_each_group_masks_the_same_lowest_scoring_channels():
    model = ALL["residual"]()
    pruned = co.prune_filters(model, pruning_ratio=0.5)
    masks = _masks(pruned)
    for name in ("stem", "stem_bn", "res0_b", "res1_b"):
        np.testing.assert_array_equal(masks[name], masks["stem"])
    assert masks["stem"].sum() == 4 and masks["res0_a"].sum() == 4
    assert "logits" not in masks
    # The group's score is the sum of its members' normalised L2 scores.
    def rows(n):
        return np.moveaxis(model.get_layer(n).kernel.numpy(), -1, 0).reshape(8, -1)

    total = sum(channel_scores(rows(n), "l2") for n in ("stem", "res0_b", "res1_b"))
    assert set(np.flatnonzero(masks["stem"] == 0)) == set(np.argsort(total)[:4])


@pytest.mark.tensorflow_only('reads TensorFlow tensors with .numpy()')
def test_pruned_channels_are_zero_during_training_and_inference():
    pruned = co.prune_filters(ALL["depthwise"](), pruning_ratio=0.5)
    probe = keras.Model(pruned.inputs, pruned.get_layer("prune_filters_bn_dw").output)
    mask = _masks(pruned)["bn_dw"]
    for training in (True, False):
        out = probe([rand(2, 8, 8, 1)], training=training).numpy()
        assert np.all(out[..., mask == 0] == 0) and np.any(out[..., mask == 1] != 0)


@pytest.mark.parametrize("criterion", ["l1", "l2", "geometric_median"])
def test_criteria(criterion):
    model = ALL["sequential"]()
    pruned = co.prune_filters(model, pruning_ratio=0.25, criterion=criterion)
    assert _masks(pruned)["conv"].sum() == 6
    assert pruned.get_layer("prune_filters_conv").criterion == criterion


def test_geometric_median_prunes_the_redundant_channel_not_the_small_one():
    rows = np.array([[1.0, 0.0], [1.0, 0.01], [0.0, 5.0], [-3.0, 0.0]])
    assert np.argmin(channel_scores(rows, "geometric_median")) in (0, 1)
    assert np.argmin(channel_scores(rows, "l2")) in (0, 1)
    rows[1] = [0.1, 0.0]  # small but far from nothing else: l2 prunes it, FPGM keeps the outlier
    assert np.argmin(channel_scores(rows, "l2")) == 1


def test_schedule_ramps_during_fit_without_callback_and_resumes_after_save(tmp_path):
    schedule = co.PolynomialRatio(0.0, 0.5, begin_step=0, end_step=4, power=1)
    pruned = co.prune_filters(ALL["sequential"](), pruning_schedule=schedule)
    assert _masks(pruned)["conv"].sum() == 8
    pruned.compile(optimizer="adam", loss="mse")
    x, y = rand(16, 8, 8, 1), rand(16, 3, seed=1)
    seen = []
    for _ in range(3):
        pruned.fit(x, y, batch_size=8, epochs=1, verbose=0)
        seen.append(_masks(pruned)["conv"].copy())
    kept = [int(m.sum()) for m in seen]
    assert kept[0] > kept[-1] == 4 and kept == sorted(kept, reverse=True)
    assert np.all(seen[-1] <= seen[0])  # pruned channels stay pruned
    path = tmp_path / "pruned.keras"
    pruned.save(path)
    loaded = keras.models.load_model(path)
    assert int(loaded.get_layer("prune_filters_conv").pruning_step.numpy()) == 6
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), pruned.predict(x, verbose=0))
    np.testing.assert_array_equal(_masks(loaded)["conv"], _masks(pruned)["conv"])


def test_input_model_is_not_modified():
    model = ALL["concatenate"]()
    before = [w.copy() for w in model.get_weights()]
    co.prune_filters(model, 0.5)
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))
    assert not any(isinstance(l, co.PruneFilters) for l in model.layers)


def test_errors_name_the_argument():
    model = ALL["sequential"]()
    with pytest.raises(InvalidArgumentError, match="pruning_ratio"):
        co.prune_filters(model, pruning_ratio=1.0)
    with pytest.raises(InvalidArgumentError, match="criterion"):
        co.prune_filters(model, criterion="l3")
    with pytest.raises(InvalidTypeError, match="pruning_schedule"):
        co.prune_filters(model, pruning_schedule=co.ConstantSparsity(0.5, 0))
    with pytest.raises(OrderError, match="prune_filters -> strip_pruning"):
        co.prune_filters(co.prune_filters(model))
    only_logits = keras.Sequential([keras.Input((4,)), L.Dense(2)])
    with pytest.raises(InvalidArgumentError, match="no output channels"):
        co.prune_filters(only_logits)


def test_unhandled_layers_are_reported_once():
    x = keras.Input((8, 8, 1))
    h = L.Conv2D(4, 3, name="conv")(x)
    h = L.Conv2D(4, 3, name="c2")(h)
    h = L.LayerNormalization(name="ln")(h)
    model = keras.Model(x, L.Dense(2, name="logits")(L.Flatten()(h)))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pruned = co.prune_filters(model)
    assert any("c2" in str(w.message) and "'ln'" in str(w.message) for w in caught)
    assert set(_masks(pruned)) == {"conv"}


def test_count_macs_and_filter_groups():
    model = ALL["sequential"]()
    assert co.count_macs(model) == 6 * 6 * 9 * 8 + 72 * 16 + 16 * 3
    small = co.strip_pruning(co.prune_filters(model, 0.5))
    assert co.count_macs(small) == 6 * 6 * 9 * 4 + 36 * 8 + 8 * 3  # conv and fc halve; fc's rows follow the conv
    assert "prunable" in co.filter_groups(model).report()


@pytest.mark.tensorflow_only('exports to TFLite')
def test_plain_ops_of_a_functional_graph_are_left_alone_and_the_rest_shrinks():
    """Channels reaching ``keras.ops`` calls (not layers) are frozen; others are pruned, stripped and exported."""
    import collabopt.tflite as ct
    from keras import ops

    x = keras.Input((8, 8, 3))
    a = L.Conv2D(8, 3, padding="same", name="free")(x)  # reaches only layers
    a = L.Conv2D(8, 3, padding="same", name="touched")(L.ReLU()(a))
    h = ops.relu(a) * 0.5 + 1.0  # plain ops: 'touched' keeps its channels
    model = keras.Model(x, L.Dense(2, name="logits")(L.GlobalAveragePooling2D()(h)))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pruned = co.prune_filters(model, co.ConstantRatio(0.5))  # a schedule in the ratio's place
    assert any("touched" in str(w.message) and "operation 'relu' (a keras.ops call" in str(w.message) for w in caught)
    assert set(_masks(pruned)) == {"free"}
    data = rand(4, 8, 8, 3)
    small = co.strip_pruning(pruned)
    assert small.get_layer("free").filters == 4 and small.get_layer("touched").filters == 8
    np.testing.assert_allclose(small.predict(data, verbose=0), pruned.predict(data, verbose=0), atol=1e-5)
    assert ct.convert(pruned, "int8", representative_data=data).float_islands() == []


@pytest.mark.parametrize("multiple,kept", [(1, 10), (4, 12), (8, 16), (16, 16), (32, 24)])
def test_channel_multiple_rounds_the_kept_channels_up(multiple, kept):
    x = keras.Input((8, 8, 1))
    y = keras.layers.Conv2D(24, 3, name="conv")(x)
    model = keras.Model(x, keras.layers.Dense(2, name="logits")(keras.layers.Flatten()(y)))
    pruned = co.prune_filters(model, 0.6, channel_multiple=multiple)  # 0.6 of 24: 14 pruned, 10 kept
    assert co.strip_pruning(pruned).get_layer("conv").filters == kept
    reloaded = keras.models.clone_model(pruned)  # the setting is part of the wrapper's config
    assert reloaded.get_layer("prune_filters_conv").channel_multiple == multiple


@pytest.mark.parametrize("bad", [0, -4, 2.5, True, "8"])
def test_channel_multiple_must_be_a_positive_integer(bad):
    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(8, 3), keras.layers.Flatten(), keras.layers.Dense(2)])
    with pytest.raises(InvalidArgumentError, match=f"channel_multiple must be an integer >= 1.*received {bad!r}"):
        co.prune_filters(model, 0.5, channel_multiple=bad)
