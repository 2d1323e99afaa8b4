"""convert(fused_lstm=True): LSTMs as TFLite's UNIDIRECTIONAL_SEQUENCE_LSTM, float and int8, through the chain."""

import keras
import numpy as np
import pytest

import collabopt.tflite as ct
from collabopt.errors import ConversionError, InvalidArgumentError
from collabopt.tflite.fused_lstm import FusedLSTM
from collabopt.tflite import flatbuffer
from tests.conftest import pcqat_trained

L = keras.layers


def _x(n=6, steps=7, features=3, seed=0):
    return np.random.default_rng(seed).normal(size=(n, steps, features)).astype("float32")


def _as_list(y):
    return list(y) if isinstance(y, (list, tuple)) else [y]


@pytest.mark.parametrize(
    "make",
    [
        lambda: L.LSTM(4),
        lambda: L.LSTM(4, return_sequences=True, go_backwards=True),
        lambda: L.LSTM(4, return_state=True, use_bias=False),
        lambda: L.Bidirectional(L.LSTM(4, return_sequences=True)),
        lambda: L.Bidirectional(L.LSTM(4), merge_mode="sum"),
        lambda: L.Bidirectional(L.LSTM(4, return_sequences=True, return_state=True), merge_mode=None),
    ],
    ids=["last", "backwards_sequences", "states_no_bias", "bi_concat", "bi_sum", "bi_states_unmerged"],
)
def test_fused_form_computes_what_the_layer_computes(make):
    layer = make()
    x = _x()
    expected, got = _as_list(layer(x)), _as_list(FusedLSTM(layer)(x))
    assert len(expected) == len(got)
    for e, g in zip(expected, got):
        np.testing.assert_allclose(g, e, atol=1e-5)


def _lstm_ops(tflite):
    return [op for op in tflite.ops() if op == "UNIDIRECTIONAL_SEQUENCE_LSTM"]


def _nested_lstm_model():
    inner = keras.Sequential([keras.Input((7, 3)), L.LSTM(6, return_sequences=True, name="inner_lstm")], name="encoder")
    inputs = keras.Input((7, 3))
    x = inner(inputs)
    x = L.Bidirectional(L.LSTM(5), name="bi")(x)
    return keras.Model(inputs, L.Dense(3, name="head")(x))


@pytest.mark.parametrize(
    "build,directions",
    [
        (lambda: keras.Sequential([keras.Input((7, 3)), L.LSTM(6, name="lstm"), L.Dense(3)]), 1),
        (_nested_lstm_model, 3),
    ],
    ids=["sequential", "nested_functional_bidirectional"],
)
def test_float32_file_has_one_fused_op_per_direction_and_matches_keras(build, directions):
    model = build()
    x = _x(n=5)
    tflite = ct.convert(model, "float32", fused_lstm=True)
    assert len(_lstm_ops(tflite)) == directions
    assert "WHILE" not in tflite.ops()
    expected = model.predict(x, verbose=0)
    # The fused op's state persists in variable tensors between invocations;
    # predict starts every batch from the zero state, so a second run agrees.
    np.testing.assert_allclose(tflite.predict(x), expected, atol=1e-5)
    np.testing.assert_allclose(tflite.predict(x), expected, atol=1e-5)
    # The unrolled form (the default) has no fused op.
    assert _lstm_ops(ct.convert(model, "float32")) == []


def test_post_training_int8_fused_lstm_is_all_integer():
    model = keras.Sequential([keras.Input((7, 3)), L.LSTM(8, name="lstm"), L.Dense(3, name="head")])
    x = _x(n=32)
    tflite = ct.convert(model, "int8", representative_data=x, fused_lstm=True)
    assert tflite.float_islands() == []
    graph = flatbuffer.parse(tflite.content)
    (lstm,) = [op for op in graph.operators if op.op == "UNIDIRECTIONAL_SEQUENCE_LSTM"]
    weights = [graph.tensors[i] for i in lstm.inputs[1:9] if i >= 0]
    assert weights and {t.dtype for t in weights} == {"int8"}
    agree = (tflite.predict(x).argmax(1) == model.predict(x, verbose=0).argmax(1)).mean()
    assert agree >= 0.8, agree


def test_pcqat_chain_exports_fused_and_keeps_every_constraint():
    inputs = keras.Input((7, 3))
    x = L.Bidirectional(L.LSTM(8, name="lstm"), name="bi")(inputs)
    model = keras.Model(inputs, L.Dense(3, name="head")(x))
    x = _x(n=16)
    qat = pcqat_trained(model, x, np.arange(16) % 3)
    with pytest.raises(InvalidArgumentError, match=r"representative_data.*\['bi'\]"):
        ct.convert(qat, "int8", fused_lstm=True)
    tflite = ct.convert(qat, "int8", representative_data=x, fused_lstm=True)
    assert len(_lstm_ops(tflite)) == 2 and tflite.float_islands() == []
    report = ct.verify(qat, tflite)
    assert report.all_hold, str(report)
    assert {c.weight for c in report if c.layer == "bi"} >= {"forward_lstm/lstm_cell/kernel", "backward_lstm/lstm_cell/recurrent_kernel"}


def test_an_lstm_the_fused_op_cannot_compute_is_refused_by_name():
    model = keras.Sequential([keras.Input((7, 3)), L.LSTM(4, activation="relu", name="relu_lstm"), L.Dense(2)])
    with pytest.raises(InvalidArgumentError, match=r"'relu_lstm': activation='relu'.*fused_lstm=False"):
        ct.convert(model, "float32", fused_lstm=True)
    assert _lstm_ops(ct.convert(model, "float32")) == []  # unrolled, as before


def test_return_state_and_free_sequence_length_are_refused_by_name():
    # The converter keeps a loop whose cell state is used unfused, silently;
    # collabopt refuses it instead.
    inputs = keras.Input((7, 3))
    outputs = L.Concatenate()(L.LSTM(4, return_state=True, name="stateful_out")(inputs))
    with pytest.raises(InvalidArgumentError, match=r"'stateful_out': return_state=True"):
        ct.convert(keras.Model(inputs, outputs), "float32", fused_lstm=True)
    free = keras.Sequential([keras.Input((None, 3)), L.LSTM(4, name="free_length"), L.Dense(2)])
    with pytest.raises(InvalidArgumentError, match=r"'free_length': no fixed sequence length"):
        ct.convert(free, "float32", fused_lstm=True)


@pytest.mark.parametrize("mode", ["float16", "dynamic"])
def test_float16_and_dynamic_files_fuse_and_run_one_sample_per_invocation(mode):
    model = keras.Sequential([keras.Input((7, 3), batch_size=4), L.LSTM(6, name="lstm"), L.Dense(3)])
    x = _x(n=10)
    tflite = ct.convert(model, mode, fused_lstm=True)
    assert len(_lstm_ops(tflite)) == 1 and list(tflite.input_details[0]["shape"]) == [1, 7, 3]
    np.testing.assert_allclose(tflite.predict(x), model.predict(x, verbose=0), atol=0.02)


def test_int16x8_with_fused_lstm_is_refused_before_converting():
    model = keras.Sequential([keras.Input((7, 3)), L.LSTM(4, name="lstm"), L.Dense(2)])
    with pytest.raises(InvalidArgumentError, match=r"int16x8.*\['lstm'\].*fused_lstm=False"):
        ct.convert(model, "int16x8", representative_data=_x(), fused_lstm=True)


def test_a_masked_lstm_is_refused_by_name():
    inputs = keras.Input((7, 3))
    x = L.Masking(name="mask")(inputs)
    model = keras.Model(inputs, L.LSTM(4, name="masked_lstm")(x))
    with pytest.raises(ConversionError, match=r"'masked_lstm'.*called with a mask.*fused_lstm=False"):
        ct.convert(model, "float32", fused_lstm=True)


def test_gru_stays_unrolled_with_fused_lstm():
    model = keras.Sequential([keras.Input((7, 3)), L.GRU(4), L.Dense(2)])
    tflite = ct.convert(model, "float32", fused_lstm=True)
    assert _lstm_ops(tflite) == [] and "WHILE" not in tflite.ops()
    np.testing.assert_allclose(tflite.predict(_x()), model.predict(_x(), verbose=0), atol=1e-5)
