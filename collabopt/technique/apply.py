"""The one apply path (and strip path) every technique goes through."""

from __future__ import annotations

import keras

from collabopt.errors import InvalidArgumentError, OrderError
from collabopt.layers import base_layer, optimizable_layer_names, remove_wrappers, wrapper_chain
from collabopt.technique.config import TechniqueConfig
from collabopt.technique.registry import Technique, chain_techniques, get_technique, technique_of
from collabopt.transform import apply_per_layer, map_layers
from collabopt.transform.shrink import shrunk_once_unwrapped


def check_chain(layer, technique: Technique, what: str) -> None:
    """Refuses to put ``technique`` on ``layer`` if its chain already holds it or a later stage.

    Raises:
        InvalidArgumentError: the layer already carries ``technique``.
        OrderError: a technique of a later stage sits in the chain; the
            message names the layer and the order that works.
    """
    chain = chain_techniques(layer)
    base = base_layer(chain[-1][0].layer if chain else layer)
    for wrapper, held in chain:
        if held is technique:
            raise InvalidArgumentError(
                f"{what}: layer '{base.name}' is already {held.done} (wrapper '{wrapper.name}'); "
                f"{held.name} each layer once ({held.strip} first to start over)."
            )
        if held.stage > technique.stage:
            raise OrderError(
                f"{what}: layer '{base.name}' is already {held.done} ({type(wrapper).__name__} '{wrapper.name}'), "
                f"and {held.function} must come after {technique.function}: apply "
                f"{held.function}({technique.function}(model)). To {technique.name} a {held.done} model, "
                f"{held.strip} first."
            )


def built_like(wrapper, layer):
    """Builds ``wrapper`` for the input shape ``layer`` was built with (if it was built)."""
    config = layer.get_build_config() if layer.built else None
    if config and "input_shape" in config:
        wrapper.build(config["input_shape"])
    return wrapper


def apply(target, config: TechniqueConfig, *, what: str | None = None, **handler_kwargs):
    """Applies a technique, given by its config, to a layer, a list of layers or a model.

    Owns what every technique shares: argument validation, layer selection,
    "already applied" and chain-order checks, wrapping with the registered
    handler, and building. The input is never modified.

    Args:
        target: A layer (returned wrapped), a list of layers, or a Sequential /
            Functional / nested model (returned as a new model).
        config: A registered technique's config, e.g. ``PruningConfig(...)``.
        what: The public function's name, for messages (default: the
            technique's ``function``).
        **handler_kwargs: Passed to each handler (e.g. ``name`` for a single layer).

    Returns:
        The wrapped layer, list of wrapped layers, or new model.

    Raises:
        InvalidArgumentError: bad arguments, a listed layer with nothing to
            transform, a layer that already carries the technique.
        OrderError: a layer carries a technique that must come after this one.

    Example:

    >>> import keras, collabopt.keras as co
    >>> from collabopt.technique import apply
    >>> model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4)])
    >>> type(apply(model, co.ClusteringConfig(number_of_clusters=4)).layers[0]).__name__
    'ClusterWeights'
    """
    if not isinstance(config, TechniqueConfig):
        raise InvalidArgumentError(f"apply expects a technique config (e.g. PruningConfig); received {config!r}.")
    technique = get_technique(config.technique)
    what = what or technique.function
    config.validate()
    prepared = config.prepare(target, what)
    # A model that ``prepare`` rebuilt (quantize_model's annotated copy) is
    # this call's own: its layers move into the result instead of being copied again.
    reuse_layers = isinstance(target, keras.Model) and prepared is not target
    target = prepared
    plan = config.plan(target, what) if isinstance(target, keras.Model) else None

    def classify(layer):
        check_chain(config.unwrap(layer), technique, what)
        return config.classify(layer, plan)

    def wrap(layer):
        inner = config.inner(config.unwrap(layer), plan)
        handler = technique.handler(inner, **config.handler_arguments(layer, plan), **handler_kwargs)
        return built_like(handler, layer)

    return apply_per_layer(
        target,
        classify=classify,
        wrap=wrap,
        replace=lambda layer: config.replace(layer, plan),
        what=what,
        reuse_layers=reuse_layers,
        accepted=f"layers with weights to {technique.name} ({', '.join(optimizable_layer_names())}, a composite "
        "layer holding them, or a custom layer declaring them)",
    )


def strip(model, name: str, *, what: str | None = None):
    """Removes technique ``name`` from every chain, baking its effect (and the wrappers inside it) into the weights.

    Wrappers of later stages stay around the result, rebuilt with their own
    state, where the technique allows it (``Technique.strip_under`` is None)
    and they can be rebuilt without it (a sparsity-preserving clustering
    cannot lose the pruning it keeps); otherwise an OrderError names the
    function that works there.
    Works on a model or a single layer; the input is not modified. Channels
    that filter pruning masked are removed once no wrapper is left.
    """
    technique = get_technique(name)
    what = what or technique.strip

    def fn(layer):
        chain = wrapper_chain(layer)
        owned = [i for i, w in enumerate(chain) if technique_of(w) is technique]
        if not owned:
            return None
        outer = [(w, technique_of(w)) for w in chain[: owned[0]] if technique_of(w) not in (None, technique)]
        if outer and technique.strip_under is not None:
            wrapper, held = outer[-1]
            raise OrderError(
                f"{what}: layer '{base_layer(layer).name}' is {technique.done} under {held.name} "
                f"({type(wrapper).__name__} '{wrapper.name}'); use {technique.strip_under}(model) to bake it "
                f"and keep {held.name}, or {held.strip}(model) first."
            )
        inside = {id(w) for w in chain[owned[0] :]}
        try:
            return remove_wrappers(layer, lambda w: id(w) in inside)
        except ValueError as error:  # an outer stage cannot be rebuilt without what it kept from inside
            wrapper, held = outer[-1]
            raise OrderError(
                f"{what}: layer '{base_layer(layer).name}' is {technique.done} under {held.name} "
                f"({type(wrapper).__name__} '{wrapper.name}'), which cannot be rebuilt without it; "
                f"{held.strip}(model) first."
            ) from error

    return shrunk_once_unwrapped(model, map_layers(model, fn, what=what))
