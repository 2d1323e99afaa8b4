"""PreserveWrapper: holds constraints derived from a stripped layer's weights."""

from __future__ import annotations

import warnings

import keras
from keras import ops

from collabopt.layers import OptimizationWrapper, base_layer, get_variable
from collabopt.preserve.kinds import Constraint, get_kind, in_projection_order


@keras.saving.register_keras_serializable(package="collabopt")
class PreserveWrapper(OptimizationWrapper):
    """Keeps constraints that no wrapper inside it records (the layer arrived stripped).

    At build time each requested kind's state is derived from the wrapped
    weight's current values (with a warning when that is a guess) and stored in
    this wrapper's variables; every forward pass projects the weight onto it.
    Later stages (clustering, QAT) put one of these under themselves when asked
    to preserve a constraint that the chain does not already record.

    Args:
        layer: The layer (or wrapper chain) to constrain.
        constraints: ``{weight_name: [kind_name, ...]}``.
        options: ``{kind_name: {option: value}}`` passed to the kinds.
        derived: True once the state has been derived (saved in the config):
            a copy or a loaded model rebuilds its variables and receives the
            saved state, without deriving it again from not-yet-loaded weights
            (which would warn about values that are not the real ones).

    Example:

    >>> import keras, numpy as np
    >>> from collabopt.preserve import PreserveWrapper
    >>> dense = keras.layers.Dense(2)
    >>> dense.build((None, 4)); _ = dense.kernel.assign(np.eye(4, 2, dtype="float32"))
    >>> kept = PreserveWrapper(dense, constraints={"kernel": ["sparsity"]})
    >>> kept.build((None, 4)); int(kept.recorded_constraints()["kernel"][0].state["mask"].numpy().sum())
    2
    """

    def __init__(self, layer, constraints: dict, options: dict | None = None, derived: bool = False, **kwargs):
        kwargs.setdefault("name", f"preserve_{base_layer(layer).name}")
        super().__init__(layer, **kwargs)
        self.constraint_names = {k: in_projection_order(v) for k, v in constraints.items()}
        self.options = dict(options or {})
        for kinds in self.constraint_names.values():
            for kind in kinds:
                get_kind(kind)  # validates the name
        self.derived = bool(derived)
        self._state: dict[str, dict[str, dict]] = {}

    def build_wrapper(self, input_shape):
        inner = self.inner_weights()  # the chain inside, computed once
        for weight_name, kinds in self.constraint_names.items():
            spec = self.spec(weight_name)
            value = ops.convert_to_numpy(inner[weight_name])
            shape = tuple(value.shape)
            self._state[weight_name] = {}
            for kind_name in kinds:
                kind = get_kind(kind_name)
                values, warning = None, None
                if not self.derived:
                    values, warning = kind.derive(value, spec, dict(self.options.get(kind_name, {})))
                    # Saved options (from a .keras file) win over the derived ones.
                    self.options[kind_name] = kind.record_options(values, self.options.get(kind_name, {}))
                options = self.options.get(kind_name, {})
                if warning:
                    warnings.warn(
                        f"layer '{self.base_layer.name}': weight '{weight_name}' {warning}.",
                        stacklevel=3,
                    )
                specs = kind.state_spec(shape, spec, options)
                # Assign derived values only if every one fits the recorded
                # shapes: when a saved or copied wrapper is rebuilt, its weights
                # are not loaded yet, and derived state would be inconsistent
                # (it is overwritten by the loaded values anyway).
                fits = values is not None and all(tuple(values[n].shape) == tuple(sv.shape) for n, sv in specs.items())
                state = {}
                for state_name, sv in specs.items():
                    var = self.add_weight(
                        name=f"{weight_name.replace('/', '__')}_{kind_name}_{state_name}",
                        shape=sv.shape,
                        dtype=sv.dtype,
                        initializer="zeros",
                        trainable=sv.trainable,
                        aggregation="only_first_replica" if not sv.trainable else "none",
                    )
                    if fits:
                        var.assign(ops.cast(values[state_name], sv.dtype))
                    state[state_name] = var
                self._state[weight_name][kind_name] = state
                if kind.replaces_weight:
                    # The projection ignores the weight's values (it gathers
                    # the constraint's state), so the weight gets no gradient:
                    # freeze it instead of handing the optimizer a variable
                    # without one.
                    get_variable(self.base_layer, spec).trainable = False
        self.derived = True

    def recorded_constraints(self) -> dict:
        return {
            w: [Constraint(get_kind(k), state, self.spec(w)) for k, state in kinds.items()]
            for w, kinds in self._state.items()
        }

    def transform_weights(self, weights, training):
        out = dict(weights)
        for weight_name, kinds in self._state.items():
            w = out[weight_name]
            for kind_name, state in kinds.items():
                w = get_kind(kind_name).project(state, w, self.spec(weight_name))
            out[weight_name] = w
        return out

    def get_config(self):
        config = super().get_config()
        config.update({"constraints": self.constraint_names, "options": self.options, "derived": self.derived})
        return config
