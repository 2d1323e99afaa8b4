"""TechniqueConfig: a technique's arguments as plain, serialisable data, and its per-layer hooks."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import keras

from collabopt.errors import InvalidArgumentError
from collabopt.layers import base_layer
from collabopt.transform import PASS, WRAP, support_status

_PLAIN = (bool, int, float, str, type(None))


class TechniqueConfig:
    """Base of technique configs; subclasses are (frozen) dataclasses of the public function's arguments.

    The fields are the arguments of the technique's public function (e.g.
    ``prune_low_magnitude``); by default every field is passed to the handler
    (the wrapper class) by name, except those listed in ``apply_only``. The
    hooks below let :func:`~collabopt.technique.apply` run every technique the
    same way; the defaults suit a technique that wraps each supported layer on
    its own.

    Example:

    >>> import collabopt.keras as co
    >>> config = co.ClusteringConfig(number_of_clusters=8)
    >>> co.ClusteringConfig.from_config(config.get_config()) == config
    True
    """

    #: The registered technique's name (set by ``register_technique``).
    technique: ClassVar[str] = ""
    #: Fields used while applying, not passed to the handler.
    apply_only: ClassVar[tuple[str, ...]] = ()

    # --- checks ----------------------------------------------------------------
    def validate(self) -> None:
        """Checks the layer-independent arguments (InvalidArgumentError naming the argument)."""

    def selects(self, layer) -> bool:
        """Whether a supported plain ``layer`` should be transformed (a policy); default: all."""
        return True

    # --- per-layer hooks -------------------------------------------------------
    def unwrap(self, layer):
        """The layer whose chain is checked and wrapped (e.g. without a selection marker)."""
        return layer

    def prepare(self, target, what: str):
        """The target to rewrite (e.g. with every layer marked for the technique); default: ``target``."""
        return target

    def plan(self, model, what: str):
        """Model-level preparation before any layer is wrapped (e.g. a graph plan); default None."""
        return None

    def classify(self, layer, plan) -> str:
        """``WRAP``, ``PASS`` or ``UNSUPPORTED`` for ``layer`` (its chain already checked)."""
        status = support_status(layer)
        if status == WRAP and not self.selects(base_layer(layer)):
            return PASS
        return status

    def replace(self, layer, plan):
        """The replacement of a layer that is not wrapped (None: keep it)."""
        return None

    def inner(self, layer, plan):
        """What the handler wraps: ``layer``, or ``layer`` under a preserve wrapper. Default: ``layer``."""
        return layer

    def handler_arguments(self, layer, plan) -> dict:
        """Keyword arguments of the handler for ``layer``; default: the fields not in ``apply_only``."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in self.apply_only}

    # --- data ------------------------------------------------------------------
    def get_config(self) -> dict:
        """The fields as plain data (Keras objects serialised with ``keras.saving``)."""
        return {f.name: _serialize(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_config(cls, config: dict):
        """The config back from :meth:`get_config`."""
        return cls(**{k: _deserialize(v) for k, v in config.items()})

    @classmethod
    def from_settings(cls, settings: dict, *, steps: int = 1):
        """The config from keyword settings (the deployment tree's stage settings).

        Args:
            settings: The public function's keyword arguments.
            steps: Training steps the stage runs per epoch (for settings that
                ramp over the stage).
        """
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(settings) - set(names))
        if unknown:
            raise InvalidArgumentError(
                f"{cls.technique or cls.__name__}: unknown settings {unknown}; accepted: {', '.join(names)}."
            )
        missing = [
            f.name
            for f in dataclasses.fields(cls)
            if f.name not in settings and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        ]
        if missing:
            raise InvalidArgumentError(f"{cls.technique or cls.__name__}: missing settings {missing}.")
        return cls(**settings)


def _serialize(value):
    if isinstance(value, _PLAIN):
        return value
    if isinstance(value, (list, tuple)) and all(isinstance(v, _PLAIN) for v in value):
        return list(value)
    return {"keras_object": keras.saving.serialize_keras_object(value)}


def _deserialize(value):
    if isinstance(value, dict) and set(value) == {"keras_object"}:
        return keras.saving.deserialize_keras_object(value["keras_object"])
    return value
