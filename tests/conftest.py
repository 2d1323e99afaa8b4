"""Shared test set-up: quiet TensorFlow, two logical CPUs for distribution tests, small fixtures."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

# Split the CPU into two logical devices (must happen before TF initialises
# its devices) so MirroredStrategy tests run with two replicas.
_cpus = tf.config.list_physical_devices("CPU")
try:
    tf.config.set_logical_device_configuration(
        _cpus[0], [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()]
    )
except RuntimeError:  # devices already initialised by another plugin
    pass

import keras  # noqa: E402


_START_DIR = os.getcwd()

#: The longest tests, longest first (the notebooks' quick runs: minutes each), started before every other.
LONGEST_FIRST = (
    "tests/test_examples.py::test_notebook_runs_in_quick_mode[mobilenet_v2]",
    "tests/test_examples.py::test_notebook_runs_in_quick_mode",
)


def pytest_collection_modifyitems(config, items):
    """Longest first: the notebooks' quick runs, then every ``slow`` test, then the rest, each in collection order.

    With two xdist workers (CI: ``-n 2``) the last tests to start decide when
    the run ends; started early, the long ones overlap the short ones instead
    of running alone at the end (pyproject's ``--maxschedchunk`` keeps each
    worker's queue short, so the order is the order they start in). Every
    worker sorts the same collection the same way, as xdist requires.
    """

    def rank(item):
        first = [i for i, prefix in enumerate(LONGEST_FIRST) if item.nodeid.startswith(prefix)]
        if first:
            return first[0]
        return len(LONGEST_FIRST) + (0 if item.get_closest_marker("slow") else 1)

    items.sort(key=rank)  # stable: collection order within a rank


@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(0)
    yield
    keras.backend.clear_session()
    # A library call may leave the process in a temporary folder that is then
    # removed; later tests (and subprocesses they start) need a real one.
    try:
        os.getcwd()
    except FileNotFoundError:
        os.chdir(_START_DIR)


@pytest.fixture(scope="session")
def digits_data():
    from collabopt.datasets import digits

    return digits()


@pytest.fixture(scope="session")
def trained_digits_cnn(digits_data):
    """The reference CNN trained on digits for a few epochs (float top-1 ~95%+)."""
    from collabopt.reference_models import compile_for_classification, reference_cnn

    keras.utils.set_random_seed(0)
    (x, y), _ = digits_data
    model = compile_for_classification(reference_cnn((8, 8, 1)))
    model.fit(x, y, epochs=8, batch_size=64, verbose=0)
    return model


def small_cnn(input_shape=(8, 8, 1), classes=10):
    """A tiny Sequential CNN with a conv, pooling and dense layers."""
    return keras.Sequential(
        [
            keras.Input(input_shape),
            keras.layers.Conv2D(16, 3, activation="relu", name="conv"),
            keras.layers.MaxPooling2D(name="pool"),
            keras.layers.Flatten(name="flatten"),
            keras.layers.Dense(classes, name="dense"),
        ],
        name="small_cnn",
    )


class MatMul(keras.layers.Layer):
    """The custom layer of the protocol tests: ``x @ w + other``.

    collabopt knows nothing of it; each test subclasses it with the protocol
    under test (``get_prunable_weights``, ``get_clusterable_weights``,
    ``get_optimizable_weights``). ``other`` is a weight no protocol declares.
    """

    def __init__(self, units=4, **kwargs):
        super().__init__(**kwargs)
        self.units = units

    def build(self, shape):
        self.w = self.add_weight(shape=(shape[-1], self.units), name="w")
        self.other = self.add_weight(shape=(self.units,), name="other", initializer="zeros")

    def call(self, x):
        return keras.ops.matmul(x, self.w) + self.other

    def get_config(self):
        return {**super().get_config(), "units": self.units}


def train_steps(model, x, y, steps=2, learning_rate=1e-3):
    """A few eager SGD steps, as a custom training loop does (the wrappers need no callbacks).

    The loss takes logits unless the model's last layer ends in softmax.
    """
    from collabopt.layers import base_layer

    from_logits = getattr(base_layer(model.layers[-1]), "activation", None) is not keras.activations.softmax
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=from_logits)
    optimizer = keras.optimizers.SGD(learning_rate)
    for _ in range(steps):
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients([(g, v) for g, v in zip(grads, model.trainable_variables) if g is not None])


def pcqat_trained(model, x, y, number_of_clusters=8, learning_rate=1e-3, **cluster_options):
    """prune 50% -> sparsity-preserving cluster -> QAT, trained 2, 1 and 2 eager steps: the QAT model."""
    import collabopt.keras as co

    pruned = co.prune_low_magnitude(model, co.ConstantSparsity(0.5, 0, frequency=1))
    train_steps(pruned, x, y, 2, learning_rate)
    clustered = co.cluster_weights(pruned, number_of_clusters=number_of_clusters, preserve_sparsity=True, **cluster_options)
    train_steps(clustered, x, y, 1, learning_rate)
    qat = co.quantize_model(clustered)
    train_steps(qat, x, y, 2, learning_rate)
    return qat


def conv_bn_depthwise_cnn(input_shape, classes, softmax=False):
    """Conv (no bias) + BN + ReLU, DepthwiseConv, GAP, Dense: the layers whose folding and filters QAT export must get right.

    ``softmax``: end in a float32 softmax (what a mixed precision model keeps in float32).
    """
    L = keras.layers
    layers = [
        keras.Input(input_shape),
        L.Conv2D(8, 3, use_bias=False, name="conv"),
        L.BatchNormalization(name="bn"),
        L.ReLU(),
        L.DepthwiseConv2D(3, name="dw"),
        L.GlobalAveragePooling2D(),
        L.Dense(classes, name="fc"),
    ]
    return keras.Sequential(layers + ([L.Activation("softmax", dtype="float32")] if softmax else []))


def rand(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype("float32")


@pytest.fixture(scope="session")
def mirrored():
    """One MirroredStrategy over two logical CPUs for the whole session.

    Several MirroredStrategy objects in one process can reuse collective
    instance keys and abort each other's all-reduce, so tests share this one.
    """
    cpus = [d.name for d in tf.config.list_logical_devices("CPU")[:2]]
    assert len(cpus) == 2, "conftest should have split the CPU into two logical devices"
    return tf.distribute.MirroredStrategy(cpus)
