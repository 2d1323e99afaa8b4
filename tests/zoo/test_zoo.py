"""Real architectures end to end: post-training int8, and prune 50% -> sparsity-preserving cluster 16 -> QAT -> full-int8 TFLite.

One test per ``keras.applications`` family (untrained, ``weights=None``, at the
smallest input it builds at) and per sequence architecture. Each family first
converts to int8 post-training (calibrated on the same batch) with no float
op; then the chain trains a few steps on random data at every stage (an
eager custom loop: the wrappers need no callbacks), exports int8, and
asserts that the file has no float op and that every constraint the chain
recorded holds in it. CNNs export from the trained ranges alone; the
LSTM/GRU gates and the inside of MultiHeadAttention are not QAT-wrapped, so
those models also pass representative data, which calibrates exactly those
tensors. Families in ``LOGITS_HEAD`` are built without their softmax
(``classifier_activation=None``), so both kinds of head are covered.

CI runs all 14 families. Measured 2026-12-03 on 2 cores
(``python -m pytest tests/zoo --durations=30`` before PTQ joined the tests, the chain
only): the whole zoo 651 s, NASNetMobile 97 s, ConvNeXtTiny 82 s,
DenseNet121 60 s, InceptionV3 51 s, the other CNNs 10-41 s, the sequence
cases 2-10 s each. (Before linear-time pruning masks, one copy per
``quantize_model`` and constant-frozen int8 export, the same chain took
about 21 minutes for the 14 families, so CI ran 10 of them.)
Two more cases export the LSTMs as TFLite's fused
UNIDIRECTIONAL_SEQUENCE_LSTM (``fused_lstm=True``).
"""

import numpy as np
import pytest

import collabopt.keras as co
import collabopt.tflite as ct
from collabopt import reference_models as zoo
from tests.conftest import pcqat_trained

pytestmark = pytest.mark.slow


def _data(model, batch=4, seed=0):
    rng = np.random.default_rng(seed)
    spec = model.inputs[0]
    shape = (batch,) + tuple(spec.shape[1:])
    if "int" in str(spec.dtype):
        x = rng.integers(0, 100, shape).astype("int32")
    else:
        x = rng.random(shape).astype("float32")
    return x, rng.integers(0, model.outputs[0].shape[-1], batch)


#: Families built with a logits head (no softmax): the rest end in softmax.
LOGITS_HEAD = ("MobileNetV3Large", "ResNet50V2", "VGG16")


def pcqat_int8(model, calibrate=False, **convert_options):
    x, y = _data(model)
    qat = pcqat_trained(model, x, y, 16, cluster_centroids_init=co.CentroidInitialization.LINEAR)
    # raises on any float op
    tflite = ct.convert(qat, "int8", representative_data=x if calibrate else None, **convert_options)
    assert tflite.float_islands() == []
    report = ct.verify(qat, tflite)
    assert report.all_hold, str(report)
    kinds = {c.kind for c in report}
    assert len(kinds) >= 2, kinds  # both the zeros and the clusters were checked
    # No layer with optimizable weights was skipped silently.
    from collabopt.layers import weight_specs
    from collabopt.transform import iter_layers

    optimizable = {layer.name for layer in iter_layers(model) if weight_specs(layer)}
    assert optimizable <= {c.layer for c in report}, optimizable - {c.layer for c in report}
    return qat, tflite


@pytest.mark.parametrize("name", sorted(zoo.APPLICATIONS))
def test_application(name):
    model = zoo.application(name, classifier_activation=None if name in LOGITS_HEAD else "softmax")
    x, _ = _data(model)
    ptq = ct.convert(model, "int8", representative_data=x)  # raises on any float op
    assert ptq.float_islands() == []
    assert ("SOFTMAX" in ptq.ops()) == (name not in LOGITS_HEAD)
    pcqat_int8(model)


@pytest.mark.parametrize(
    "build",
    [
        zoo.conv1d_kws,
        lambda: zoo.recurrent_kws("lstm"),
        lambda: zoo.recurrent_kws("lstm", bidirectional=True),
        lambda: zoo.recurrent_kws("gru"),
        lambda: zoo.recurrent_kws("gru", bidirectional=True),
        zoo.tiny_transformer,
    ],
    ids=["conv1d", "lstm", "bilstm", "gru", "bigru", "transformer"],
)
def test_sequence(build):
    model = build()
    pcqat_int8(model, calibrate=model.name != "conv1d_kws")


@pytest.mark.parametrize("bidirectional", [False, True], ids=["lstm", "bilstm"])
def test_fused_lstm(bidirectional):
    # TFLite's fused sequence op, one per direction, int8 with calibrated gates.
    _, tflite = pcqat_int8(zoo.recurrent_kws("lstm", bidirectional=bidirectional), calibrate=True, fused_lstm=True)
    assert tflite.ops().count("UNIDIRECTIONAL_SEQUENCE_LSTM") == (2 if bidirectional else 1)
