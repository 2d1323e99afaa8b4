"""Ratio schedules: the fraction of each group's channels pruned at a training step.

Filter pruning keeps its own two small schedules rather than importing the
sparsity package's (technique packages never import each other); both build
on :class:`collabopt.technique.schedules.StepSchedule`. They have
the shape of :class:`collabopt.keras.ConstantSparsity` and
:class:`collabopt.keras.PolynomialDecay`, but return only the ratio: channel
masks are recomputed from a fixed channel ranking at every training step, so
there is no pruning frequency.
"""

from __future__ import annotations

import abc

import keras
from keras import ops

from collabopt.errors import InvalidArgumentError, InvalidTypeError
from collabopt.technique.schedules import StepSchedule, check_fraction, check_step, polynomial_ramp


class RatioSchedule(StepSchedule):
    """Base class: ``schedule(step)`` is the pruning ratio (float32 tensor) at ``step``."""

    @abc.abstractmethod
    def __call__(self, step):
        """The ratio at ``step``."""

    @property
    @abc.abstractmethod
    def final_ratio(self) -> float:
        """The ratio the schedule ends at."""


@keras.saving.register_keras_serializable(package="collabopt")
class ConstantRatio(RatioSchedule):
    """Prunes ``ratio`` of each group's channels from the first step.

    Example:

    >>> from collabopt.filter_pruning import ConstantRatio
    >>> float(ConstantRatio(0.5)(10))
    0.5
    """

    def __init__(self, ratio: float):
        check_fraction("ratio", ratio)
        self.ratio = float(ratio)

    def __call__(self, step):
        return ops.convert_to_tensor(self.ratio, "float32")

    @property
    def final_ratio(self):
        return self.ratio

    def get_config(self):
        return {"ratio": self.ratio}


@keras.saving.register_keras_serializable(package="collabopt")
class PolynomialRatio(RatioSchedule):
    """Ramps the ratio from ``initial_ratio`` to ``final_ratio`` between two steps (TFMOT's PolynomialDecay curve).

    ``ratio(step) = final + (initial - final) * (1 - t) ** power`` with
    ``t = clip((step - begin_step) / (end_step - begin_step), 0, 1)``.

    Example:

    >>> from collabopt.filter_pruning import PolynomialRatio
    >>> s = PolynomialRatio(0.0, 0.5, begin_step=0, end_step=100)
    >>> round(float(s(0)), 3), round(float(s(100)), 3), round(float(s(1000)), 3)
    (0.0, 0.5, 0.5)
    """

    def __init__(self, initial_ratio: float, final_ratio: float, begin_step: int, end_step: int, power: float = 3.0):
        check_fraction("initial_ratio", initial_ratio)
        check_fraction("final_ratio", final_ratio)
        check_step("begin_step", begin_step)
        check_step("end_step", end_step, begin_step + 1 if isinstance(begin_step, int) else 1)
        if isinstance(power, bool) or not isinstance(power, (int, float)) or power <= 0:
            raise InvalidArgumentError(f"power must be a number > 0; received {power!r}.")
        self.initial_ratio = float(initial_ratio)
        self._final = float(final_ratio)
        self.begin_step = begin_step
        self.end_step = end_step
        self.power = float(power)

    @property
    def final_ratio(self):
        return self._final

    def __call__(self, step):
        return polynomial_ramp(step, self.initial_ratio, self._final, self.begin_step, self.end_step, self.power)

    def get_config(self):
        return {
            "initial_ratio": self.initial_ratio,
            "final_ratio": self._final,
            "begin_step": self.begin_step,
            "end_step": self.end_step,
            "power": self.power,
        }


def as_schedule(pruning_ratio, pruning_schedule) -> RatioSchedule:
    """The schedule for ``prune_filters``' arguments (the schedule wins when given)."""
    if pruning_schedule is not None:
        if not isinstance(pruning_schedule, RatioSchedule):
            raise InvalidTypeError(
                "pruning_schedule must be a filter-pruning RatioSchedule (ConstantRatio or PolynomialRatio); "
                f"received {pruning_schedule!r}."
            )
        return pruning_schedule
    check_fraction("pruning_ratio", pruning_ratio)
    return ConstantRatio(pruning_ratio)
