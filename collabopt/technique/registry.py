"""The technique registry: each technique registered once, with its handler and its place in the chain.

A *technique* is a config (plain data: the arguments of its public function,
a :class:`~collabopt.technique.TechniqueConfig`) plus a *handler* (the
:class:`~collabopt.layers.OptimizationWrapper` subclass that carries it out).
Each technique package registers its own with :func:`register_technique`
(:func:`technique_registered` registers one for a ``with`` block only, for
tests); the registry never imports a technique, so the arrows keep pointing one way
(technique packages -> ``technique/``).

The chain order is the registered ``stage``: techniques of a lower stage sit
inside those of a higher one (prune / filter-prune -> cluster -> quantize). A
technique applied on top of a higher-stage one is refused at apply time
(:func:`~collabopt.technique.apply`).
"""

from __future__ import annotations

import contextlib
import dataclasses

import keras

from collabopt.errors import InvalidArgumentError, InvalidTypeError
from collabopt.scoped import restored_entry
from collabopt.layers import OptimizationWrapper

#: Chain positions of the built-in techniques (a new technique may take one of
#: these or a value in between).
PRUNE_STAGE, CLUSTER_STAGE, QUANTIZE_STAGE = 10, 20, 30


@dataclasses.dataclass(frozen=True)
class Technique:
    """One registered technique.

    Attributes:
        name: Registry key and verb, e.g. ``"prune"`` (also the tree's stage technique).
        config: Its :class:`~collabopt.technique.TechniqueConfig` subclass.
        handler: Its wrapper class (a subclass of ``OptimizationWrapper``).
        stage: Place in the chain; a technique never goes on top of a higher stage.
        function: The public function applying it, e.g. ``"prune_low_magnitude"``.
        strip: The public function removing it, e.g. ``"strip_pruning"``.
        done: Past participle for messages, e.g. ``"pruned"``.
        records: Constraint kinds (``ConstraintKind`` objects) its handler records.
        keeps: Constraint kinds it keeps from the chain inside it (None: every kind).
        markers: Other wrapper classes that stand for this technique in a chain
            (e.g. quantization's annotation wrapper).
        strip_under: Where the technique sits under a later stage: the public
            function that strips it there (e.g. ``"strip_clustering_cqat"``), or
            None when its own ``strip`` works there too.
        learning_rate: A fine-tuning learning rate that usually suits it (the tree's default).
        tree_strips: The deployment tree strips it (with ``strip``) once a node
            has trained, so the node exports, and its children start from, the
            plain model (filter pruning: the physically smaller one). Such a
            stage starts from a plain model too (the baseline or another such
            stage).
    """

    name: str
    config: type
    handler: type
    stage: int
    function: str
    strip: str
    done: str
    records: tuple = ()
    keeps: tuple | None = ()
    markers: tuple = ()
    strip_under: str | None = None
    learning_rate: float = 1e-4
    tree_strips: bool = False

    def __post_init__(self):
        if not (isinstance(self.handler, type) and issubclass(self.handler, OptimizationWrapper)):
            raise InvalidArgumentError(
                f"technique '{self.name}': handler must be an OptimizationWrapper subclass; received {self.handler!r}."
            )

    def owns(self, layer) -> bool:
        """Whether ``layer`` is this technique's handler or one of its markers."""
        return isinstance(layer, (self.handler, *self.markers))


_TECHNIQUES: dict[str, Technique] = {}


def register_technique(technique: Technique) -> Technique:
    """Adds ``technique`` to the registry (once per name) and gives its config class its name.

    Example:

    >>> from collabopt.technique import get_technique
    >>> import collabopt.keras  # registers the built-in techniques
    >>> [t.name for t in sorted(map(get_technique, ("quantize", "prune", "cluster")), key=lambda t: t.stage)]
    ['prune', 'cluster', 'quantize']
    """
    known = _TECHNIQUES.get(technique.name)
    if known is not None and known != technique:
        raise InvalidArgumentError(
            f"technique '{technique.name}' is already registered (handler {known.handler.__name__}); "
            "choose another name."
        )
    _TECHNIQUES[technique.name] = technique
    technique.config.technique = technique.name
    return technique


@contextlib.contextmanager
def technique_registered(technique: Technique):
    """:func:`register_technique` for the duration of a ``with`` block; the registry is restored after.

    For tests and experiments: on exit the name is unregistered (or given back
    to the technique it had before) and the config class's ``technique``
    attribute is what it was, so nothing leaks into code that runs later.

    Args:
        technique: The :class:`Technique` to register.

    Yields:
        ``technique``.

    Raises:
        InvalidArgumentError: another technique is registered under its name.

    Example:

    >>> import dataclasses
    >>> from collabopt.layers import OptimizationWrapper
    >>> from collabopt.technique import TechniqueConfig, technique_names
    >>> @dataclasses.dataclass(frozen=True)
    ... class NoopConfig(TechniqueConfig):
    ...     pass
    >>> class Noop(OptimizationWrapper):
    ...     pass
    >>> noop = Technique("noop", NoopConfig, Noop, stage=15, function="noop", strip="strip_noop", done="nooped")
    >>> with technique_registered(noop):
    ...     get_technique("noop").handler.__name__, NoopConfig.technique
    ('Noop', 'noop')
    >>> "noop" in technique_names(), NoopConfig.technique
    (False, '')
    """
    config = technique.config
    own = "technique" in vars(config)
    attribute = vars(config).get("technique")
    with restored_entry(_TECHNIQUES, technique.name):
        try:
            register_technique(technique)
            yield technique
        finally:
            if own:
                config.technique = attribute
            elif "technique" in vars(config):
                del config.technique


def get_technique(name: str) -> Technique:
    """The registered technique called ``name`` (InvalidArgumentError listing the known ones otherwise)."""
    if name not in _TECHNIQUES:
        raise InvalidArgumentError(f"unknown technique {name!r}; registered: {', '.join(technique_names())}.")
    return _TECHNIQUES[name]


def technique_names() -> list[str]:
    """Registered technique names, in chain order."""
    return sorted(_TECHNIQUES, key=lambda n: (_TECHNIQUES[n].stage, n))


def technique_of(layer) -> Technique | None:
    """The technique whose handler (or marker) ``layer`` is, or None."""
    for technique in _TECHNIQUES.values():
        if technique.owns(layer):
            return technique
    return None


def chain_techniques(layer) -> list[tuple[keras.layers.Layer, Technique]]:
    """``(wrapper, technique)`` for each technique wrapper around a base layer, outermost first.

    Walks through collabopt wrappers and registered markers (other wrappers,
    e.g. a PreserveWrapper, belong to no technique and are skipped).
    """
    out = []
    while isinstance(layer, keras.layers.Wrapper):
        technique = technique_of(layer)
        if technique is not None:
            out.append((layer, technique))
        elif not isinstance(layer, OptimizationWrapper):
            break
        layer = layer.layer
    return out


@contextlib.contextmanager
def tfmot_scope(*custom_objects: dict):
    """TFMOT's ``prune_scope`` / ``cluster_scope`` / ``quantize_scope``: custom classes for loading.

    collabopt's own wrappers are registered Keras serializables, so loading a
    model needs no scope. As in TFMOT, each argument is a dict of the user's
    own classes (a custom layer, a ``QuantizeConfig`` subclass), made visible
    to ``keras.models.load_model`` and deserialization inside the scope.

    Args:
        *custom_objects: dicts ``{"ClassName": Class}``.

    Raises:
        InvalidTypeError: an argument is not a dict.

    Example:

    >>> import keras, collabopt.keras as co
    >>> class Twice(keras.layers.Layer):
    ...     def call(self, x):
    ...         return 2 * x
    >>> with co.quantize_scope({"Twice": Twice}):
    ...     layer = keras.saving.deserialize_keras_object({"class_name": "Twice", "config": {}})
    >>> type(layer).__name__
    'Twice'
    """
    merged = {}
    for i, objects in enumerate(custom_objects):
        if not isinstance(objects, dict):
            raise InvalidTypeError(
                f"scope argument {i}: expected a dict of custom objects {{'Name': Class}}; received {objects!r}."
            )
        merged.update(objects)
    with keras.saving.custom_object_scope(merged):
        yield
