"""Constraint kinds: each derives, projects, pins zeros, checks and describes itself, and saves its state."""

import warnings

import keras
import numpy as np
import pytest
from keras import ops

import collabopt.tflite as ct
from collabopt.layers import WeightSpec
from collabopt.preserve import (
    CLUSTERS,
    SPARSITY,
    ConstraintKind,
    PreserveWrapper,
    StateVariable,
    get_kind,
    kind_registered,
    known_kinds,
)
from collabopt.preserve import zero_mask
from collabopt.tflite.inspection import TensorStats
from collabopt.transform import map_layers
from tests.conftest import rand

#: Runs unchanged on JAX and PyTorch too (CI: KERAS_BACKEND=jax / torch; see README).
pytestmark = pytest.mark.every_backend

SPEC = WeightSpec("kernel", (-1,), -2)


def _stats(values, per_channel=False):
    """Real TensorStats of a constant tensor with ``values`` (channels on the last axis)."""
    channels = values.reshape(-1, values.shape[-1]).T
    return TensorStats(
        name="t",
        dtype="float32",
        shape=values.shape,
        is_weight=True,
        zeros_fraction=float(np.mean(values == 0)),
        unique_values=len(np.unique(values)),
        max_unique_per_channel=max(len(np.unique(c)) for c in channels),
        scales=(0.1,) * values.shape[-1] if per_channel else (0.1,),
        zero_points=(0,),
        quantized_dimension=0,
    )


def test_sparsity_kind_derives_projects_checks_and_describes():
    w = rand(6, 4)
    w[:3] = 0.0
    state, warning = SPARSITY.derive(w, SPEC, {})
    assert warning is None
    np.testing.assert_array_equal(state["mask"], (w != 0).astype("float32"))
    projected = ops.convert_to_numpy(SPARSITY.project(state, rand(6, 4, seed=1), SPEC))
    assert np.all(projected[:3] == 0) and np.all(projected[3:] != 0)
    np.testing.assert_array_equal(SPARSITY.zero_mask(state), state["mask"])
    assert SPARSITY.expected(state) == 0.5
    assert SPARSITY.check(state, _stats(w)) == (True, 0.5)
    holds, found = SPARSITY.check(state, _stats(rand(6, 4, seed=2)))
    assert not holds and found == 0.0
    assert SPARSITY.check(state, None) == (False, None)
    assert SPARSITY.describe(0.5, bound=True) == "50.0% zeros"
    assert SPARSITY.describe(None) == "no tensor"
    assert SPARSITY.detect(w, SPEC) == {} and SPARSITY.detect(rand(6, 4), SPEC) is None


def test_clusters_kind_derives_projects_checks_and_describes():
    w = np.tile(np.array([-1.0, 0.5, 2.0, 0.5], "float32"), (8, 1))  # 3 values per tensor
    state, warning = CLUSTERS.derive(w, SPEC, {})
    assert warning is None and sorted(state["centroids"].tolist()) == [-1.0, 0.5, 2.0]
    np.testing.assert_array_equal(ops.convert_to_numpy(CLUSTERS.project(state, rand(8, 4), SPEC)), w)
    assert CLUSTERS.zero_mask(state) is None  # clusters pin no zeros
    assert CLUSTERS.expected(state) == 3.0
    assert CLUSTERS.check(state, _stats(w)) == (True, 3.0)
    assert CLUSTERS.check(state, _stats(rand(8, 4))) == (False, 32.0)
    # per-channel quantized or rescaled channels: counted per channel
    assert CLUSTERS.check(state, _stats(rand(8, 4)), channels_rescaled=True) == (False, 8.0)
    assert CLUSTERS.describe(3.0, bound=True) == "<= 3 values" and CLUSTERS.describe(3.0) == "3 values"
    per_channel, _ = CLUSTERS.derive(w, SPEC, {"per_channel": True})
    assert per_channel["centroids"].shape == (4, 1)
    np.testing.assert_array_equal(ops.convert_to_numpy(CLUSTERS.project(per_channel, w, SPEC)), w)
    _, warning = CLUSTERS.derive(rand(40, 10), SPEC, {})
    assert "does not look clustered" in warning


def test_zero_mask_combines_every_kind_on_a_weight():
    dense = keras.layers.Dense(4)
    dense.build((None, 6))
    kernel = rand(6, 4)
    kernel[0] = 0.0
    dense.kernel.assign(kernel)
    kept = PreserveWrapper(dense, {"kernel": ["sparsity", "clusters"]})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        kept.build((None, 6))
    np.testing.assert_array_equal(ops.convert_to_numpy(zero_mask(kept, "kernel")), (kernel != 0).astype("float32"))
    assert zero_mask(dense, "kernel") is None


@pytest.mark.parametrize("kind", ["sparsity", "clusters"])
def test_kind_state_round_trips_through_keras_files(tmp_path, kind):
    inputs = keras.Input((6,))
    dense = keras.layers.Dense(4, name="d")
    model = keras.Model(inputs, dense(inputs))
    kernel = np.round(rand(6, 4) * 2) / 2  # few values, some zeros
    dense.kernel.assign(kernel)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        kept = map_layers(model, lambda l: PreserveWrapper(l, {"kernel": [kind]}) if l.name == "d" else None)
        kept.build((None, 6))
        path = tmp_path / "m.keras"
        kept.save(path)
        loaded = keras.models.load_model(path)
    for a, b in zip(kept.weights, loaded.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    (constraint,) = loaded.layers[-1].recorded_constraints()["kernel"]
    assert constraint.kind is get_kind(kind)
    x = rand(3, 6)
    np.testing.assert_array_equal(ops.convert_to_numpy(kept(x)), ops.convert_to_numpy(loaded(x)))


class _Ternary(ConstraintKind):
    """A toy kind defined only here: weights in {-s, 0, s}."""

    name = "ternary_toy"

    def state_spec(self, weight_shape, spec, options):
        return {"scale": StateVariable((), "float32", True)}

    def derive(self, value, spec, options):
        return {"scale": np.float32(np.mean(np.abs(value)))}, None

    def project(self, state, weight, spec=None):
        threshold = 0.5 * state["scale"]
        return ops.where(ops.abs(weight) < threshold, 0.0, ops.sign(weight) * state["scale"])

    def expected(self, state):
        return 3.0

    def check(self, state, tensor, *, channels_rescaled=False):
        if tensor is None:
            return False, None
        return tensor.unique_values <= 3, float(tensor.unique_values)

    def describe(self, value, *, bound=False):
        return "no tensor" if value is None else f"{'<= ' if bound else ''}{int(value)} ternary values"


@pytest.mark.tensorflow_only('exports to TFLite')
def test_a_new_kind_is_verified_without_edits_elsewhere():
    # registered with register_kind for the duration of the block only
    with kind_registered(_Ternary()):
        inputs = keras.Input((8,))
        model = keras.Model(inputs, keras.layers.Dense(16, name="d")(inputs))
        kept = map_layers(model, lambda l: PreserveWrapper(l, {"kernel": ["ternary_toy"]}) if l.name == "d" else None)
        kept.build((None, 8))
        report = ct.verify(kept, ct.convert(kept, "float32"))
        (check,) = report
        assert (check.layer, check.kind, check.holds, check.found) == ("d", "ternary_toy", True, 3.0)
        assert "<= 3 ternary values" in str(report)
        # the plain model does not hold the promise
        assert not ct.verify(kept, ct.convert(model, "float32")).all_hold
    assert "ternary_toy" not in known_kinds()


def test_kind_registered_gives_a_replaced_kind_back():
    toy = type("Toy", (_Ternary,), {"name": SPARSITY.name})()
    with kind_registered(toy):
        assert get_kind(SPARSITY.name) is toy
    assert get_kind(SPARSITY.name) is SPARSITY
