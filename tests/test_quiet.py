import os

from collabopt import quiet


def test_native_stderr_drops_tensorflow_noise_and_keeps_the_rest(capfd, monkeypatch):
    monkeypatch.setattr(quiet, "VERBOSE", False)
    with quiet.native_stderr_silenced():
        os.write(2, b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n")
        os.write(2, b"I0000 00:00:1795529168.703559   10758 cudart_stub.cc:31] Could not find cuda drivers\n")
        os.write(2, b"fully_quantize: 0, inference_type: 6, input_inference_type: INT8\n")
        os.write(2, b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n")
        os.write(2, b"E0000 00:00:1795532839.065055   20121 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error\n")
        os.write(2, b"a real problem\n")
    err = capfd.readouterr().err
    assert err == "a real problem\n"


def test_verbose_lets_everything_through(capfd, monkeypatch):
    monkeypatch.setattr(quiet, "VERBOSE", True)
    with quiet.native_stderr_silenced():
        os.write(2, b"fully_quantize: 0\n")
    assert "fully_quantize" in capfd.readouterr().err


def test_eager_training_steps_on_many_weight_shapes_log_no_retracing_warning():
    """Each fused training kernel (cluster assignment, fake quant) is traced once per weight shape, not retraced.

    A custom training loop's eager steps call the kernels one weight at a time.
    """
    import logging

    import keras
    import numpy as np
    import tensorflow as tf

    import collabopt.keras as co

    lines = []

    class Collect(logging.Handler):
        def emit(self, record):
            lines.append(record.getMessage())

    logger = logging.getLogger("tensorflow")
    handler, level = Collect(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING)  # as in a user's session (a CLI test may have lowered it in this process)
    try:
        widths = [256 + i for i in range(1, 9)]  # eight kernel shapes of over 65,536 weights: each takes a fused kernel
        model = keras.Sequential([keras.Input((256,))] + [keras.layers.Dense(w, activation="relu") for w in widths])
        x, y = np.random.default_rng(0).random((16, 256), dtype="float32"), np.zeros((16, widths[-1]), "float32")
        for optimized in (co.cluster_weights(model, number_of_clusters=4), co.quantize_model(model)):
            with tf.GradientTape() as tape:
                loss = keras.ops.mean((optimized(x, training=True) - y) ** 2)
            assert all(g is not None for g in tape.gradient(loss, optimized.trainable_variables))
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    assert not [line for line in lines if "retracing" in line], lines
