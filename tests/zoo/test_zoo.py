"""Real architectures end to end: prune 50% -> sparsity-preserving cluster 16 -> QAT -> full-int8 TFLite.

One test per ``keras.applications`` family (untrained, ``weights=None``, at the
smallest input it builds at) and per sequence architecture. Each trains a few
steps on random data at every stage (an eager custom loop: the wrappers need
no callbacks), exports int8, and asserts that the file has no float op and
that every constraint the chain recorded holds in it. CNNs export from the
trained ranges alone; the LSTM/GRU gates and the inside of
MultiHeadAttention are not QAT-wrapped, so those models also pass
representative data, which calibrates exactly those tensors.

CI runs the families listed in ``CI_FAMILIES`` (10 of 14), chosen to cover
distinct layer mixes within about 15 minutes of a 2-core CI run: depthwise,
squeeze-excite and hard-swish, Inception's pooling branches, ConvNeXt's
operator residuals, LayerNorm and Dense over feature maps, plain and
pre-activation residuals (standalone BatchNormalization), SeparableConv2D,
DenseNet's concatenations and pooled transitions. ``COLLABOPT_ZOO=all`` runs
all 14; the four left out have a close relative in CI (MobileNetV3Large,
EfficientNetV2B0, VGG16) or are the slowest (NASNetMobile). Measured
2026-11-25 on 2 cores: the six earlier CI families 397 s, the other eight
824 s (NASNetMobile 191 s, DenseNet121 119 s, VGG16 98 s, ResNet50V2 95 s,
Xception 95 s, ResNet50 88 s, EfficientNetV2B0 85 s, MobileNetV3Large 52 s),
the six sequence cases about 50 s. Two more cases export the LSTMs as
TFLite's fused UNIDIRECTIONAL_SEQUENCE_LSTM (``fused_lstm=True``).
"""

import os


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


CI_FAMILIES = (
    "MobileNet", "MobileNetV2", "MobileNetV3Small", "EfficientNetB0", "InceptionV3", "ConvNeXtTiny",
    "ResNet50", "ResNet50V2", "Xception", "DenseNet121",
)
FAMILIES = sorted(zoo.APPLICATIONS) if os.environ.get("COLLABOPT_ZOO") == "all" else CI_FAMILIES


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


@pytest.mark.parametrize("name", FAMILIES)
def test_application(name):
    pcqat_int8(zoo.application(name))


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
