"""Compiling a classifier so that its first ``fit`` traces the training step once.

On the TensorFlow backend, Keras builds a compiled model's optimizer and its
metrics inside the first traced training step when no distribution strategy
is set (``keras/src/backend/tensorflow/trainer.py``, ``_maybe_symbolic_build``:
"defer building to when the train/test/predict function gets traced").
``tf.function`` traces a function again when its first trace created
variables, so the step is traced twice: seconds on a large graph (about
7 s for MobileNetV2 on 2 cores), paid by every ``fit`` of every stage.
Metric objects create their variables when they are constructed, and the
optimizer's can be created up front (``optimizer.build``, public), so the
helpers here do both and ``fit`` traces once. Training is unchanged: the
same optimizer, loss and metric (``"accuracy"`` on integer labels is
``SparseCategoricalAccuracy``), the same zero-initialised optimizer slots.
"""

from __future__ import annotations

import keras


def build_optimizer(model: keras.Model) -> keras.Model:
    """Creates the compiled optimizer's variables now instead of inside the first traced step.

    A no-op where it would not help or could not be right: another backend
    (JAX and PyTorch build before tracing), a model that is not built yet
    (its variables do not exist), an optimizer already built, or inside a
    ``tf.distribute`` strategy's scope (Keras builds there itself, in the
    strategy's scope). Returns ``model``.

    Example:
        >>> import keras
        >>> m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
        >>> m.compile(optimizer="adam", loss="mse")
        >>> build_optimizer(m).optimizer.built
        True
    """
    optimizer = getattr(model, "optimizer", None)
    if keras.backend.backend() != "tensorflow" or optimizer is None or optimizer.built or not model.built:
        return model
    import tensorflow as tf

    if tf.distribute.has_strategy() or not model.trainable_variables:
        return model
    optimizer.build(model.trainable_variables)
    return model


def compile_classifier(model: keras.Model, learning_rate, from_logits: bool = True) -> keras.Model:
    """Adam, sparse categorical cross-entropy and top-1 accuracy, with the optimizer built (see the module).

    Args:
        model: The model; compiled in place and returned.
        learning_rate: A float or a ``keras.optimizers.schedules`` schedule.
        from_logits: Whether the model outputs logits (False: probabilities).

    Example:
        >>> import keras
        >>> m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
        >>> compile_classifier(m, 1e-3).metrics_names
        ['loss', 'compile_metrics']
    """
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=from_logits),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
    )
    return build_optimizer(model)
