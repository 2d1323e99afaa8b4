"""Pruning schedules: when to update masks and to what sparsity (TFMOT semantics)."""

from __future__ import annotations

import abc

import keras
from keras import ops

from collabopt.errors import InvalidArgumentError
from collabopt.technique.schedules import StepSchedule, check_fraction, check_step, polynomial_ramp, step_dtype


def _check_steps(begin_step, end_step, frequency, *, end_required=False):
    check_step("begin_step", begin_step)
    check_step("frequency", frequency, 1)
    if end_required and end_step == -1:
        raise InvalidArgumentError("end_step must be given (>= begin_step) for PolynomialDecay; received -1.")
    if end_step != -1 and (not isinstance(end_step, int) or end_step < begin_step):
        raise InvalidArgumentError(
            f"end_step must be -1 (never stop) or an integer >= begin_step={begin_step}; received {end_step!r}."
        )


class PruningSchedule(StepSchedule):
    """Base class: ``schedule(step) -> (should_prune, sparsity)`` as tensors.

    Subclasses implement ``__call__`` and ``get_config``; use
    :meth:`_should_prune_in_step` for TFMOT's begin/end/frequency rule: prune
    at steps ``begin_step, begin_step + frequency, ...`` up to ``end_step``
    (``-1``: no end).

    Example:

    >>> import keras
    >>> from collabopt.sparsity import PruningSchedule
    >>> @keras.saving.register_keras_serializable(package="docs")
    ... class Halfway(PruningSchedule):
    ...     def __call__(self, step):
    ...         return self._should_prune_in_step(step, 0, -1, 10), keras.ops.convert_to_tensor(0.5)
    ...     def get_config(self):
    ...         return {}
    """

    @abc.abstractmethod
    def __call__(self, step):
        """Returns ``(should_prune: bool tensor, sparsity: float32 tensor)`` at ``step``."""

    @staticmethod
    def _should_prune_in_step(step, begin_step, end_step, frequency):
        step = ops.cast(step, step_dtype())
        in_range = ops.greater_equal(step, begin_step)
        if end_step != -1:
            in_range = ops.logical_and(in_range, ops.less_equal(step, end_step))
        turn = ops.equal(ops.mod(step - begin_step, frequency), 0)
        return ops.logical_and(in_range, turn)


@keras.saving.register_keras_serializable(package="collabopt")
class ConstantSparsity(PruningSchedule):
    """Prunes to ``target_sparsity`` at every pruning step from ``begin_step``.

    Args:
        target_sparsity: Fraction of weights set to zero, in [0, 1).
        begin_step: First step at which masks are updated.
        end_step: Last step at which masks are updated (-1: no end).
        frequency: Steps between mask updates.

    Example:

    >>> from collabopt.sparsity import ConstantSparsity
    >>> should, s = ConstantSparsity(0.5, begin_step=0, frequency=100)(200)
    >>> bool(should), float(s)
    (True, 0.5)
    """

    def __init__(self, target_sparsity, begin_step, end_step=-1, frequency=100):
        check_fraction("target_sparsity", target_sparsity)
        _check_steps(begin_step, end_step, frequency)
        self.target_sparsity = float(target_sparsity)
        self.begin_step, self.end_step, self.frequency = begin_step, end_step, frequency

    def __call__(self, step):
        return (
            self._should_prune_in_step(step, self.begin_step, self.end_step, self.frequency),
            ops.convert_to_tensor(self.target_sparsity, "float32"),
        )

    def get_config(self):
        return {
            "target_sparsity": self.target_sparsity,
            "begin_step": self.begin_step,
            "end_step": self.end_step,
            "frequency": self.frequency,
        }


@keras.saving.register_keras_serializable(package="collabopt")
class PolynomialDecay(PruningSchedule):
    """Sparsity rising from ``initial_sparsity`` to ``final_sparsity`` polynomially.

    ``s(t) = final + (initial - final) * (1 - p)**power`` with
    ``p = clip((t - begin_step) / (end_step - begin_step), 0, 1)``.

    Args:
        initial_sparsity: Sparsity at ``begin_step``, in [0, 1).
        final_sparsity: Sparsity at and after ``end_step``, in [0, 1).
        begin_step: First step at which masks are updated.
        end_step: Step at which ``final_sparsity`` is reached (required).
        power: Exponent of the decay.
        frequency: Steps between mask updates.

    Example:

    >>> from collabopt.sparsity import PolynomialDecay
    >>> round(float(PolynomialDecay(0.0, 0.8, 0, 100)(100)[1]), 3)
    0.8
    """

    def __init__(self, initial_sparsity, final_sparsity, begin_step, end_step, power=3, frequency=100):
        check_fraction("initial_sparsity", initial_sparsity)
        check_fraction("final_sparsity", final_sparsity)
        _check_steps(begin_step, end_step, frequency, end_required=True)
        self.initial_sparsity, self.final_sparsity = float(initial_sparsity), float(final_sparsity)
        self.begin_step, self.end_step = begin_step, end_step
        self.power, self.frequency = power, frequency

    def __call__(self, step):
        sparsity = polynomial_ramp(step, self.initial_sparsity, self.final_sparsity, self.begin_step, self.end_step, self.power)
        return self._should_prune_in_step(step, self.begin_step, self.end_step, self.frequency), sparsity

    def get_config(self):
        return {
            "initial_sparsity": self.initial_sparsity,
            "final_sparsity": self.final_sparsity,
            "begin_step": self.begin_step,
            "end_step": self.end_step,
            "power": self.power,
            "frequency": self.frequency,
        }
