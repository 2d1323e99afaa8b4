"""Every registered technique on every supported layer kind, through the shared conformance harness.

The layer kinds are checked against the layer registry
(``collabopt.layers.support.registered_records``): a library class whose
record declares optimizable weights or an export form, and that no kind
below represents, fails :func:`test_every_supported_class_has_a_representative`.
The techniques are read from the technique registry at collection time; a
technique the harness has no settings for fails its cases
(``tests/harness.py``, ``TECHNIQUE_SETTINGS``).

Combinations that legitimately cannot work are listed in :data:`EXPECTED`
with their reason; the harness asserts that exact outcome (the error, or the
op left float), never a skip. Cases a library bug fails today are in
:data:`KNOWN_BUGS`, marked ``xfail(strict=True)`` so that the fix is noticed.
Chains: prune -> cluster -> quantize, and ``quantize_model(prune_filters(m))``
whose int8 file must compute what the QAT model computes (issue #26).

Measured on this 2-core machine, ``python -m pytest -q -n 2
tests/test_conformance.py``: 116 tests in about 110-160 s (1.8 min of CPU).
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import keras
import pytest

from collabopt.errors import InvalidArgumentError
from collabopt.layers import WeightSpec, layer_support_registered
from collabopt.layers.support import registered_records
from collabopt.technique import technique_names
from tests import harness
from tests.harness import Expected, run_conformance, technique_settings

#: Every technique on every layer kind: 1-2 min on 2 cores, so CI's run, not the inner loop (-m "not slow").
pytestmark = pytest.mark.slow

L = keras.layers


@keras.saving.register_keras_serializable("collabopt_conformance")
class ConvBNDense(L.Layer):
    """A composite layer as users write them: Conv2D + BatchNormalization + ReLU, pooled, then a Dense."""

    def __init__(self, filters=8, units=8, **kwargs):
        super().__init__(**kwargs)
        self.filters, self.units = filters, units
        self.conv = L.Conv2D(filters, 3, use_bias=False)
        self.bn = L.BatchNormalization()
        self.pool = L.GlobalAveragePooling2D()
        self.dense = L.Dense(units)

    def call(self, x, training=None):
        h = keras.ops.relu(self.bn(self.conv(x), training=training))
        return self.dense(self.pool(h))

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "units": self.units}


@dataclasses.dataclass(frozen=True)
class LayerKind:
    """One representative of a supported layer class family.

    Attributes:
        id: The test id.
        factory: ``() -> layer or list of layers`` (see ``run_conformance``).
        input_shape: One sample's shape.
        input_dtype: The model input's dtype.
        call: ``(layers, x) -> y`` when the layers are not called in sequence.
    """

    id: str
    factory: Callable
    input_shape: tuple
    input_dtype: str = "float32"
    call: Callable | None = None

    def run(self, technique, **options):
        """``run_conformance`` of ``technique`` (a name or chain) on this kind."""
        return run_conformance(
            technique, self.factory, self.input_shape, input_dtype=self.input_dtype, call=self.call, **options
        )


def _self_attention(layers, x):
    return layers[0](x, x)


def _averaged_branches(layers, x):
    first, second, average = layers
    return average([first(x), second(x)])


IMAGE, VOLUME, SEQUENCE = (8, 8, 3), (4, 4, 4, 2), (8, 4)

KINDS = [
    LayerKind("dense", lambda: L.Dense(8, name="target"), (16,)),
    LayerKind("einsum_dense", lambda: L.EinsumDense("abc,cd->abd", (6, 8), bias_axes="d", name="target"), (6, 8)),
    LayerKind("conv1d", lambda: L.Conv1D(8, 3, name="target"), SEQUENCE),
    LayerKind("conv2d", lambda: L.Conv2D(8, 3, name="target"), IMAGE),
    LayerKind("conv3d", lambda: L.Conv3D(4, 3, name="target"), VOLUME),
    LayerKind("conv1d_transpose", lambda: L.Conv1DTranspose(8, 3, name="target"), SEQUENCE),
    LayerKind("conv2d_transpose", lambda: L.Conv2DTranspose(8, 3, name="target"), IMAGE),
    LayerKind("conv3d_transpose", lambda: L.Conv3DTranspose(4, 3, name="target"), VOLUME),
    LayerKind("depthwise_conv1d", lambda: [L.Conv1D(4, 1, name="expand"), L.DepthwiseConv1D(3, name="target")], SEQUENCE),
    LayerKind("depthwise_conv2d", lambda: [L.Conv2D(4, 1, name="expand"), L.DepthwiseConv2D(3, name="target")], IMAGE),
    LayerKind("separable_conv1d", lambda: L.SeparableConv1D(8, 3, name="target"), SEQUENCE),
    LayerKind("separable_conv2d", lambda: L.SeparableConv2D(8, 3, name="target"), (8, 8, 4)),
    LayerKind("embedding", lambda: L.Embedding(16, 8, name="target"), (8,), input_dtype="int32"),
    LayerKind("simple_rnn", lambda: L.SimpleRNN(8, name="target"), (5, 4)),
    LayerKind("lstm", lambda: L.LSTM(8, name="target"), (5, 4)),
    LayerKind("gru", lambda: L.GRU(8, name="target"), (5, 4)),
    LayerKind("bidirectional", lambda: L.Bidirectional(L.LSTM(4), name="target"), (5, 4)),
    LayerKind("time_distributed", lambda: L.TimeDistributed(L.Dense(8), name="target"), (5, 4)),
    LayerKind("multi_head_attention", lambda: L.MultiHeadAttention(2, 4, name="target"), (6, 8), call=_self_attention),
    LayerKind("conv_batchnorm", lambda: [L.Conv2D(8, 3, use_bias=False, name="target"), L.BatchNormalization(name="bn")], IMAGE),
    LayerKind("layer_normalization", lambda: [L.Dense(8, name="target"), L.LayerNormalization(name="ln")], (6, 8)),
    LayerKind("normalization", lambda: [L.Normalization(mean=0.5, variance=2.0, name="norm"), L.Dense(8, name="target")], (16,)),
    LayerKind("rescaling", lambda: [L.Rescaling(0.5, offset=0.25, name="rescale"), L.Conv2D(8, 3, name="target")], IMAGE),
    LayerKind(
        "average", lambda: [L.Dense(8, name="target"), L.Dense(8, name="other"), L.Average(name="avg")], (16,),
        call=_averaged_branches,
    ),
    LayerKind("composite", lambda: ConvBNDense(name="target"), IMAGE),
]
KIND_BY_ID = {kind.id: kind for kind in KINDS}


def _no_filters(reason: str) -> Expected:
    return Expected(reason, step="apply", error=InvalidArgumentError, match="has no output channels that can be pruned")


def _float_in_int8(ops: tuple[str, ...], reason: str) -> Expected:
    return Expected(reason, step="convert", float_ops=ops)


_RECURRENT = _no_filters("a recurrent layer's units feed back through its recurrent kernel; its record gives no output-channel role")
_CONV_3D = _float_in_int8(
    ("CONV_3D", "QUANTIZE", "DEQUANTIZE"), "TFLite has no int8 CONV_3D kernel: the converter keeps it float between (de)quantize ops"
)
_CONV_3D_TRANSPOSE = _float_in_int8(
    ("CONV_3D_TRANSPOSE", "SHAPE", "QUANTIZE", "DEQUANTIZE"),
    "TFLite has no int8 CONV_3D_TRANSPOSE kernel: the converter keeps it (and the SHAPE of its float input) float",
)

#: ``(technique or "*", kind id) -> Expected``: combinations that legitimately cannot work, and why.
EXPECTED: dict[tuple[str, str], Expected] = {
    ("filter_prune", "einsum_dense"): _no_filters(
        "EinsumDense's record declares its weights but no roles (no output weight, no channel behaviour), "
        "so the channel graph cannot follow its outputs"
    ),
    ("filter_prune", "embedding"): _no_filters("an Embedding's output axis is its table's width, not filters; its record has no output-channel role"),
    ("filter_prune", "simple_rnn"): _RECURRENT,
    ("filter_prune", "lstm"): _RECURRENT,
    ("filter_prune", "gru"): _RECURRENT,
    ("filter_prune", "bidirectional"): _RECURRENT,
    ("filter_prune", "time_distributed"): _no_filters("TimeDistributed's record gives it no output-channel role"),
    ("filter_prune", "multi_head_attention"): _no_filters("MultiHeadAttention's record gives it no output-channel role"),
    ("filter_prune", "layer_normalization"): _no_filters(
        "LayerNormalization mixes every channel into each output (mean and variance over the channel axis): "
        "the channels of the Dense before it cannot be removed"
    ),
    ("filter_prune", "composite"): _no_filters("a composite layer's channels are not in the model's graph, which filter pruning reads"),
    ("*", "conv3d"): _CONV_3D,
    ("*", "conv3d_transpose"): _CONV_3D_TRANSPOSE,
}


def expected(technique: str, kind: str) -> Expected | None:
    """The declared outcome of ``technique`` on ``kind``, if any."""
    return EXPECTED.get((technique, kind), EXPECTED.get(("*", kind)))


# --- known library bugs: strict xfail, so a fix is noticed ---------------------------------------------------------

_RECURRENT_QAT_EXPORT = pytest.mark.xfail(
    strict=True,
    raises=AssertionError,
    reason="bug: int8 export of a QAT SimpleRNN/GRU with a non-zero bias is 11-17% off the QAT model "
    "(post-training int8 of the same float model: under 3%; LSTM: 3%)",
)
#: ``(test function, case id) -> xfail mark``: the cases a library bug fails today.
KNOWN_BUGS = {
    ("test_conformance", "quantize-simple_rnn"): _RECURRENT_QAT_EXPORT,
    ("test_conformance", "quantize-gru"): _RECURRENT_QAT_EXPORT,
}


def _param(test: str, case: str, *values):
    """``pytest.param(*values)`` with id ``case``, marked with its known bug if any."""
    return pytest.param(*values, id=case, marks=KNOWN_BUGS.get((test, case), ()))


def _matrix():
    return [
        _param("test_conformance", f"{technique}-{kind.id}", technique, kind) for technique in technique_names() for kind in KINDS
    ]


# --- coverage: the kinds against the layer registry -----------------------------------------------------------------


def _library_class(cls) -> bool:
    """Classes of Keras and collabopt; classes other tests register for themselves are theirs to check."""
    return cls.__module__.split(".")[0] in ("keras", "collabopt")


def _needs_representative(record) -> bool:
    """Classes with optimizable weights, or an export form of their own (collabopt recomputes them op by op)."""
    return bool(record.weights) or record.export is not None


def _represented_classes() -> set[type]:
    """Every class (with its bases) of the layers the kinds build."""
    classes = set()
    for kind in KINDS:
        made = kind.factory()
        for layer in made if isinstance(made, list) else [made]:
            classes.update(type(layer).__mro__)
    return classes


def unrepresented_classes() -> list[str]:
    """Names of the library classes that need a representative (see the module docstring) and have none."""
    required = {cls for cls, record in registered_records().items() if _library_class(cls) and _needs_representative(record)}
    return sorted(cls.__name__ for cls in required - _represented_classes())


def test_every_supported_class_has_a_representative():
    missing = unrepresented_classes()
    assert not missing, (
        f"layer classes registered with weights or an export form but not exercised by the conformance harness: {missing}. "
        "Add a LayerKind for each to KINDS in tests/test_conformance.py (and an EXPECTED entry where a technique cannot work)."
    )


def test_a_newly_registered_class_is_noticed():
    weights = [WeightSpec("kernel", (-1,), -2)]
    with layer_support_registered(L.ConvLSTM2D, weights=weights):
        assert "ConvLSTM2D" in unrepresented_classes()
    assert "ConvLSTM2D" not in unrepresented_classes()


def test_every_registered_technique_has_settings():
    for name in technique_names():
        technique_settings(name)


def test_a_technique_without_settings_fails_loudly(monkeypatch):
    monkeypatch.delitem(harness.TECHNIQUE_SETTINGS, "cluster")
    with pytest.raises(pytest.fail.Exception, match="'cluster' is registered but the conformance harness has no settings"):
        KIND_BY_ID["dense"].run("cluster")


def test_expectations_name_known_cases():
    names = set(technique_names()) | {"*"}
    unknown = [key for key in EXPECTED if key[0] not in names or key[1] not in KIND_BY_ID]
    assert not unknown, f"EXPECTED names unknown techniques or kinds: {unknown}"


def test_known_bugs_name_known_cases():
    cases = {("test_conformance", p.id) for p in _matrix()}
    cases |= {(test, kind.id) for test in ("test_prune_cluster_quantize", "test_filter_prune_then_quantize") for kind in CHAIN_KINDS}
    unknown = sorted(set(KNOWN_BUGS) - cases)
    assert not unknown, f"KNOWN_BUGS names unknown cases: {unknown}"


# --- every technique x every kind -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("technique", "kind"), _matrix())
def test_conformance(technique, kind):
    kind.run(technique, expect=expected(technique, kind.id))


# --- chains ------------------------------------------------------------------------------------------------------


def _conv_block():
    return [
        L.Conv2D(8, 3, padding="same", name="conv1"),
        L.BatchNormalization(name="bn1"),
        L.ReLU(name="relu1"),
        L.Conv2D(8, 3, name="conv2"),
    ]


CHAIN_KINDS = [LayerKind("conv_block", _conv_block, IMAGE), KIND_BY_ID["dense"], KIND_BY_ID["depthwise_conv2d"]]


def _chain_cases(test):
    return [_param(test, kind.id, kind) for kind in CHAIN_KINDS]


@pytest.mark.parametrize("kind", _chain_cases("test_prune_cluster_quantize"))
def test_prune_cluster_quantize(kind):
    result = kind.run(("prune", "cluster", "quantize"))
    assert {c.kind for c in result.report} == {"sparsity", "clusters"}, str(result.report)


@pytest.mark.parametrize("kind", _chain_cases("test_filter_prune_then_quantize"))
def test_filter_prune_then_quantize(kind):
    """``quantize_model(prune_filters(model))``: the int8 file computes what the QAT model computes (issue #26)."""
    result = kind.run(("filter_prune", "quantize"), train_each_stage=False, strip=False)
    assert "channels" in {c.kind for c in result.report}, str(result.report)


@pytest.mark.parametrize("kind", CHAIN_KINDS, ids=[kind.id for kind in CHAIN_KINDS])
def test_filter_prune_then_quantize_strips(kind):
    """Stripping ``quantize_model(prune_filters(model))`` keeps its outputs and removes the pruned channels."""
    kind.run(("filter_prune", "quantize"), train_each_stage=False)


def test_expected_outcome_is_enforced():
    """An Expected that does not happen fails the case: expectations cannot outlive the limitation."""
    wrong = Expected("Dense always has output channels", step="apply", error=InvalidArgumentError)
    with pytest.raises(pytest.fail.Exception, match="DID NOT RAISE"):
        KIND_BY_ID["dense"].run("filter_prune", expect=wrong)
