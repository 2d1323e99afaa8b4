"""The weight pipeline shared by every collabopt wrapper.

A wrapped layer computes its output from *effective* weights. Each wrapper
transforms the weights handed to it by the wrapper inside it, so a chain
``Quantize(Cluster(Prune(Conv2D)))`` computes
``w_eff = fake_quant(cluster(mask * w))`` in one pass and runs the innermost
(base) layer on it via :func:`call_with_weights`; nothing is written back
into the base layer's variables.
"""

from __future__ import annotations

import types
from collections.abc import Mapping

import keras

from collabopt.errors import InvalidArgumentError, OrderError
from collabopt.layers import eager
from collabopt.layers.composite import sublayer_items
from collabopt.layers.copy import build_by_call, call_signature, copy_layer, held_classes_in_scope, rebuildable_config
from collabopt.layers.registry import call_with_weights, declared_specs, get_variable, optimizable_variables, spec_for


class RewrappingWrapper(keras.layers.Wrapper):
    """A ``keras.layers.Wrapper`` rebuilt around its (deserialized or copied) layer by ``from_config_with_layer``.

    ``from_config`` deserializes the wrapped layer and hands it over, so
    :func:`collabopt.layers.copy_layer` can copy a wrapper around a copy of its
    layer the same way.
    """

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        layer = keras.saving.deserialize_keras_object(config.pop("layer"), custom_objects=custom_objects)
        return cls.from_config_with_layer(config, layer)

    @classmethod
    def from_config_with_layer(cls, config: dict, layer):
        """This wrapper class around ``layer``, from a config without its ``layer`` entry."""
        config = dict(config)
        config.pop("layer", None)
        return cls(layer, **config)


class OptimizationWrapper(RewrappingWrapper):
    """Base class of pruning, clustering, quantization and preserve wrappers.

    Subclasses override :meth:`transform_weights` (and, for quantization,
    :meth:`transform_outputs`) and create their own state in
    :meth:`build_wrapper`, which runs after the wrapped chain is built (so
    the wrapped weights already hold their values).

    **The wrapper contract.** Everything the rest of the library asks a
    wrapper is declared here, with a default; a wrapper overrides what its
    technique changes and nothing reads a wrapper by duck typing:

    * the pipeline: :meth:`transform_weights`, :meth:`transform_inputs`,
      :meth:`transform_internal`, :meth:`transform_outputs`,
      :meth:`sublayer_calls`, :meth:`replaced_variables`. Each default hands
      on to the wrapper inside, and an override computes its own transform
      on what the inner chain hands it (inputs: the inner chain's first;
      outputs: the inner chain's, then this stage's), so every stage of a
      chain acts whichever stage is outermost;
    * what it records: :meth:`recorded_constraints` (the preserve registry
      reads it; default none) and :meth:`pruned_output_channels` (whole
      output channels it removes; default None: none), as a tensor during a
      call by :meth:`output_channel_mask`;
    * quantization facts: :attr:`collabopt_quantized` (carries QAT ranges)
      and :attr:`weight_quantizers`;
    * leaving it: :meth:`final_weights`, :meth:`stripped`,
      :meth:`export_layer` and :meth:`rewrap`, and, for an export form,
      :meth:`can_lose_channels` / :meth:`without_channels` (the file of a
      filter-pruned chain drops the pruned channels).

    ``tests/test_conformance.py`` runs every registered technique's handler
    through the contract on every supported layer kind.

    Args:
        layer: The layer (or inner wrapper) to wrap.
        **kwargs: Passed to ``keras.layers.Wrapper`` (e.g. ``name``).
    """

    def __init__(self, layer, **kwargs):
        if not isinstance(layer, keras.layers.Layer):
            raise InvalidArgumentError(
                f"{type(self).__name__} wraps a keras.layers.Layer; received {layer!r}."
            )
        # The weight pipeline (masks, centroids, fake quant) computes in the
        # variables' dtype: under a mixed precision policy the wrapper does
        # not autocast, and the wrapped layer casts the final weights and its
        # inputs to its own compute dtype, as it does with plain variables.
        kwargs.setdefault("dtype", layer.dtype_policy.variable_dtype)
        super().__init__(layer, **kwargs)

    # --- the chain -----------------------------------------------------------
    @property
    def base_layer(self) -> keras.layers.Layer:
        """The innermost, plain Keras layer of the chain."""
        return base_layer(self)

    #: Run the base layer as the ops TFLite executes (quantization needs the
    #: op boundaries; see :mod:`collabopt.layers.execution`). Only the
    #: outermost wrapper's setting counts, since only it runs the layer.
    tflite_form: bool = False

    #: True for a wrapper that trains quantization ranges (the exporter keeps
    #: its fake-quant ops so the converter uses them).
    collabopt_quantized: bool = False

    #: ``{weight name: Quantizer}`` of the weights this wrapper fake-quantizes
    #: (empty unless it quantizes; read by int4 export and verify).
    weight_quantizers: Mapping = types.MappingProxyType({})

    #: A TFMOT-style method a custom layer may define to list the weights this
    #: technique transforms (e.g. "get_prunable_weights"); None: all optimizable.
    protocol_method: str | None = None

    def weight_names(self) -> list[str]:
        """Names of the weights this wrapper transforms.

        The base layer's ``protocol_method`` if it defines it, else every
        optimizable weight.
        """
        return transformable_weight_names(self.base_layer, self.protocol_method)

    def inner_weights(self, training=False) -> dict:
        """The effective weights handed to this wrapper by the chain inside it."""
        if isinstance(self.layer, OptimizationWrapper):
            return self.layer.effective_weights(training)
        return dict(optimizable_variables(self.layer))

    def spec(self, name: str):
        """The :class:`WeightSpec` of weight ``name`` on the base layer."""
        return spec_for(self.base_layer, name)

    # --- building ------------------------------------------------------------
    def build(self, input_shape=None):
        if self.built:  # wrappers built by prune_low_magnitude/cluster_weights may be built again by Keras
            return
        if not self.layer.built:
            self.layer.build(input_shape)
        self.build_wrapper(input_shape)
        self.built = True

    def build_wrapper(self, input_shape):
        """Creates this wrapper's own state. Override; default: none."""

    # --- the weight pipeline -------------------------------------------------
    def effective_weights(self, training=False) -> dict:
        """Weights after every wrapper up to and including this one."""
        return self.transform_weights(self.inner_weights(training), training)

    def transform_weights(self, weights: dict, training) -> dict:
        """This stage's transform of the weights handed in by the inner chain."""
        return weights

    def transform_inputs(self, inputs, training):
        """This stage's transform of the layer's inputs (default: the inner chain's)."""
        if isinstance(self.layer, OptimizationWrapper):
            inputs = self.layer.transform_inputs(inputs, training)
        return inputs

    def transform_internal(self, training):
        """A function for the tensors a layer computes between the ops TFLite splits it into, or None.

        Only layers with internal tensors (:func:`collabopt.layers.execution.internal_tensors`)
        ask; the outermost stage that answers wins.
        """
        if isinstance(self.layer, OptimizationWrapper):
            return self.layer.transform_internal(training)
        return None

    def sublayer_calls(self, training):
        """Replacement calls for sublayers of a composite base layer (``{attribute path: call}``), or None.

        Default: the inner chain's. Quantization replaces a BatchNormalization
        it folds into the conv before it.
        """
        if isinstance(self.layer, OptimizationWrapper):
            return self.layer.sublayer_calls(training)
        return None

    def replaced_variables(self, training):
        """``[(variable, value)]`` the base layer computes with for this call besides its optimizable weights, or None.

        Default: the inner chain's. Quantization gives a conv inside a
        composite its bias plus a folded BatchNormalization's correction.
        """
        if isinstance(self.layer, OptimizationWrapper):
            return self.layer.replaced_variables(training)
        return None

    def recorded_constraints(self) -> dict:
        """``{weight name: [Constraint, ...]}`` this stage records for later stages to keep (default: none).

        The preserve registry (:func:`collabopt.preserve.constraints_on`)
        reads every wrapper of a chain through this method.
        """
        return {}

    def pruned_output_channels(self):
        """Bool array over the base layer's output channels, True where this stage removes the channel; None if it removes none.

        ``strip_pruning`` removes the channels physically (``shrink_model``);
        a folded BatchNormalization's bias correction is zero on them.
        """
        return None

    def output_channel_mask(self):
        """A float 0/1 tensor over the base layer's output channels, 0 where the chain up to this stage removes the channel now; None if none does.

        Default: the inner chain's. A stage that adds to the outputs per
        channel (QAT's folded BatchNormalization correction) multiplies what it
        adds by it, so a removed channel stays exact zeros.
        """
        if isinstance(self.layer, OptimizationWrapper):
            return self.layer.output_channel_mask()
        return None

    def compute_output_shape(self, input_shape):
        """The wrapped layer's output shape: no stage changes shapes.

        Without it a Sequential of wrapped layers cannot tell its shapes
        layer by layer (Keras' ``Wrapper`` does not implement it).
        """
        return self.layer.compute_output_shape(input_shape)

    def can_lose_channels(self) -> bool:
        """Whether :meth:`without_channels` can rebuild this wrapper around a copy of its layer with channels removed.

        False by default: a wrapper in training holds per-channel state
        (masks, centroids, ranges). The TFLite export form of a QAT layer,
        whose ranges are constants, can, so the file of a chain holding
        filter pruning is physically smaller.
        """
        return False

    def without_channels(self, new_inner, cuts: dict) -> "OptimizationWrapper":
        """This wrapper around ``new_inner``, a copy of its inner layer with channels removed.

        Args:
            new_inner: The unbuilt smaller layer (or inner wrapper).
            cuts: ``{weight name: {negative axis: bool keep mask}}``, what
                removing the channels kept of each weight of the base layer
                (:func:`collabopt.transform.shrink.channel_cuts`).

        Raises:
            OrderError: this wrapper cannot lose channels (:meth:`can_lose_channels`).
        """
        raise OrderError(
            f"layer '{self.base_layer.name}': {type(self).__name__} holds per-channel training state and cannot "
            "lose channels; strip it (or strip_pruning before clustering/QAT) before removing pruned channels."
        )

    def transform_outputs(self, outputs, training):
        """This stage's transform of the base layer's outputs (default: the inner chain's)."""
        if isinstance(self.layer, OptimizationWrapper):
            outputs = self.layer.transform_outputs(outputs, training)
        return outputs

    def call(self, inputs, *args, training=None, **kwargs):
        traced = eager.traced_eager_training(self, training)
        if traced and not args and not kwargs and self.transform_internal(training) is not None:
            # A layer run in its TFLite form with a range for each internal
            # tensor (a LayerNormalization has eight): the whole call traced.
            return eager.traced_call(self, inputs)
        # ``args``: further positional inputs (MultiHeadAttention's value and
        # key); they are inputs i = 1, 2, ... of the layer's node, as its
        # serialized inbound tensors list them.
        if args and not isinstance(inputs, (list, tuple)) and all(keras.ops.is_tensor(a) for a in args):
            transformed = self.transform_inputs([inputs, *args], training)
            inputs, args = transformed[0], tuple(transformed[1:])
        else:
            inputs = self.transform_inputs(inputs, training)
        weights = eager.effective_weights(self) if traced else self.effective_weights(training)
        between = self.transform_internal(training)
        outputs = call_with_weights(
            self.base_layer, inputs, weights, *args, between=between, tflite_form=self.tflite_form,
            sublayer_calls=self.sublayer_calls(training), variables=self.replaced_variables(training),
            training=training, **kwargs,
        )
        if traced:
            return eager.transformed_outputs(self, outputs)
        return self.transform_outputs(outputs, training)

    def compute_output_spec(self, *args, **kwargs):
        # The base layer decides the output; layers without
        # compute_output_shape are traced symbolically by Keras.
        return self.base_layer.compute_output_spec(*args, **kwargs)

    # --- serialization -------------------------------------------------------
    @classmethod
    def from_config_with_layer(cls, config: dict, layer):
        """Builds this wrapper class around ``layer`` from a config without its ``layer`` entry.

        The wrapper is marked as *restoring*: its state is about to be loaded
        (from a ``.keras`` file, or from the wrapper it copies), so building it
        may skip expensive initialisation (e.g. k-means of the centroids).
        """
        config = dict(config)
        signature = config.pop("layer_inputs", None)
        if signature is not None and (not layer.weights or not all(sub.built for _, sub in sublayer_items(layer))):
            # A composite layer re-created from its config (and marked built
            # by Keras' build_from_config): its sublayers' variables may
            # exist only once it is called.
            build_by_call(layer, signature)
        wrapper = cls(layer, **cls.deserialize_config(config))
        wrapper.restoring = True
        return wrapper

    def get_config(self):
        config = super().get_config()
        if not isinstance(self.layer, OptimizationWrapper):
            # Saved so that loading can re-create it (not every layer's
            # get_config round-trips through its constructor).
            config["layer"] = {**config["layer"], "config": rebuildable_config(self.layer, config["layer"]["config"])}
        signature = call_signature(self.layer)
        if signature is not None:
            config["layer_inputs"] = signature
        return config

    #: True when built from a config whose state is loaded next (see from_config_with_layer).
    restoring: bool = False

    @classmethod
    def deserialize_config(cls, config: dict) -> dict:
        """Turns serialized config entries back into objects. Override when needed."""
        return config

    def own_variables(self) -> list:
        """This wrapper's own variables (not those of the layer it wraps)."""
        inner = {id(v) for v in self.layer.weights}
        return [v for v in self.weights if id(v) not in inner]

    def rewrap(self, new_inner) -> "OptimizationWrapper":
        """A copy of this wrapper (config and own state) around ``new_inner``."""
        config = self.get_config()
        config.pop("layer")
        with held_classes_in_scope(self):
            new = type(self).from_config_with_layer(config, new_inner)
        build_config = self.get_build_config()
        if build_config:
            new.build_from_config(build_config)
        values = {v.path.split("/")[-1]: v for v in self.own_variables()}
        for variable in new.own_variables():
            source = values.get(variable.path.split("/")[-1])
            if source is not None and tuple(source.shape) == tuple(variable.shape):
                variable.assign(keras.ops.copy(source.value))  # not the source's buffer (JAX donates it in fit)
        return new

    # --- leaving the wrapper -------------------------------------------------
    def final_weights(self) -> dict:
        """The effective weights at inference, as numpy arrays."""
        shapes = {k: tuple(v.shape) for k, v in optimizable_variables(self.base_layer).items()}
        # A stage may hand weights on in their execution form (e.g. a 1-D
        # conv kernel expanded to rank 4); give them back in the variable's shape.
        return {
            k: keras.ops.convert_to_numpy(v).reshape(shapes.get(k, tuple(v.shape)))
            for k, v in self.effective_weights(False).items()
        }

    def stripped(self) -> keras.layers.Layer:
        """A plain copy of the base layer (same name) holding the final weights."""
        plain = copy_layer(self.base_layer)
        for name, value in self.final_weights().items():
            get_variable(plain, spec_for(plain, name)).assign(value)
        return plain

    def export_layer(self, mode=None) -> keras.layers.Layer:
        """What the TFLite exporter puts in this wrapper's place for ``mode`` (an ExportMode of
        :mod:`collabopt.tflite.modes`, or None; default: stripped)."""
        return self.stripped()


def transformable_weight_names(layer, protocol_method: str | None = None) -> list[str]:
    """Weights of a plain ``layer`` a technique transforms: its protocol method's, else all optimizable."""
    if protocol_method:
        declared = declared_specs(layer, protocol_method)
        if declared is not None:
            return [s.name for s in declared]
    return list(optimizable_variables(layer))


def wrapper_chain(layer) -> list[OptimizationWrapper]:
    """The wrappers around a base layer, outermost first."""
    chain = []
    while isinstance(layer, OptimizationWrapper):
        chain.append(layer)
        layer = layer.layer
    return chain


def base_layer(layer) -> keras.layers.Layer:
    """The innermost plain layer of a wrapper chain (``layer`` itself if plain)."""
    while isinstance(layer, OptimizationWrapper):
        layer = layer.layer
    return layer


def remove_wrappers(layer, predicate):
    """``layer``'s chain without the wrappers for which ``predicate`` is true.

    The removed wrappers' effect is baked into the base layer's weights; the
    wrappers outside them are rebuilt around the result with their own state.
    Returns ``None`` if no wrapper matches. The removed wrappers must be the
    innermost ones of the chain (e.g. pruning under clustering); otherwise the
    outer technique would have to be re-derived, and a ValueError says which
    one to strip first.
    """
    chain = list(reversed(wrapper_chain(layer)))  # innermost first
    if not any(predicate(w) for w in chain):
        return None
    k = 0
    while k < len(chain) and predicate(chain[k]):
        k += 1
    blocking = [w for w in chain[:k]]
    later = [w for w in chain[k:] if predicate(w)]
    if later:
        raise InvalidArgumentError(
            f"layer '{base_layer(layer).name}': cannot strip {type(later[0]).__name__} from inside "
            f"{type(chain[k]).__name__}; strip the outer technique first."
        )
    current = blocking[-1].stripped()
    for wrapper in chain[k:]:
        current = wrapper.rewrap(current)
    return current
