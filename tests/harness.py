"""A conformance harness for collabopt techniques, in the spirit of Keras' ``run_layer_test``.

:func:`run_conformance` takes one registered technique (or a chain of them)
and one layer kind, and runs the whole life of an optimized model through
public API only:

1. build a small Functional model around the layer (``Input -> layer(s) ->
   Flatten if needed -> Dense(classes)``), with random biases and
   BatchNormalization statistics so that a wrong mask, fold or bias shows in
   the outputs;
2. apply each technique with its registered public function
   (``Technique.function``), with settings that take effect from the first
   step (:data:`TECHNIQUE_SETTINGS`), checking that the input model was not
   changed and shares no layer with the result, and train one step (``fit``,
   one epoch, all samples in one batch) after each stage;
3. ``.keras`` save and ``keras.models.load_model``: predictions and every
   weight bitwise equal; the same for ``collabopt.layers.copy_layer`` of
   each layer and for a model copy (``collabopt.transform.map_layers``);
4. full-integer export (``collabopt.tflite.convert(model, "int8", x)``): no
   float op, every constraint the chain recorded holds in the file
   (``collabopt.tflite.verify``) and covers every layer the technique
   wrapped, and the file's outputs agree with the Keras model's;
5. strip each technique with its registered strip function
   (``Technique.strip``, outermost first): no collabopt wrapper is left and
   the outputs are kept;
6. each technique's effect is visible (``TechniqueSettings.effect``).

A combination that legitimately cannot work is declared with an
:class:`Expected` (the step, the collabopt error it raises, or the ops that
stay float, and why); the harness then asserts exactly that outcome, so a
fix is noticed too.
"""

from __future__ import annotations

import dataclasses
import pathlib
import tempfile
from typing import Callable, Sequence

import keras
import numpy as np
import pytest

import collabopt.keras as co
import collabopt.tflite as ct
from collabopt.layers import base_layer, copy_layer, weight_specs, wrapper_chain
from collabopt.technique import chain_techniques, get_technique
from collabopt.transform import iter_layers, map_layers

#: Steps of :func:`run_conformance` that an :class:`Expected` may name.
STEPS = ("apply", "train", "save", "copy", "convert", "strip")


@dataclasses.dataclass(frozen=True)
class Expected:
    """The declared outcome of a combination that legitimately cannot work.

    Attributes:
        reason: Why it cannot work (shown in the test's output on failure).
        step: The step that fails (one of :data:`STEPS`).
        error: The collabopt error class that step raises, or None when the
            step completes (with ``float_ops``).
        match: A regular expression the error message must match.
        float_ops: For ``step="convert"`` without an error: the TFLite ops
            allowed to stay float (at least one of them must, so a fix is noticed).
    """

    reason: str
    step: str = "apply"
    error: type | None = None
    match: str | None = None
    float_ops: tuple[str, ...] = ()

    def __post_init__(self):
        if self.step not in STEPS:
            raise ValueError(f"Expected.step must be one of {STEPS}; received {self.step!r}.")
        if (self.error is None) == (not self.float_ops):
            raise ValueError("Expected needs exactly one of `error` and `float_ops`.")
        if self.float_ops and self.step != "convert":
            raise ValueError("Expected.float_ops describes the 'convert' step.")

    def raises(self, step: str):
        """``pytest.raises`` for ``step`` if this outcome is an error there, else None."""
        if step != self.step or self.error is None:
            return None
        return pytest.raises(self.error, match=self.match)


@dataclasses.dataclass
class ConformanceResult:
    """What :func:`run_conformance` built, for further assertions.

    Attributes:
        model: The plain model built around the layer.
        optimized: The model after every technique of the chain (trained).
        stripped: The optimized model with every technique stripped.
        tflite: The int8 :class:`~collabopt.tflite.TFLiteModel`.
        report: The :class:`~collabopt.tflite.VerifyReport` of ``optimized`` against ``tflite``.
        x: The input samples used throughout.
        stopped_at: The step an :class:`Expected` error stopped the run at, or None.
    """

    model: keras.Model
    optimized: keras.Model | None = None
    stripped: keras.Model | None = None
    tflite: object = None
    report: list | None = None
    x: np.ndarray | None = None
    stopped_at: str | None = None


# --- technique settings ------------------------------------------------------------------------------------------


def _records(name: str) -> set[str]:
    return {kind.name for kind in get_technique(name).records}


def _prune_settings(earlier):
    return {"pruning_schedule": co.ConstantSparsity(0.5, 0, frequency=1)}


def _filter_prune_settings(earlier):
    return {"pruning_schedule": co.ConstantRatio(0.5)}


#: Clusters per weight: few enough that every small kernel shows them.
CLUSTERS = 4


def _cluster_settings(earlier):
    keeps_zeros = any("sparsity" in _records(name) for name in earlier)  # after pruning: keep its zeros
    return {
        "number_of_clusters": CLUSTERS,
        "cluster_centroids_init": co.CentroidInitialization.LINEAR,
        "preserve_sparsity": keeps_zeros,
    }


def _quantize_settings(earlier):
    return {}


def _prune_effect(result, name):
    checks = [c for c in result.report if c.kind == "sparsity"]
    assert checks and all(c.expected >= 0.4 for c in checks), f"{name}: no weight reached 50% sparsity:\n{result.report}"


def _filter_prune_effect(result, name):
    _prune_effect(result, name)  # its sparsity constraint: the pruned channels' share of each kernel
    # Whatever stages follow, the file holds the smaller graph: verify found each
    # filter-pruned weight's tensor without the pruned channels.
    channels = [c for c in result.report if c.kind == "channels"]
    assert channels and all(c.channels_removed and c.holds for c in channels), f"{name}: channels left in the file:\n{result.report}"
    if result.stripped is not None:
        # Kernel values only: the wrapped model's count also holds its wrappers' state.
        before, after = ct.kernel_parameters(result.model), ct.kernel_parameters(result.stripped)
        assert after < before, f"{name}: stripping did not make the model smaller ({after} >= {before} kernel parameters)"


def _cluster_effect(result, name):
    checks = [c for c in result.report if c.kind == "clusters"]
    assert checks and all(c.found is not None and c.found <= CLUSTERS for c in checks), f"{name}:\n{result.report}"


def _quantize_effect(result, name):
    assert ct.has_trained_ranges(result.optimized), f"{name}: the model holds no trained quantization ranges"


@dataclasses.dataclass(frozen=True)
class TechniqueSettings:
    """How the harness applies one registered technique.

    Attributes:
        settings: ``earlier techniques -> keyword settings``: fields of the
            technique's config that are also keywords of its public function,
            chosen to take effect from the first training step.
        effect: ``(result, name) -> None``: asserts the effect is visible.
        exact_strip: Stripping it keeps the outputs up to float rounding
            (False: it changes them within quantization error, as dropping QAT's
            activation ranges does).
    """

    settings: Callable[[Sequence[str]], dict]
    effect: Callable[[ConformanceResult, str], None]
    exact_strip: bool = True


#: One entry per registered technique; a technique registered without one fails every case that uses it.
TECHNIQUE_SETTINGS: dict[str, TechniqueSettings] = {
    "prune": TechniqueSettings(_prune_settings, _prune_effect),
    "filter_prune": TechniqueSettings(_filter_prune_settings, _filter_prune_effect),
    "cluster": TechniqueSettings(_cluster_settings, _cluster_effect),
    "quantize": TechniqueSettings(_quantize_settings, _quantize_effect, exact_strip=False),
}


def technique_settings(name: str) -> TechniqueSettings:
    """The harness's settings for technique ``name``; fails the test loudly if it has none."""
    get_technique(name)  # an unknown name raises, listing the registered ones
    if name not in TECHNIQUE_SETTINGS:
        pytest.fail(
            f"technique {name!r} is registered but the conformance harness has no settings for it: "
            "add a TechniqueSettings entry to TECHNIQUE_SETTINGS in tests/harness.py."
        )
    return TECHNIQUE_SETTINGS[name]


# --- the model around the layer ----------------------------------------------------------------------------------


def _sequential_call(layers, x):
    for layer in layers:
        x = layer(x)
    return x


def build_model(layer_factory, input_shape, *, input_dtype="float32", call=None, classes=4) -> keras.Model:
    """``Input -> layer(s) -> Flatten (if the output has more than one axis) -> Dense(classes)``.

    Args:
        layer_factory: ``() -> layer or list of layers`` (new layers on each call).
        input_shape: One sample's shape.
        input_dtype: The input's dtype (``"int32"`` for an Embedding).
        call: ``(layers, x) -> y``: how the layers are called (default: in sequence).
        classes: Units of the Dense head.

    Returns:
        The Functional model, its biases and normalization statistics randomized.
    """
    inputs = keras.Input(input_shape, dtype=input_dtype, name="inputs")
    made = layer_factory()
    layers = list(made) if isinstance(made, (list, tuple)) else [made]
    h = (call or _sequential_call)(layers, inputs)
    if len(h.shape) > 2:
        h = keras.layers.Flatten(name="flatten")(h)
    model = keras.Model(inputs, keras.layers.Dense(classes, name="head")(h), name="conformance")
    randomize_vectors(model)
    return model


_CENTERED = ("bias", "beta", "moving_mean")
_POSITIVE = ("gamma", "moving_variance")


def randomize_vectors(model, seed: int = 3) -> None:
    """Gives biases, BN/LN offsets and scales and BN statistics random values (Keras starts them at 0 or 1).

    With zero biases and identity normalization, a pruned channel outputs
    zero whether or not its bias is masked, and a fold is the identity: the
    mistakes this harness looks for would not show.
    """
    rng = np.random.default_rng(seed)
    for variable in model.weights:
        leaf = variable.path.split("/")[-1]
        if leaf in _CENTERED:
            variable.assign(rng.normal(0.0, 0.5, variable.shape).astype(variable.dtype))
        elif leaf in _POSITIVE:
            variable.assign(rng.uniform(0.5, 1.5, variable.shape).astype(variable.dtype))


def sample_data(model, samples: int = 16, vocabulary: int = 16, seed: int = 0):
    """``(x, y)``: random inputs shaped like the model's (integers below ``vocabulary`` for an int input), labels."""
    rng = np.random.default_rng(seed)
    spec = model.inputs[0]
    shape = (samples, *spec.shape[1:])
    if "int" in str(spec.dtype):
        x = rng.integers(0, vocabulary, shape).astype(str(spec.dtype))
    else:
        x = rng.standard_normal(shape).astype("float32")
    return x, rng.integers(0, model.output_shape[-1], samples)


# --- checks ------------------------------------------------------------------------------------------------------


def predict(model, x) -> np.ndarray:
    """The model's inference outputs on ``x``, as numpy."""
    return keras.ops.convert_to_numpy(model(x, training=False))


def weight_values(model) -> list[tuple[str, np.ndarray]]:
    """``(name, value)`` of every weight, in the model's order."""
    return [(v.name, keras.ops.convert_to_numpy(v)) for v in model.weights]


def assert_same_weights(actual, expected, what: str) -> None:
    """Same number, names, shapes and bitwise values of weights (``(name, value)`` lists)."""
    assert [n for n, _ in actual] == [n for n, _ in expected], f"{what}: weight names differ"
    for (name, a), (_, e) in zip(actual, expected):
        np.testing.assert_array_equal(a, e, err_msg=f"{what}: weight {name!r} differs")


def _snapshot(model):
    layers = [(layer.name, type(layer)) for layer in model.layers]
    return layers, weight_values(model)


def _layer_ids(model) -> set[int]:
    ids = set()
    for layer in iter_layers(model):
        ids.add(id(layer))
        ids.update(id(w) for w in wrapper_chain(layer))
        ids.add(id(base_layer(layer)))
    return ids


def assert_not_mutated(model, snapshot, result, what: str) -> None:
    """``model`` still has its layers and weights, and shares no layer object with ``result``."""
    layers, weights = _snapshot(model)
    assert layers == snapshot[0], f"{what} changed the layers of its input model"
    assert_same_weights(weights, snapshot[1], f"{what} changed its input model")
    shared = _layer_ids(model) & _layer_ids(result)
    assert not shared, f"{what}: the result shares {len(shared)} layer objects with its input model"


def output_scale(reference: np.ndarray) -> float:
    """The scale outputs are compared at: the largest absolute output (at least 1e-3)."""
    return max(float(np.abs(reference).max()), 1e-3)


def assert_outputs_agree(actual, reference, rtol: float, what: str) -> None:
    """Outputs within ``rtol`` of the reference's largest absolute value, element by element."""
    actual, reference = np.asarray(actual, np.float64), np.asarray(reference, np.float64)
    assert actual.shape == reference.shape, f"{what}: shape {actual.shape} != {reference.shape}"
    error = float(np.abs(actual - reference).max())
    bound = rtol * output_scale(reference)
    agree = float(np.mean(actual.argmax(-1) == reference.argmax(-1)))
    assert error <= bound, (
        f"{what}: outputs differ by up to {error:.4g} (allowed {bound:.4g}, {rtol:.0%} of the largest output); "
        f"argmax agreement {agree:.0%}"
    )


def techniques_held(model) -> set[str]:
    """Names of the registered techniques some layer of ``model`` carries."""
    return {technique.name for layer in iter_layers(model) for _, technique in chain_techniques(layer)}


def wrapped_layers(model, name: str) -> list[str]:
    """Base-layer names of the layers carrying technique ``name``."""
    technique = get_technique(name)
    return [base_layer(layer).name for layer in iter_layers(model) if any(technique.owns(w) for w in wrapper_chain(layer))]


def _with_weights(model, names) -> list[str]:
    """The layers of ``names`` with optimizable weights (filter pruning also wraps a BatchNormalization it masks)."""
    layers = {base_layer(layer).name: base_layer(layer) for layer in iter_layers(model)}
    return [name for name in names if weight_specs(layers[name])]


# --- the steps ---------------------------------------------------------------------------------------------------


def apply_technique(name: str, model, earlier: Sequence[str] = ()):
    """Applies technique ``name`` through its registered config and public function.

    The settings must make a valid config that round-trips through
    ``get_config``/``from_config``; the public function named by the
    registry then gets the same settings as keywords.
    """
    technique = get_technique(name)
    settings = technique_settings(name).settings(tuple(earlier))
    config = technique.config(**settings)
    config.validate()
    assert technique.config.from_config(config.get_config()).get_config() == config.get_config(), name
    function = getattr(co, technique.function)
    return function(model, **settings)


def train(model, x, y) -> None:
    """One training step: one epoch of ``fit`` over all samples in one batch.

    One batch, so that the activation ranges QAT starts from the first batch
    cover every sample the later checks run on (a range that saw half of them
    clips the other half, which ``strip_quantization`` would not).
    """
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), run_eagerly=True
    )
    model.fit(x, y, batch_size=len(x), epochs=1, verbose=0, shuffle=False)


def check_save_load(model, x) -> None:
    """``.keras`` round trip: predictions and every weight bitwise equal."""
    with tempfile.TemporaryDirectory(prefix="collabopt_conformance_") as directory:
        path = pathlib.Path(directory) / "model.keras"
        model.save(path)
        loaded = keras.models.load_model(path)
    np.testing.assert_array_equal(predict(loaded, x), predict(model, x), err_msg=".keras round trip: predictions differ")
    assert_same_weights(weight_values(loaded), weight_values(model), ".keras round trip")


def check_copies(model, x) -> None:
    """``copy_layer`` of every layer and a ``map_layers`` copy of the model hold the same weights and predict the same."""
    for layer in iter_layers(model):
        copied = copy_layer(layer)
        assert type(copied) is type(layer), f"copy_layer({layer.name}) is a {type(copied).__name__}"
        assert_same_weights(weight_values(copied), weight_values(layer), f"copy_layer({layer.name})")
    copied = map_layers(model, lambda layer: None)
    assert_same_weights(weight_values(copied), weight_values(model), "model copy")
    np.testing.assert_array_equal(predict(copied, x), predict(model, x), err_msg="model copy: predictions differ")


def strip_all(model, chain: Sequence[str]):
    """Strips each technique of ``chain`` with its registered strip function, outermost first."""
    for name in reversed(chain):
        technique = get_technique(name)
        if name in techniques_held(model):
            before = _snapshot(model)
            stripped = getattr(co, technique.strip)(model)
            assert_not_mutated(model, before, stripped, technique.strip)
            model = stripped
        assert name not in techniques_held(model), f"{technique.strip} left {name} wrappers"
    return model


def check_strip(optimized, chain, x):
    """The stripped model holds no collabopt wrapper and keeps the optimized model's outputs."""
    stripped = strip_all(optimized, chain)
    leftover = [layer.name for layer in iter_layers(stripped) if wrapper_chain(layer)]
    assert not leftover, f"stripping {list(chain)} left collabopt wrappers: {leftover}"
    exact = all(technique_settings(name).exact_strip for name in chain)
    assert_outputs_agree(predict(stripped, x), predict(optimized, x), 1e-4 if exact else 0.1, "stripped model")
    return stripped


def convert_int8(model, x, expect: Expected | None):
    """Full-integer export: no float op, unless ``expect`` allows some (then at least one of them stays float)."""
    allowed = expect.float_ops if expect is not None and expect.step == "convert" else ()
    tflite = ct.convert(model, "int8", x, allow_float_islands=bool(allowed))
    islands = sorted({island["op"] for island in tflite.float_islands()})
    if allowed:
        assert islands and set(islands) <= set(allowed), (
            f"float ops {islands}; expected some of {list(allowed)} ({expect.reason}). "
            "If none is left, the expectation is outdated: remove it."
        )
    else:
        assert islands == [], f"int8 file computes in float: {islands}"
    return tflite


def check_verify(optimized, tflite, chain) -> list:
    """Every recorded constraint holds in the file, and each technique's wrapped layers are all checked."""
    report = ct.verify(optimized, tflite)
    assert all(c.holds for c in report), f"constraints broken in the int8 file:\n{report}"
    checked = {(c.layer, c.kind) for c in report}
    for name in chain:
        for kind in _records(name):
            wrapped = _with_weights(optimized, wrapped_layers(optimized, name))
            missing = [layer for layer in wrapped if (layer, kind) not in checked]
            assert not missing, f"verify did not check the {kind} constraint of {name} on {missing}:\n{report}"
    return report


# --- the harness -------------------------------------------------------------------------------------------------


def _as_chain(technique) -> tuple[str, ...]:
    return (technique,) if isinstance(technique, str) else tuple(technique)


def _step(expect: Expected | None, step: str, result: ConformanceResult, function, *args):
    """Runs ``function(*args)``; if ``expect`` says it raises here, asserts it does and marks the run stopped."""
    raises = expect.raises(step) if expect is not None else None
    if raises is None:
        return function(*args)
    with raises:
        function(*args)
    result.stopped_at = step
    return None


def _apply_chain(chain, result, y, expect, train_each_stage):
    """Applies and trains each stage; returns the optimized model, or None if an expected error stopped the run."""
    current, x = result.model, result.x
    for i, name in enumerate(chain):
        snapshot = _snapshot(current)
        optimized = _step(expect, "apply", result, apply_technique, name, current, chain[:i])
        if result.stopped_at:
            return None
        assert_not_mutated(current, snapshot, optimized, get_technique(name).function)
        assert wrapped_layers(optimized, name), f"{get_technique(name).function} wrapped no layer"
        assert np.all(np.isfinite(predict(optimized, x[:2]))), f"{get_technique(name).function}: non-finite outputs"
        if train_each_stage or i == len(chain) - 1:
            _step(expect, "train", result, train, optimized, x, y)
            if result.stopped_at:
                return None
        current = optimized
    return current


def _export(result, chain, expect, int8_rtol) -> None:
    """int8 export, verify, and the file's outputs against the Keras model's."""
    optimized, x = result.optimized, result.x
    result.tflite = _step(expect, "convert", result, convert_int8, optimized, x, expect)
    if result.stopped_at:
        return
    result.report = check_verify(optimized, result.tflite, chain)
    assert_outputs_agree(result.tflite.predict(x), predict(optimized, x), int8_rtol, "int8 file vs Keras model")


def run_conformance(
    technique: str | Sequence[str],
    layer_factory: Callable,
    input_shape: tuple,
    *,
    input_dtype: str = "float32",
    call: Callable | None = None,
    classes: int = 4,
    samples: int = 16,
    vocabulary: int = 16,
    expect: Expected | None = None,
    train_each_stage: bool = True,
    strip: bool = True,
    int8_rtol: float = 0.06,
    seed: int = 0,
) -> ConformanceResult:
    """Runs one technique (or chain) on one layer kind through every public path; see the module docstring.

    Args:
        technique: A registered technique's name, or a chain of names in
            apply order (e.g. ``("prune", "cluster", "quantize")``).
        layer_factory: ``() -> layer or list of layers`` under test (new ones per call).
        input_shape: One sample's shape (small: 4-8 channels, 8x8 images).
        input_dtype: The model input's dtype.
        call: ``(layers, x) -> y`` when the layers are not called in sequence.
        classes: Units of the Dense head.
        samples: Number of random samples (training, calibration, comparisons).
        vocabulary: Upper bound of integer inputs.
        expect: The declared outcome of a combination that cannot work.
        train_each_stage: Train after every stage of a chain (False: only
            after the last, as ``quantize_model(prune_filters(model))`` is).
        strip: Run the strip step (False only where a test checks stripping
            on its own, e.g. a known bug marked ``xfail`` there); the
            techniques' effects that need the stripped model are then not checked.
        int8_rtol: How far the int8 file's outputs may be from the Keras
            model's, as a fraction of the largest absolute output (measured:
            at most 3% for every passing case; the bugs it caught, 11-19%).
        seed: Seed of Keras' initializers.

    Returns:
        A :class:`ConformanceResult` (``stopped_at`` names the step an expected error stopped).
    """
    chain = _as_chain(technique)
    for name in chain:
        technique_settings(name)
    keras.utils.set_random_seed(seed)
    model = build_model(layer_factory, input_shape, input_dtype=input_dtype, call=call, classes=classes)
    x, y = sample_data(model, samples, vocabulary)
    result = ConformanceResult(model, x=x)
    result.optimized = _apply_chain(chain, result, y, expect, train_each_stage)
    for step, check in (("save", check_save_load), ("copy", check_copies)):
        if result.stopped_at:
            return result
        _step(expect, step, result, check, result.optimized, x)
    if not result.stopped_at:
        _export(result, chain, expect, int8_rtol)
    if strip and not result.stopped_at:
        result.stripped = _step(expect, "strip", result, check_strip, result.optimized, chain, x)
    if not result.stopped_at:
        for name in chain:
            technique_settings(name).effect(result, name)
    return result
