"""QuantizeWrapper: the QAT stage of the weight pipeline (weights, inputs, outputs, BN folding)."""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from collabopt.errors import InvalidArgumentError
from collabopt.layers import (
    OptimizationWrapper,
    base_layer,
    get_variable,
    handled_as_composite,
    layer_roles,
    spec_for,
    sublayer_at,
    weight_specs,
    wrapper_chain,
)
from collabopt.layers.channels import cut_value, kept_channels
from collabopt.layers.copy import copy_layer_or_share, held_classes_in_scope
from collabopt.layers.execution import (
    composite_batchnorm_folds,
    identity_followed_tensors,
    internal_tensors,
    output_range_calibrated,
    to_execution_form,
)
from collabopt.quantization.config import QuantizeConfig
from collabopt.quantization.quantizers import Quantizer


def _identity(x, *args, **kwargs):
    return x


def _is_float(x) -> bool:
    return "float" in str(getattr(x, "dtype", "float32"))


def _flatten(x):
    return list(x) if isinstance(x, (list, tuple)) else [x]


@keras.saving.register_keras_serializable(package="collabopt")
class QuantizeWrapper(OptimizationWrapper):
    """Fake-quantizes a layer's weights, flagged inputs and outputs as the int8 TFLite model will.

    Effective weights are those of the chain inside (pruning, clustering, a
    derived constraint), folded with a following BatchNormalization if one was
    absorbed, then fake-quantized; zeros and cluster structure survive because
    symmetric quantization maps 0 to 0 and K values to at most K values.

    BatchNormalization folding uses the BN's moving statistics, which stay
    frozen during QAT (gamma and beta keep training through the fold), so the
    trained model computes exactly what the exported one does.

    Range state (EMA min/max) lives in this wrapper's variables. Before a range
    has seen data, inference passes values through unquantized, so a fresh QAT
    model predicts like the float model.

    Args:
        layer: Layer or wrapper chain to quantize.
        quantize_config: A :class:`QuantizeConfig`.
        folded_batchnorm: A BatchNormalization layer to fold into the weight
            holding the layer's output channels (its ``LayerRoles.output_weight``).
        quantize_inputs: One flag per input: fake-quantize that input (it comes
            from a model input or a float layer).
        input_quantizer: The quantizer for flagged inputs.
        quantize_outputs: False when TFLite fuses the next layer (a ReLU) into
            this one, so the next layer's output quantizer covers both.
        export_mode: Set by the exporter: ``"int8"`` (fixed ranges, no
            pass-through) — not for users.
    """

    collabopt_quantized = True
    tflite_form = True

    def __init__(
        self,
        layer,
        quantize_config: QuantizeConfig,
        folded_batchnorm=None,
        quantize_inputs=(),
        input_quantizer: Quantizer | None = None,
        quantize_outputs: bool = True,
        export_mode: str | None = None,
        **kwargs,
    ):
        kwargs.setdefault("name", f"quant_{base_layer(layer).name}")
        super().__init__(layer, **kwargs)
        if not isinstance(quantize_config, QuantizeConfig):
            raise InvalidArgumentError(f"layer '{self.base_layer.name}': quantize_config must be a QuantizeConfig; received {quantize_config!r}.")
        self.quantize_config = quantize_config
        self.folded_batchnorm = folded_batchnorm
        if folded_batchnorm is not None and layer_roles(self.base_layer).output_weight is None:
            raise InvalidArgumentError(
                f"layer '{self.base_layer.name}' ({type(self.base_layer).__name__}): a BatchNormalization can only "
                "be folded into a layer whose roles name its output weight (Dense, Conv*, DepthwiseConv*, "
                "SeparableConv*, or a custom layer registered with LayerRoles(output_weight=...))."
            )
        self.quantize_inputs = [bool(f) for f in quantize_inputs]
        self.input_quantizer = input_quantizer
        if any(self.quantize_inputs) and input_quantizer is None:
            raise InvalidArgumentError(f"layer '{self.base_layer.name}': quantize_inputs needs an input_quantizer.")
        self.export_mode = export_mode
        self._export_identity_indices = ()  # set by export_layer
        self._export_constants = None  # set by export_layer: frozen weights and ranges
        self.weight_quantizers = quantize_config.weight_quantizers(self.base_layer)
        self.quantize_outputs = bool(quantize_outputs)
        self.output_quantizers = quantize_config.output_quantizers(self.base_layer) if quantize_outputs else []
        self.internal_quantizers = quantize_config.internal_quantizers(self.base_layer)
        self.internal_folds = self._internal_folds()
        self.calibrating = False
        names = {s.name for s in weight_specs(self.base_layer) or ()}
        unknown = sorted(set(self.weight_quantizers) - names)
        if unknown:
            raise InvalidArgumentError(
                f"layer '{self.base_layer.name}' ({type(self.base_layer).__name__}): the quantize config "
                f"names weights {unknown} that the layer does not have; it has {sorted(names)}."
            )
        self._states: dict = {}

    # --- state ---------------------------------------------------------------
    def build_wrapper(self, input_shape):
        inner = self.inner_weights()
        for name, quantizer in self.weight_quantizers.items():
            self._states[f"w:{name}"] = quantizer.build(self, f"{self.spec(name).variable_name}_quant", tuple(inner[name].shape), self.spec(name))
        for i, quantizer in enumerate(self.output_quantizers):
            self._states[f"out:{i}"] = quantizer.build(self, f"output{i}", None)
        for i, flag in enumerate(self.quantize_inputs):
            if flag:
                self._states[f"in:{i}"] = self.input_quantizer.build(self, f"input{i}", None)
        for i, quantizer in enumerate(self.internal_quantizers):
            self._states[f"mid:{i}"] = quantizer.build(self, f"internal{i}", None)
        if self.folded_batchnorm is not None and not self.folded_batchnorm.built:
            self.folded_batchnorm.build(self.base_layer.compute_output_shape(input_shape))

    def range_states(self):
        """``[(label, quantizer, state)]`` for every activation range of this wrapper."""
        out = [(f"output{i}", q, self._states[f"out:{i}"]) for i, q in enumerate(self.output_quantizers)]
        out += [(f"input{i}", self.input_quantizer, self._states[f"in:{i}"]) for i, f in enumerate(self.quantize_inputs) if f]
        out += [(f"internal{i}", q, self._states[f"mid:{i}"]) for i, q in enumerate(self.internal_quantizers)]
        return out

    # --- BN folding ----------------------------------------------------------
    def _internal_folds(self) -> tuple:
        """``(weight name, producer path, BatchNormalization path)`` for each fold inside a composite base layer.

        As between top-level layers, the BatchNormalization's moving statistics
        fold into the producer's weight before it is fake-quantized (so the
        grid trained is the one the converter stores), and the
        BatchNormalization itself then adds the folded bias correction.
        """
        base = self.base_layer
        if not handled_as_composite(base):
            return ()
        folds = []
        for producer, bn in composite_batchnorm_folds(base):
            name = f"{producer}/{layer_roles(sublayer_at(base, producer)).output_weight}"
            if name in self.weight_quantizers:
                folds.append((name, producer, bn))
        return tuple(folds)

    @property
    def folded_weight_names(self) -> set:
        """Weights whose output channels a folded BatchNormalization rescales (verify compares them per channel)."""
        names = {self._fold_target()} if self.folded_batchnorm is not None else set()
        return names | {name for name, _, _ in self.internal_folds}

    def sublayer_calls(self, training):
        """A BatchNormalization folded inside a composite base layer passes its input on (see :meth:`replaced_variables`).

        Where the producer has no bias to take the folded bias correction, the
        BatchNormalization adds it instead.
        """
        replaced = dict(super().sublayer_calls(training) or {})
        base = self.base_layer
        for _, producer_path, bn_path in self.internal_folds:
            bn, producer = sublayer_at(base, bn_path), sublayer_at(base, producer_path)
            if getattr(producer, "bias", None) is not None:
                replaced[bn_path] = _identity
                continue

            def add_correction(x, *args, _bn=bn, _producer=producer, **kwargs):
                return x + ops.cast(self._bias_correction(_bn, _producer), x.dtype)

            replaced[bn_path] = add_correction
        return replaced or None

    def replaced_variables(self, training):
        """A producer folding a BatchNormalization inside a composite computes with its bias plus the correction.

        One bias add, as TFLite's conv computes it (a second add after the conv
        kept the converter from storing a 4-bit filter as INT4).
        """
        replaced = list(super().replaced_variables(training) or [])
        base = self.base_layer
        for _, producer_path, bn_path in self.internal_folds:
            producer = sublayer_at(base, producer_path)
            bias = getattr(producer, "bias", None)
            if bias is not None:
                correction = self._bias_correction(sublayer_at(base, bn_path), producer)
                replaced.append((bias, ops.convert_to_tensor(bias) + ops.cast(correction, bias.dtype)))
        return replaced or None

    def _fold_target(self) -> str:
        return layer_roles(self.base_layer).output_weight

    def _bn_scale(self, bn=None):
        bn = bn or self.folded_batchnorm
        gamma = ops.convert_to_tensor(bn.gamma) if bn.scale else 1.0
        return gamma / ops.sqrt(ops.convert_to_tensor(bn.moving_variance) + bn.epsilon)

    def _fold(self, weight, name, bn=None):
        spec = self.spec(name)
        rank = len(weight.shape)
        axes = {a % rank for a in spec.channel_axes}
        shape = [weight.shape[a] if a in axes else 1 for a in range(rank)]
        return weight * ops.reshape(self._bn_scale(bn), shape)

    def _bias_correction(self, bn=None, producer=None):
        """``folded bias - layer bias``, added to the layer's output (or to ``producer``'s, inside a composite)."""
        bn = bn or self.folded_batchnorm
        s = self._bn_scale(bn)
        beta = ops.convert_to_tensor(bn.beta) if bn.center else 0.0
        correction = beta - ops.convert_to_tensor(bn.moving_mean) * s
        bias = getattr(producer or self.base_layer, "bias", None)
        if bias is not None:
            correction = correction + ops.convert_to_tensor(bias) * (s - 1.0)
        return correction

    def _kept_output_channels(self):
        """Float 0/1 array over the output channels, 0 where a wrapper inside prunes the channel; None if none does."""
        kept = None
        for wrapper in wrapper_chain(self.layer):
            pruned = wrapper.pruned_output_channels()
            if pruned is not None:
                keep = np.logical_not(np.asarray(pruned, bool)).astype(np.float32)
                kept = keep if kept is None else kept * keep
        return kept

    def _kept_correction(self) -> np.ndarray:
        """The folded BatchNormalization's bias correction as numpy, zero on the channels the inner chain prunes.

        In training the correction is masked by the inner chain's
        :meth:`output_channel_mask`; an exported layer has no mask, so the
        correction it adds must be zero there already.
        """
        correction = np.array(ops.convert_to_numpy(self._bias_correction()), np.float32)
        kept = self._kept_output_channels()
        return correction * kept if kept is not None and kept.shape == correction.shape else correction

    # --- the pipeline --------------------------------------------------------
    def _prepared_weights(self, weights):
        """The weights as the fake-quant ops see them: BN folded, in the TFLite kernel's shape."""
        out = dict(weights)
        if self.folded_batchnorm is not None:
            target = self._fold_target()
            out[target] = self._fold(ops.convert_to_tensor(out[target]), target)
        for name, _, bn_path in self.internal_folds:
            out[name] = self._fold(ops.convert_to_tensor(out[name]), name, sublayer_at(self.base_layer, bn_path))
        # Quantize each weight in the shape the TFLite kernel consumes (a
        # 1-D conv kernel expanded to rank 4), so the per-channel axis survives.
        return to_execution_form(self.base_layer, out)

    def transform_weights(self, weights, training):
        frozen = self._export_constants
        if frozen is not None:
            out = {**weights, **{name: ops.convert_to_tensor(value) for name, value in frozen["weights"].items()}}
            for name, quantizer in self.weight_quantizers.items():
                out[name] = quantizer.apply_range(out[name], *frozen["ranges"][f"w:{name}"], self.spec(name))
            return out
        out = self._prepared_weights(weights)
        for name, quantizer in self.weight_quantizers.items():
            out[name] = quantizer(ops.convert_to_tensor(out[name]), self._states[f"w:{name}"], training, self.spec(name), export=bool(self.export_mode))
        return out

    def _quantize(self, key, quantizer, x, training):
        if x.dtype in ("float16", "bfloat16"):
            # Mixed precision: TF's fake-quant ops and the ranges are float32;
            # the int8 grid is what the layer after computes on either way.
            return ops.cast(self._quantize(key, quantizer, ops.cast(x, "float32"), training), x.dtype)
        frozen = self._export_constants
        if frozen is not None and key in frozen["ranges"]:
            return quantizer.apply_range(x, *frozen["ranges"][key])
        state = self._states[key]
        if self.calibrating:  # calibrate(): widen the range to what is seen, compute in float
            quantizer.observe(x, state)
            return x
        return quantizer(x, state, training, export=bool(self.export_mode))

    def transform_inputs(self, inputs, training):
        inputs = super().transform_inputs(inputs, training)
        if not any(self.quantize_inputs):
            return inputs
        # Integer inputs (token ids of an Embedding) are indices, not values
        # to quantize.
        flat = [
            self._quantize(f"in:{i}", self.input_quantizer, x, training)
            if i < len(self.quantize_inputs) and self.quantize_inputs[i] and _is_float(x)
            else x
            for i, x in enumerate(_flatten(inputs))
        ]
        return flat if isinstance(inputs, (list, tuple)) else flat[0]

    def transform_internal(self, training):
        if not self.internal_quantizers:
            return None
        skipped = self._export_identity_indices if self.export_mode else ()
        return lambda x, i: x if i in skipped else self._quantize(f"mid:{i}", self.internal_quantizers[i], x, training)

    def transform_outputs(self, outputs, training):
        if self.folded_batchnorm is not None:
            frozen = self._export_constants
            if frozen is not None:
                correction = frozen["bias_correction"]
            else:
                correction = self._bias_correction()
                kept = self.output_channel_mask()  # filter pruning inside: its removed channels get no correction
                if kept is not None and tuple(kept.shape) == tuple(correction.shape):
                    correction = correction * ops.cast(kept, correction.dtype)
            outputs = outputs + ops.cast(correction, outputs.dtype)  # (float16 under mixed precision)
        # The inner chain's output transform (filter pruning's channel mask)
        # acts on the folded output, before the output range.
        outputs = super().transform_outputs(outputs, training)
        if not self.output_quantizers or (self.export_mode and output_range_calibrated(self.base_layer)):
            return outputs
        flat = [
            self._quantize(f"out:{i}", q, x, training)
            for i, (q, x) in enumerate(zip(self.output_quantizers, _flatten(outputs)))
        ]
        return flat if isinstance(outputs, (list, tuple)) else flat[0]

    # --- leaving QAT ---------------------------------------------------------
    def float_layer(self) -> keras.layers.Layer:
        """A plain copy of the base layer holding the folded, fake-quantized weights (and folded bias)."""
        base = self.base_layer
        weights = self.final_weights()
        if self.folded_batchnorm is None:
            plain = copy_layer_or_share(base)
        else:
            config = base.get_config()
            config["use_bias"] = True
            plain = type(base).from_config(config)
            plain.build_from_config(base.get_build_config())
            bias = getattr(base, "bias", None)
            b = ops.convert_to_numpy(bias) if bias is not None else 0.0
            folded_bias = b + self._kept_correction()
            for var in plain.weights:
                source = getattr(base, var.path.split("/")[-1], None)
                if isinstance(source, keras.Variable):
                    var.assign(ops.copy(source.value))  # not the source's buffer (JAX donates it in fit)
            plain.bias.assign(np.asarray(folded_bias, np.float32))
        for name, value in weights.items():
            get_variable(plain, spec_for(plain, name)).assign(value)
        bias = getattr(plain, "bias", None)
        kept = self._kept_output_channels()
        if bias is not None and kept is not None and tuple(bias.shape) == kept.shape:
            # Channels the inner chain prunes output zeros (in training its
            # output mask does it): their bias is zero in the plain layer.
            bias.assign(ops.convert_to_numpy(bias) * kept)
        for _, producer_path, bn_path in self.internal_folds:
            # The producer holds the folded weights; its BatchNormalization
            # becomes ``x + correction`` (unit scale and statistics).
            bn = sublayer_at(plain, bn_path)
            correction = ops.convert_to_numpy(
                self._bias_correction(sublayer_at(base, bn_path), sublayer_at(base, producer_path))
            )
            if bn.scale:
                bn.gamma.assign(np.ones(bn.gamma.shape, "float32"))
            bn.moving_mean.assign(np.zeros(bn.moving_mean.shape, "float32"))
            bn.moving_variance.assign(np.full(bn.moving_variance.shape, 1.0 - bn.epsilon, "float32"))
            bn.beta.assign(np.asarray(correction, "float32"))
        return plain

    def stripped(self) -> keras.layers.Layer:
        return self.float_layer()

    def export_layer(self, mode=None):
        """For a mode that keeps fake-quant ops (int8, an :class:`~collabopt.tflite.modes.ExportMode`): this
        wrapper with fixed ranges around the stripped inner layer; other modes: :meth:`float_layer`."""
        if not getattr(mode, "keeps_fake_quant", False):
            return self.float_layer()
        missing = [label for label, q, state in self.range_states() if not bool(ops.convert_to_numpy(q.is_initialized(state)))]
        if missing:
            raise InvalidArgumentError(
                f"layer '{self.base_layer.name}': quantization ranges {missing} have seen no data. Train the "
                "QAT model, or call collabopt.keras.calibrate(model, data), before converting to int8."
            )
        # The export form runs the input model's own base layer (read, never
        # written): every weight the chain transforms, every range and the
        # folded bias come in as constants read now from this chain, so no
        # copy of the layer or of the chain's final weights is needed. A
        # wrapper inside whose stripped form changes more than those weights
        # (filter pruning zeroes the bias of its pruned channels) is stripped.
        shares_base = all(type(w).stripped is OptimizationWrapper.stripped for w in wrapper_chain(self.layer))
        exported = self.rewrap(self.base_layer) if shares_base else self.with_inner_stripped()
        exported.export_mode = mode.name
        exported._export_constants = self._frozen_for_export()
        # A tensor that the next op leaves unchanged (the converter folds
        # ``* 1`` and ``+ 0``) takes the following range instead of its own;
        # read from the weights now, eagerly, not while tracing. (The layers
        # with such tensors, LayerNormalization, have no chain-transformed weight.)
        names = internal_tensors(exported.base_layer)
        exported._export_identity_indices = tuple(names.index(t) for t in identity_followed_tensors(exported.base_layer))
        return exported

    def _frozen_for_export(self) -> dict:
        """Every value the exported graph needs that training computes from variables, as numpy.

        The fake-quant ops then take constants (weights after folding, ranges
        after nudging) instead of the arithmetic that derives them, so the
        traced graph is several times smaller and converts faster; the
        converter folds that arithmetic to the same constants anyway.
        A range a quantizer reads from the tensor itself (not from its state)
        stays computed in the graph.
        """
        prepared = self._prepared_weights(self.inner_weights(False))
        weights = {name: ops.convert_to_numpy(value) for name, value in prepared.items()}
        ranges = {
            f"w:{name}": quantizer.export_range(ops.convert_to_tensor(prepared[name]), self._states[f"w:{name}"], self.spec(name))
            for name, quantizer in self.weight_quantizers.items()
        }
        keyed = [(f"out:{i}", q) for i, q in enumerate(self.output_quantizers)]
        keyed += [(f"in:{i}", self.input_quantizer) for i, flag in enumerate(self.quantize_inputs) if flag]
        keyed += [(f"mid:{i}", q) for i, q in enumerate(self.internal_quantizers)]
        for key, quantizer in keyed:
            if quantizer.range_from_state:
                ranges[key] = quantizer.export_range(None, self._states[key])
        correction = self._kept_correction() if self.folded_batchnorm is not None else None
        return {"weights": weights, "ranges": ranges, "bias_correction": correction}

    def can_lose_channels(self) -> bool:
        """True for an export form around a plain layer: its weights and ranges are constants that can be cut."""
        return self._export_constants is not None and self.layer is self.base_layer

    def without_channels(self, new_inner, cuts: dict) -> "QuantizeWrapper":
        """This export form around ``new_inner`` (the base layer with channels removed), its constants cut to match.

        Frozen weights lose what ``cuts`` drops (negative axes: the same in
        their execution form), per-channel weight ranges keep the entries of
        the channels left, and a folded BatchNormalization's bias correction
        keeps the output channels left. Per-tensor activation ranges stay:
        the removed channels held exact zeros, inside every range.
        """
        if not self.can_lose_channels():
            return super().without_channels(new_inner, cuts)
        frozen = self._export_constants
        weights = {name: cut_value(value, cuts.get(name, {})) for name, value in frozen["weights"].items()}
        ranges = dict(frozen["ranges"])
        for name in self.weight_quantizers:
            lo, hi = (np.asarray(v) for v in ranges[f"w:{name}"])
            if lo.size > 1:
                shape = np.shape(frozen["weights"][name])
                kept = kept_channels(shape, self.spec(name).channel_axes, cuts.get(name, {}))
                ranges[f"w:{name}"] = (lo.reshape(-1)[kept], hi.reshape(-1)[kept])
        correction = frozen["bias_correction"]
        if correction is not None:  # one entry per output channel of the weight BN folds into
            target = self._fold_target()
            correction = correction[kept_channels(np.shape(frozen["weights"][target]), self.spec(target).channel_axes, cuts.get(target, {}))]
        config = self.get_config()
        config.pop("layer")
        with held_classes_in_scope(self):
            new = type(self).from_config_with_layer(config, new_inner)
        new.export_mode = self.export_mode
        new._export_constants = {"weights": weights, "ranges": ranges, "bias_correction": correction}
        new._export_identity_indices = self._export_identity_indices
        return new

    def rewrap(self, new_inner) -> "QuantizeWrapper":
        # An export form keeps its frozen constants around a new inner layer
        # (e.g. the unrolled copy of a recurrent layer).
        new = super().rewrap(new_inner)
        new._export_constants = self._export_constants
        new._export_identity_indices = self._export_identity_indices
        return new

    def with_inner_stripped(self) -> "QuantizeWrapper":
        """This wrapper (config and state) around the inner chain's final weights as a plain layer."""
        inner = self.layer
        inner = inner.stripped() if isinstance(inner, OptimizationWrapper) else copy_layer_or_share(inner)
        return self.rewrap(inner)

    # --- serialization -------------------------------------------------------
    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "quantize_config": keras.saving.serialize_keras_object(self.quantize_config),
                "folded_batchnorm": keras.saving.serialize_keras_object(self.folded_batchnorm) if self.folded_batchnorm is not None else None,
                "quantize_inputs": self.quantize_inputs,
                "input_quantizer": keras.saving.serialize_keras_object(self.input_quantizer) if self.input_quantizer is not None else None,
                "quantize_outputs": self.quantize_outputs,
                "export_mode": self.export_mode,
            }
        )
        return config

    @classmethod
    def deserialize_config(cls, config):
        config["quantize_config"] = keras.saving.deserialize_keras_object(config["quantize_config"])
        for key in ("folded_batchnorm", "input_quantizer"):
            if config.get(key) is not None:
                config[key] = keras.saving.deserialize_keras_object(config[key])
        return config
