"""strip_pruning of a filter-pruned model: physically smaller, plain Keras, same outputs."""

import json
import zipfile

import keras
import numpy as np
import pytest

import collabopt.keras as co
from collabopt.errors import InvalidArgumentError, OrderError
from collabopt.transform import shrink_model
from tests.conftest import rand
from tests.filter_pruning.models import ALL


def _pruned_and_trained(build, ratio=0.5):
    model = build()
    pruned = co.prune_filters(model, pruning_ratio=ratio)
    pruned.compile(optimizer="adam", loss="mse")
    x = rand(16, *model.input_shape[1:])
    pruned.fit(x, rand(16, *model.output_shape[1:], seed=1), epochs=1, batch_size=8, verbose=0)
    return model, pruned, x


@pytest.mark.parametrize("name", sorted(ALL))
def test_stripped_model_is_smaller_plain_and_computes_the_same(name):
    model, pruned, x = _pruned_and_trained(ALL[name])
    small = co.strip_pruning(pruned)
    np.testing.assert_allclose(small.predict(x, verbose=0), pruned.predict(x, verbose=0), atol=1e-5)
    assert small.count_params() < model.count_params()
    assert co.count_macs(small) < co.count_macs(model)
    for layer in small._flatten_layers(include_self=False):
        assert type(layer).__module__.startswith("keras."), f"{layer.name} is {type(layer)}"


def test_depthwise_chain_shrinks_together():
    _, pruned, _ = _pruned_and_trained(ALL["depthwise"])
    small = co.strip_pruning(pruned)
    assert small.get_layer("conv1").filters == 4
    assert small.get_layer("bn1").gamma.shape == (4,)
    assert small.get_layer("dw").kernel.shape == (3, 3, 4, 1)
    assert small.get_layer("pw").kernel.shape == (1, 1, 4, 6)
    assert small.get_layer("logits").kernel.shape == (4 * 4 * 6, 3)  # Flatten: positions x kept channels


def test_concatenate_and_residual_layouts():
    _, pruned, _ = _pruned_and_trained(ALL["concatenate"])
    small = co.strip_pruning(pruned)
    assert small.get_layer("branch_a").filters == 3 and small.get_layer("branch_b").filters == 5
    assert small.get_layer("cat_bn").gamma.shape == (8,)
    assert small.get_layer("after").kernel.shape[2] == 8
    _, pruned, _ = _pruned_and_trained(ALL["residual"])
    small = co.strip_pruning(pruned)
    # Every branch of the residual stream loses the same channels.
    assert {small.get_layer(n).filters for n in ("stem", "res0_b", "res1_b")} == {4}


def test_stripped_model_saves_without_collabopt_and_fine_tunes(tmp_path):
    _, pruned, x = _pruned_and_trained(ALL["squeeze_excite"])
    small = co.strip_pruning(pruned)
    path = tmp_path / "small.keras"
    small.save(path)
    with zipfile.ZipFile(path) as z:
        config = z.read("config.json").decode()
    assert "collabopt" not in config
    loaded = keras.models.load_model(path)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), small.predict(x, verbose=0))
    loaded.compile(optimizer="adam", loss="mse")
    before = [w.copy() for w in loaded.get_weights()]
    loaded.fit(x, rand(16, 3, seed=2), epochs=1, verbose=0)
    assert any(not np.array_equal(a, b) for a, b in zip(before, loaded.get_weights()))
    assert json.loads(config)["class_name"] == "Functional"


def test_the_input_model_is_not_modified():
    _, pruned, x = _pruned_and_trained(ALL["residual"])
    before = pruned.predict(x, verbose=0)
    co.strip_pruning(pruned)
    np.testing.assert_array_equal(pruned.predict(x, verbose=0), before)
    assert type(pruned.get_layer("prune_filters_stem")).__name__ == "PruneFilters"


def test_shrink_model_refuses_wrapped_models_and_bad_masks():
    _, pruned, _ = _pruned_and_trained(ALL["sequential"])
    with pytest.raises(OrderError, match="still wrapped"):
        shrink_model(pruned, {})
    plain = ALL["sequential"]()
    with pytest.raises(InvalidArgumentError, match="'conv'"):
        shrink_model(plain, {"conv": np.zeros(3, bool)})


def test_shrink_model_keeps_channels_some_member_still_uses():
    plain = ALL["residual"]()
    # Only the stem says channel 0 is pruned; the residual branches still write it.
    small = shrink_model(plain, {"stem": np.eye(8, dtype=bool)[0]})
    assert small.get_layer("stem").filters == 8
