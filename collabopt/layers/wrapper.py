"""The weight pipeline shared by every collabopt wrapper.

A wrapped layer computes its output from *effective* weights. Each wrapper
transforms the weights handed to it by the wrapper inside it, so a chain
``Quantize(Cluster(Prune(Conv2D)))`` computes
``w_eff = fake_quant(cluster(mask * w))`` in one pass and runs the innermost
(base) layer on it via :func:`call_with_weights`; nothing is written back
into the base layer's variables.
"""

from __future__ import annotations

import keras

from collabopt.layers.registry import call_with_weights, optimizable_variables, spec_for


class OptimizationWrapper(keras.layers.Wrapper):
    """Base class of pruning, clustering, quantization and preserve wrappers.

    Subclasses override :meth:`transform_weights` (and, for quantization,
    :meth:`transform_outputs`) and create their own state in
    :meth:`build_wrapper`, which runs after the wrapped chain is built (so
    the wrapped weights already hold their values).

    Args:
        layer: The layer (or inner wrapper) to wrap.
        **kwargs: Passed to ``keras.layers.Wrapper`` (e.g. ``name``).
    """

    def __init__(self, layer, **kwargs):
        if not isinstance(layer, keras.layers.Layer):
            raise ValueError(
                f"{type(self).__name__} wraps a keras.layers.Layer; received {layer!r}."
            )
        super().__init__(layer, **kwargs)

    # --- the chain -----------------------------------------------------------
    @property
    def base_layer(self) -> keras.layers.Layer:
        """The innermost, plain Keras layer of the chain."""
        return base_layer(self)

    @property
    def inner(self) -> keras.layers.Layer:
        """The layer or wrapper directly inside this one."""
        return self.layer

    def weight_names(self) -> list[str]:
        """Names of the weights this wrapper transforms (default: all optimizable)."""
        return list(optimizable_variables(self.base_layer))

    def spec(self, name: str):
        """The :class:`WeightSpec` of weight ``name`` on the base layer."""
        return spec_for(self.base_layer, name)

    # --- building ------------------------------------------------------------
    def build(self, input_shape=None):
        if not self.layer.built:
            self.layer.build(input_shape)
        self.build_wrapper(input_shape)
        self.built = True

    def build_wrapper(self, input_shape):
        """Creates this wrapper's own state. Override; default: none."""

    # --- the weight pipeline -------------------------------------------------
    def effective_weights(self, training=False) -> dict:
        """Weights after every wrapper up to and including this one."""
        if isinstance(self.layer, OptimizationWrapper):
            weights = self.layer.effective_weights(training)
        else:
            weights = dict(optimizable_variables(self.layer))
        return self.transform_weights(weights, training)

    def transform_weights(self, weights: dict, training) -> dict:
        """This stage's transform of the weights handed in by the inner chain."""
        return weights

    def transform_outputs(self, outputs, training):
        """This stage's transform of the base layer's outputs (default: none)."""
        if isinstance(self.layer, OptimizationWrapper):
            outputs = self.layer.transform_outputs(outputs, training)
        return outputs

    def call(self, inputs, training=None, **kwargs):
        weights = self.effective_weights(training)
        outputs = call_with_weights(self.base_layer, inputs, weights, training=training, **kwargs)
        return self.transform_outputs(outputs, training)

    def compute_output_shape(self, input_shape):
        return self.layer.compute_output_shape(input_shape)

    # --- leaving the wrapper -------------------------------------------------
    def final_weights(self) -> dict:
        """The effective weights at inference, as numpy arrays."""
        return {k: keras.ops.convert_to_numpy(v) for k, v in self.effective_weights(False).items()}

    def stripped(self) -> keras.layers.Layer:
        """A plain copy of the base layer (same name) holding the final weights."""
        from collabopt.transform.copy import copy_layer

        plain = copy_layer(self.base_layer)
        for name, value in self.final_weights().items():
            from collabopt.layers.registry import get_variable

            get_variable(plain, spec_for(plain, name)).assign(value)
        return plain

    def export_layer(self) -> keras.layers.Layer:
        """What the TFLite exporter puts in this wrapper's place (default: stripped)."""
        return self.stripped()


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
