"""LSTM in the form TFLite's converter fuses into UNIDIRECTIONAL_SEQUENCE_LSTM (export only).

TF 2.21's converter fuses a recurrent loop only when it is a function carrying
an ``api_implements="lstm_..."`` attribute with Keras 2's argument list
``(inputs, init_h, init_c, kernel, recurrent_kernel, bias)`` and results
``(last_output, outputs, h, c, runtime)``; Keras 3's loop carries none. This
module runs a Keras 3 ``LSTM`` (or a ``Bidirectional`` around one) through
such a function: TensorFlow computes the same values, and the converter
replaces the whole loop by one fused op per direction.

Facts of the fused op that shape the export (measured with TF 2.21 / LiteRT):

* the batch size must be static;
* the initial state must be a constant (zeros): the op keeps its state in
  variable tensors, which persist between invocations of the interpreter, as
  in every Keras 2 LSTM file; reset them per sequence
  (``interpreter.reset_all_variables()``; ``TFLiteModel.predict`` does);
* the attribute survives only the SavedModel conversion path (freezing a
  traced function inlines it).
"""

from __future__ import annotations

import uuid

import keras
import tensorflow as tf

from collabopt.errors import UnsupportedLayerError

#: Activations the fused op computes (its kernel hard-codes them).
_FUSED_ACTIVATIONS = {"activation": "tanh", "recurrent_activation": "sigmoid"}


def _lstm_layers(layer):
    if isinstance(layer, keras.layers.Bidirectional):
        return [layer.forward_layer, layer.backward_layer]
    return [layer]


def is_lstm(layer) -> bool:
    """True for a ``keras.layers.LSTM`` (exactly that class) or a ``Bidirectional`` around one; False for any other layer."""
    return all(type(inner) is keras.layers.LSTM for inner in _lstm_layers(layer))


def fusion_problems(layer) -> list[str]:
    """Why ``layer`` (an LSTM or Bidirectional LSTM) cannot run as the fused op; empty if it can.

    Example:

    >>> import keras
    >>> fusion_problems(keras.layers.LSTM(4))
    []
    >>> fusion_problems(keras.layers.LSTM(4, activation="relu"))
    ["activation='relu' (the fused op computes tanh)"]
    """
    problems = []
    for inner in _lstm_layers(layer):
        for name, expected in _FUSED_ACTIVATIONS.items():
            function = getattr(inner, name)
            actual = getattr(function, "__name__", repr(function))
            if actual != expected:
                problems.append(f"{name}={actual!r} (the fused op computes {expected})")
        if inner.stateful:
            problems.append("stateful=True")
        if inner.return_state:
            problems.append("return_state=True (the converter fuses only a loop whose cell state is unused)")
    shape = (layer.get_build_config() or {}).get("input_shape")
    if shape is not None and (len(shape) < 3 or shape[1] is None):
        problems.append(f"no fixed sequence length (input shape {tuple(shape)}; give the model Input a time dimension)")
    return sorted(set(problems))


def fused_directions(layer) -> int:
    """How many fused ops ``layer`` becomes: 2 for a Bidirectional LSTM, else 1."""
    return len(_lstm_layers(layer))


def _direction_function(go_backwards: bool):
    """A tf.function the converter recognizes as Keras' LSTM and fuses."""

    def lstm(inputs, init_h, init_c, kernel, recurrent_kernel, bias):
        steps = range(inputs.shape[1])
        h, c, outputs = init_h, init_c, []
        for t in reversed(steps) if go_backwards else steps:
            z = tf.matmul(inputs[:, t], kernel) + tf.matmul(h, recurrent_kernel) + bias
            z_i, z_f, z_c, z_o = tf.split(z, 4, axis=1)
            c = tf.sigmoid(z_f) * c + tf.sigmoid(z_i) * tf.tanh(z_c)
            h = tf.sigmoid(z_o) * tf.tanh(c)
            outputs.append(h)
        return h, tf.stack(outputs, axis=1), h, c, tf.constant(0.0)

    attributes = {"api_implements": f"lstm_{uuid.uuid4()}", "time_major": False, "go_backwards": go_backwards}
    return tf.function(lstm, autograph=False, experimental_attributes=attributes)


def _run_direction(lstm: keras.layers.LSTM, function, inputs):
    # A constant zero state where the batch is static (the converter needs
    # it); a traced function without one (Keras' own serving trace) is
    # never converted.
    batch = inputs.shape[0] if inputs.shape[0] is not None else tf.shape(inputs)[0]
    zeros = tf.zeros((batch, lstm.units), inputs.dtype)
    cell = lstm.cell
    bias = tf.convert_to_tensor(cell.bias) if cell.use_bias else tf.zeros((4 * lstm.units,), inputs.dtype)
    last, outputs, h, c, _ = function(
        inputs, zeros, zeros, tf.convert_to_tensor(cell.kernel), tf.convert_to_tensor(cell.recurrent_kernel), bias
    )
    return (outputs if lstm.return_sequences else last), h, c


class FusedLSTM(keras.layers.Wrapper):
    """Runs a Keras 3 ``LSTM`` or ``Bidirectional(LSTM)`` as the converter's fusable function (export only, never saved).

    It computes what the wrapped layer computes in inference; see the module
    docstring for what the converted op requires.

    Example:

    >>> import keras, numpy as np
    >>> lstm = keras.layers.LSTM(3, return_sequences=True)
    >>> x = np.random.rand(1, 5, 2).astype("float32")
    >>> bool(np.allclose(FusedLSTM(lstm)(x), lstm(x), atol=1e-5))
    True
    """

    def __init__(self, layer, **kwargs):
        kwargs.setdefault("name", layer.name)
        super().__init__(layer, **kwargs)
        self.supports_masking = True  # a mask reaches call(), which refuses it by name
        self._functions = [_direction_function(inner.go_backwards) for inner in _lstm_layers(layer)]

    def build(self, input_shape=None):
        if not self.layer.built:
            self.layer.build(input_shape)
        self.built = True

    def call(self, inputs, mask=None, training=None, initial_state=None):
        layer = self.layer
        if mask is not None or initial_state is not None:
            raise UnsupportedLayerError(
                f"layer '{layer.name}': the fused LSTM op starts from a zero state over every time step; this "
                f"layer is called with {'a mask' if mask is not None else 'an initial_state'}. Export it "
                "with fused_lstm=False (unrolled)."
            )
        if not isinstance(layer, keras.layers.Bidirectional):
            output, h, c = _run_direction(layer, self._functions[0], inputs)
            return [output, h, c] if layer.return_state else output
        (forward, h_f, c_f), (backward, h_b, c_b) = (
            _run_direction(inner, function, inputs) for inner, function in zip(_lstm_layers(layer), self._functions)
        )
        if layer.return_sequences:
            backward = tf.reverse(backward, axis=[1])
        merged = _merge(layer.merge_mode, forward, backward)
        if layer.return_state:
            return (merged if isinstance(merged, list) else [merged]) + [h_f, c_f, h_b, c_b]
        return merged

    def compute_output_shape(self, input_shape):
        return self.layer.compute_output_shape(input_shape)


def _merge(mode, forward, backward):
    if mode == "concat":
        return tf.concat([forward, backward], axis=-1)
    if mode == "sum":
        return forward + backward
    if mode == "mul":
        return forward * backward
    if mode == "ave":
        return (forward + backward) / 2
    return [forward, backward]
