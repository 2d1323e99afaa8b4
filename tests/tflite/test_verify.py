import keras
import numpy as np
import pytest

import collabopt.keras as co
import collabopt.tflite as ct
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
