import keras
import numpy as np
import pytest

import collabopt.keras as co
import collabopt.tflite as ct
from tests.conftest import pcqat_trained
from collabopt.errors import InvalidFileError, InvalidTypeError


@pytest.fixture(scope="module")
def pruned_and_file():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(4, 3, name="conv"), keras.layers.Flatten(), keras.layers.Dense(3, name="fc")])
    pruned = co.prune_low_magnitude(model, co.ConstantSparsity(0.5, 0, frequency=1))
    x = np.random.default_rng(0).random((16, 8, 8, 1)).astype("float32")
    pruned.compile("adam", "mse")
    pruned.fit(x, np.zeros((16, 3)), epochs=1, batch_size=8, verbose=0)
    return pruned, ct.convert(pruned, "int8", x)


def test_verify_accepts_a_model_a_path_or_bytes(pruned_and_file, tmp_path):
    pruned, tfl = pruned_and_file
    path = tfl.save(tmp_path / "p.tflite")
    reports = [ct.verify(pruned, tfl), ct.verify(pruned, path), ct.verify(pruned, str(path)), ct.verify(pruned, tfl.content)]
    assert all(r.all_hold for r in reports)
    assert len({str(r) for r in reports}) == 1


def test_verify_refuses_other_arguments_clearly(pruned_and_file, tmp_path):
    pruned, _ = pruned_and_file
    with pytest.raises(InvalidTypeError, match="verify: expected a TFLiteModel .* received dict"):
        ct.verify(pruned, {"file": "x.tflite"})
    with pytest.raises(InvalidFileError, match="no such .tflite file"):
        ct.verify(pruned, tmp_path / "x.tflite")


def test_each_weight_is_matched_to_its_own_tensor():
    """MultiHeadAttention's query/key/value kernels have one size; each is checked in its own tensor."""
    import keras
    import numpy as np

    import collabopt.keras as co
    import collabopt.tflite as ct

    x = keras.Input((6, 8))
    attention = keras.layers.MultiHeadAttention(2, 4, name="att")(x, x)
    model = keras.Model(x, keras.layers.GlobalAveragePooling1D()(attention))
    pruned = co.prune_low_magnitude(model, co.ConstantSparsity(0.5, 0, frequency=1))
    pruned(np.random.default_rng(0).random((2, 6, 8)).astype("float32"), training=True)
    report = ct.verify(pruned, ct.convert(co.strip_pruning(pruned), "float32"))
    assert report.all_hold and len(report) == 4
    assert len({c.tensor for c in report}) == 4


# --- attribution by content: renamed, transposed and split kernels -------------------------------


def _recurrent(cell, bidirectional):
    """A few-unit (Bi)LSTM/GRU over a 5-step sequence, then two Dense layers."""
    layer = {"lstm": keras.layers.LSTM, "gru": keras.layers.GRU}[cell](4, name=cell)
    inputs = keras.Input((5, 3))
    x = (keras.layers.Bidirectional(layer, name="bi") if bidirectional else layer)(inputs)
    x = keras.layers.Dense(6, activation="relu", name="fc")(x)
    return keras.Model(inputs, keras.layers.Dense(3, name="logits")(x))


def _pcqat_int8(model, x, y):
    """prune 50% -> sparsity-preserving cluster 8 -> QAT, a couple of steps each, then int8 with representative data."""
    qat = pcqat_trained(model, x, y, 8, 1e-2, cluster_centroids_init=co.CentroidInitialization.LINEAR)
    return qat, ct.convert(qat, "int8", representative_data=x)


def _data():
    rng = np.random.default_rng(0)
    return rng.random((8, 5, 3)).astype("float32"), rng.integers(0, 3, 8)


@pytest.fixture(scope="module", params=[("gru", False), ("lstm", True)], ids=["gru", "bilstm"])
def recurrent_chain(request):
    keras.utils.set_random_seed(0)
    model = _recurrent(*request.param)
    x, y = _data()
    qat, tflite = _pcqat_int8(model, x, y)
    return model, qat, tflite, x


def _weights_to_tensors(report):
    found = {}
    for c in report:
        found.setdefault((c.layer, c.weight), set()).add(c.tensors)
    return found


def test_every_recurrent_and_dense_kernel_is_found_and_holds(recurrent_chain):
    """GRU and Bidirectional LSTM kernels (named 'arith.constant*' by the converter, stored (out, in)) are found by content."""
    _, qat, tflite, _ = recurrent_chain
    report = ct.verify(qat, tflite)
    assert report.all_hold, str(report)
    assert {c.kind for c in report} == {"sparsity", "clusters"}
    weights = _weights_to_tensors(report)
    recurrent = [w for w in weights if w[0] in ("gru", "bi")]
    assert len(recurrent) == (2 if ("gru", "gru_cell/kernel") in weights else 4)
    assert len(weights) == len(recurrent) + 2  # and fc, logits
    # One tensor set per weight (every constraint on a weight checks the same tensors) ...
    assert all(len(tensors) == 1 for tensors in weights.values())
    claimed = [name for tensors in weights.values() for name in next(iter(tensors))]
    # ... and no file tensor serves two weights.
    assert len(claimed) == len(set(claimed)) == len(weights)


def test_each_direction_gets_its_own_kernel(recurrent_chain):
    """The tensor attributed to a weight holds that weight's values (forward and backward are not swapped)."""
    from collabopt.layers import base_layer, wrapper_chain
    from collabopt.transform import iter_layers

    _, qat, tflite, _ = recurrent_chain
    report = ct.verify(qat, tflite)
    stats = {t.name: t for t in tflite.inspect()}
    trained = {}
    for layer in iter_layers(qat):
        if wrapper_chain(layer):
            for name, value in wrapper_chain(layer)[0].effective_weights().items():
                trained[(base_layer(layer).name, name)] = keras.ops.convert_to_numpy(value)
    for c in report:
        (tensor_name,) = c.tensors
        stored = stats[tensor_name].dequantized()
        kernel = trained[(c.layer, c.weight)]
        assert stored.shape == kernel.T.shape  # FULLY_CONNECTED keeps (out, in)
        scale = max(stats[tensor_name].scales)
        np.testing.assert_allclose(stored, kernel.T, atol=scale)


def test_a_file_from_the_unpruned_model_does_not_hold(recurrent_chain):
    model, qat, _, x = recurrent_chain
    dense = ct.convert(model, "int8", representative_data=x)
    report = ct.verify(qat, dense)
    assert not report.all_hold
    recurrent = [c for c in report if c.layer in ("gru", "bi") and c.kind == "sparsity"]
    assert recurrent and not any(c.holds for c in recurrent)


@keras.saving.register_keras_serializable("test_verify")
class GateKernels(keras.layers.Layer):
    """One kernel used in three slices along its output channels (as an RNN's gates): the converter stores three tensors."""

    def __init__(self, units, **kwargs):
        super().__init__(**kwargs)
        self.units = units

    def build(self, input_shape):
        self.kernel = self.add_weight(shape=(input_shape[-1], 3 * self.units), name="kernel")

    def call(self, x):
        u = self.units
        gate = keras.ops.sigmoid(x @ self.kernel[:, :u])
        return gate * keras.ops.tanh(x @ self.kernel[:, u : 2 * u]) + x @ self.kernel[:, 2 * u :]

    def get_optimizable_weights(self):
        from collabopt.layers import WeightSpec

        return [WeightSpec("kernel", (-1,), -2)]

    def get_config(self):
        return {**super().get_config(), "units": self.units}


def test_a_kernel_split_along_its_output_channels_is_checked_over_its_pieces():
    rng = np.random.default_rng(0)
    x = rng.random((16, 6)).astype("float32")
    inputs = keras.Input((6,))
    model = keras.Model(inputs, keras.layers.Dense(2, name="out")(GateKernels(5, name="gates")(inputs)))
    pruned = co.prune_low_magnitude(model, co.ConstantSparsity(0.5, 0, frequency=1))
    pruned(x, training=True)
    qat = co.quantize_model(co.cluster_weights(pruned, number_of_clusters=4, preserve_sparsity=True))
    qat(x, training=True)
    tflite = ct.convert(qat, "int8", representative_data=x)
    assert len([t for t in tflite.inspect().weights() if t.dtype == "int8" and t.shape == (5, 6)]) == 3
    report = ct.verify(qat, tflite)
    assert report.all_hold, str(report)
    gates = [c for c in report if c.layer == "gates"]
    assert {c.kind for c in gates} == {"sparsity", "clusters"}
    assert all(len(c.tensors) == 3 and c.tensor == " + ".join(c.tensors) for c in gates)
    assert not set(gates[0].tensors) & {name for c in report if c.layer == "out" for name in c.tensors}
    # The three pieces hold 50% zeros together, though not each alone.
    sparsity = next(c for c in gates if c.kind == "sparsity")
    assert sparsity.found == pytest.approx(0.5)
    # The unpruned model's file does not hold.
    model(x)
    assert not ct.verify(qat, ct.convert(model, "int8", representative_data=x)).all_hold
