"""Pruning as a technique: its config (the arguments of prune_low_magnitude) and its registration."""

from __future__ import annotations

import dataclasses

from collabopt.errors import InvalidArgumentError
from collabopt.preserve import SPARSITY
from collabopt.sparsity.schedules import ConstantSparsity, PolynomialDecay, PruningSchedule
from collabopt.sparsity.wrapper import PruneLowMagnitude, validate_pruning_args
from collabopt.technique import PRUNE_STAGE, Technique, TechniqueConfig, register_technique


@dataclasses.dataclass(frozen=True)
class PruningConfig(TechniqueConfig):
    """The arguments of :func:`prune_low_magnitude`, as data.

    Attributes:
        pruning_schedule: A :class:`PruningSchedule` (None:
            ``ConstantSparsity(0.5, begin_step=0, frequency=100)``).
        block_size: Blocks pruned together, for rank-2 weights.
        block_pooling_type: ``"AVG"`` or ``"MAX"``.
        pruning_policy: Optional policy with ``allow_pruning(layer) -> bool``.
        sparsity_m_by_n: ``(m, n)`` structured sparsity, or None.

    Example:

    >>> import keras, collabopt.keras as co
    >>> from collabopt.technique import apply
    >>> model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4)])
    >>> pruned = apply(model, co.PruningConfig(co.ConstantSparsity(0.75, 0)))
    >>> type(pruned.layers[0]).__name__
    'PruneLowMagnitude'
    """

    pruning_schedule: PruningSchedule | None = None
    block_size: tuple = (1, 1)
    block_pooling_type: str = "AVG"
    pruning_policy: object = None
    sparsity_m_by_n: tuple | None = None

    apply_only = ("pruning_policy",)

    def __post_init__(self):
        if self.pruning_schedule is None:
            object.__setattr__(self, "pruning_schedule", ConstantSparsity(0.5, 0))
        for name in ("block_size", "sparsity_m_by_n"):
            if isinstance(getattr(self, name), list):
                object.__setattr__(self, name, tuple(getattr(self, name)))

    def validate(self):
        validate_pruning_args(self.pruning_schedule, self.block_size, self.block_pooling_type, self.sparsity_m_by_n)
        if self.pruning_policy is not None and not callable(getattr(self.pruning_policy, "allow_pruning", None)):
            raise InvalidArgumentError(
                "pruning_policy must have an allow_pruning(layer) method (e.g. PruneForLatencyOnXNNPack); "
                f"received {self.pruning_policy!r}."
            )

    def selects(self, layer):
        return self.pruning_policy is None or bool(self.pruning_policy.allow_pruning(layer))

    @classmethod
    def from_settings(cls, settings, *, steps=1):
        """Also accepts ``sparsity``: a PolynomialDecay from 0 to it over ``steps`` (default 0.5)."""
        settings = dict(settings)
        sparsity = settings.pop("sparsity", 0.5)
        settings.setdefault("pruning_schedule", PolynomialDecay(0.0, sparsity, 0, steps, frequency=max(steps // 10, 1)))
        return super().from_settings(settings, steps=steps)


PRUNING = register_technique(
    Technique(
        name="prune",
        config=PruningConfig,
        handler=PruneLowMagnitude,
        stage=PRUNE_STAGE,
        function="prune_low_magnitude",
        strip="strip_pruning",
        done="pruned",
        records=(SPARSITY,),
        learning_rate=5e-4,
    )
)
