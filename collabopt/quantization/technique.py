"""Quantization-aware training as a technique: its config (the arguments of quantize_apply) and its registration."""

from __future__ import annotations

import dataclasses
import warnings

import keras
from keras import ops

from collabopt.errors import InvalidArgumentError, UnsupportedLayerError
from collabopt.layers import base_layer, copy_layer, optimizable_variables, spec_for, transformable_weight_names
from collabopt.preserve import PreserveWrapper, constraints_on, get_kind, known_kinds
from collabopt.quantization import graph
from collabopt.quantization.annotate import QuantizeAnnotate, annotate_model
from collabopt.quantization.schemes import Default8BitQuantizeScheme, FoldedBatchNormalization, QuantizeScheme
from collabopt.quantization.wrapper import QuantizeWrapper
from collabopt.technique import QUANTIZE_STAGE, Technique, TechniqueConfig, check_chain, register_technique
from collabopt.transform import PASS, WRAP, iter_layers


@dataclasses.dataclass
class _Plan:
    graph: graph.Plan
    unsupported: set
    preserve: tuple
    auto: bool


@dataclasses.dataclass(frozen=True)
class QuantizationConfig(TechniqueConfig):
    """The arguments of :func:`quantize_model` / :func:`quantize_apply`, as data.

    (Not to be confused with :class:`QuantizeConfig`, TFMOT's per-layer
    choice of quantizers.)

    Attributes:
        scheme: A :class:`QuantizeScheme` (None: :class:`Default8BitQuantizeScheme`).
        preserve: Constraint kinds to keep on stripped layers (None: the
            scheme's, else detected from the weights; ``()``: none).
        strict: Raise instead of warning on annotated layers the scheme cannot quantize.
        selective: Quantize only the layers marked with :class:`QuantizeAnnotate`
            (``quantize_apply``); False: every layer (``quantize_model``).
    """

    scheme: QuantizeScheme | None = None
    preserve: tuple | None = None
    strict: bool = False
    selective: bool = False

    def __post_init__(self):
        if self.scheme is None:
            object.__setattr__(self, "scheme", Default8BitQuantizeScheme())
        if isinstance(self.preserve, (str, list)):
            object.__setattr__(
                self, "preserve", (self.preserve,) if isinstance(self.preserve, str) else tuple(self.preserve)
            )

    def validate(self):
        if not isinstance(self.scheme, QuantizeScheme):
            raise InvalidArgumentError(
                f"scheme must be a QuantizeScheme (e.g. Default8BitQuantizeScheme()); received {self.scheme!r}."
            )
        preserve = self.preserve if self.preserve is not None else self.scheme.preserve
        unknown = [p for p in preserve or () if p not in known_kinds()]
        if unknown:
            raise InvalidArgumentError(
                f"preserve={tuple(preserve)}: unknown constraint kinds {unknown}; known: {known_kinds()}."
            )

    def unwrap(self, layer):
        return layer.layer if isinstance(layer, QuantizeAnnotate) else layer

    def config_of(self, annotation):
        """The :class:`QuantizeConfig` for an annotated layer (its own, else the scheme's default)."""
        if annotation.quantize_config is not None:
            return annotation.quantize_config
        return self.scheme.config_for(base_layer(annotation.layer))

    def prepare(self, target, what):
        """Unless ``selective``, every layer of the model is annotated first (``quantize_model``)."""
        if not isinstance(target, keras.Model):
            raise InvalidArgumentError(f"{what} expects a keras.Model; received {target!r}.")
        if self.selective:
            if not is_annotated(target):
                raise InvalidArgumentError(
                    f"{what}: model '{target.name}' has no annotated layers; use quantize_annotate_layer / "
                    "quantize_annotate_model first, or quantize_model to quantize everything."
                )
            return target
        return annotate_model(target, lambda layer: check_chain(layer, QUANTIZATION, what), what)

    def plan(self, model, what):
        annotated = [layer for layer in iter_layers(model) if isinstance(layer, QuantizeAnnotate)]
        unsupported = [a for a in annotated if self.config_of(a) is None]
        if unsupported:
            names = ", ".join(f"{base_layer(a.layer).name} ({type(base_layer(a.layer)).__name__})" for a in unsupported)
            if self.strict:
                raise UnsupportedLayerError(
                    f"{what}: the scheme cannot quantize {names}; give each a QuantizeConfig "
                    "(quantize_annotate_layer(layer, quantize_config=...)) or pass strict=False to leave them float."
                )
            warnings.warn(
                f"{what}: left in float (the scheme cannot quantize them): {names}. They train without "
                "fake-quant ops; int8 export still quantizes such a layer from the ranges around it (or "
                "representative_data) where TFLite has an integer kernel, and names any op that stays float.",
                stacklevel=4,
            )
        skipped = {a.name for a in unsupported}
        preserve = self.preserve if self.preserve is not None else self.scheme.preserve
        the_graph = graph.plan(model, lambda l: isinstance(l, QuantizeAnnotate) and l.name not in skipped)
        return _Plan(the_graph, skipped, tuple(preserve or ()), preserve is None)

    def classify(self, layer, plan):
        if isinstance(layer, QuantizeAnnotate) and layer.name not in plan.unsupported | plan.graph.folded:
            return WRAP
        return PASS

    def replace(self, layer, plan):
        if layer.name in plan.graph.folded:
            return FoldedBatchNormalization(name=graph.core(layer).name)
        return layer.layer if isinstance(layer, QuantizeAnnotate) else None

    def inner(self, layer, plan):
        wanted, options = _constraints_to_keep(layer, plan.preserve, plan.auto)
        return PreserveWrapper(layer, wanted, options) if wanted else layer

    def handler_arguments(self, layer, plan):
        bn = plan.graph.fold_into.get(layer.name)
        return {
            "quantize_config": self.config_of(layer),
            "folded_batchnorm": copy_layer(bn) if bn is not None else None,
            "quantize_inputs": plan.graph.input_flags.get(layer.name, []),
            "input_quantizer": self.scheme.input_quantizer(),
            "quantize_outputs": layer.name not in plan.graph.skip_output,
        }


def _constraints_to_keep(inner, preserve, auto):
    """``({weight: [kinds]}, {kind: options})`` the chain does not record and should keep.

    With ``auto``, every registered kind whose ``detect`` recognises the weight;
    else the kinds in ``preserve``.
    """
    base = base_layer(inner)
    wanted, options = {}, {}
    for name in transformable_weight_names(base):
        recorded = constraints_on(inner, name)
        kinds, value = [], None
        for kind_name in known_kinds() if auto else preserve:
            if kind_name in recorded:
                continue
            if auto:
                if value is None:
                    weights = inner.effective_weights(False) if hasattr(inner, "effective_weights") else None
                    value = ops.convert_to_numpy(weights[name] if weights else optimizable_variables(base)[name])
                detected = get_kind(kind_name).detect(value, spec_for(base, name))
                if detected is None:
                    continue
                options.setdefault(kind_name, {}).update(detected)
            kinds.append(kind_name)
        if kinds:
            wanted[name] = kinds
    return wanted, options


QUANTIZATION = register_technique(
    Technique(
        name="quantize",
        config=QuantizationConfig,
        handler=QuantizeWrapper,
        stage=QUANTIZE_STAGE,
        function="quantize_model",
        strip="strip_quantization",
        done="quantized",
        keeps=None,
        markers=(QuantizeAnnotate,),
        learning_rate=1e-4,
    )
)


def is_annotated(model) -> bool:
    """Whether any layer of ``model`` is marked for quantization."""
    return any(isinstance(layer, QuantizeAnnotate) for layer in iter_layers(model))
