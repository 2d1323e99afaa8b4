"""The export forms: one pass over the model builds what the converter sees."""

import keras
import numpy as np
import pytest
from keras import layers as L

import collabopt.keras as co
import collabopt.tflite
from collabopt.tflite import export_forms


def _x(*shape):
    return np.random.default_rng(0).normal(size=shape).astype("float32")


@pytest.mark.parametrize("bidirectional", [False, True])
def test_recurrent_layers_unroll_for_export(bidirectional):
    rnn = L.GRU(4) if not bidirectional else L.Bidirectional(L.LSTM(4))
    x = _x(2, 7, 3)
    expected = keras.ops.convert_to_numpy(rnn(x))
    assert export_forms.needs_unrolling(rnn)
    unrolled = export_forms.unrolled_copy(rnn)
    assert not export_forms.needs_unrolling(unrolled)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(unrolled(x)), expected, rtol=1e-5, atol=1e-5)


def test_unrolling_needs_a_fixed_sequence_length():
    from collabopt.errors import UnsupportedLayerError

    rnn = L.LSTM(4, name="kws_lstm")
    rnn.build((None, None, 3))
    with pytest.raises(UnsupportedLayerError, match="kws_lstm.*fixed sequence length"):
        export_forms.unrolled_copy(rnn)


def test_convert_walks_the_model_once(monkeypatch):
    """A QAT model under mixed precision holding an RNN and a LayerNormalization: one map_layers pass."""
    calls = []
    original = export_forms.map_layers

    def counting(*args, **kwargs):
        calls.append(kwargs.get("what"))
        return original(*args, **kwargs)

    monkeypatch.setattr(export_forms, "map_layers", counting)
    inputs = keras.Input((6, 4))
    x = L.GRU(8, return_sequences=True)(inputs)
    x = L.LayerNormalization()(x)
    x = L.Flatten()(x)
    outputs = L.Dense(3, dtype="mixed_float16")(x)
    model = keras.Model(inputs, outputs)
    data = _x(32, 6, 4)
    qat = co.quantize_model(co.prune_low_magnitude(model, co.ConstantSparsity(0.5, 0)))
    qat.compile("adam", "mse")
    qat.fit(data, np.zeros((32, 3), "float32"), epochs=1, verbose=0, callbacks=[co.UpdatePruningStep()])
    tfl = collabopt.tflite.convert(qat, "int8", data)
    assert calls == ["export"]
    assert not tfl.float_islands()
    expected = keras.ops.convert_to_numpy(qat(data[:8])).astype("float32")  # float16 compute, int8 file
    assert np.abs(tfl.predict(data[:8]) - expected).max() < 0.05 * np.ptp(expected)
