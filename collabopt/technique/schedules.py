"""What the step schedules of the pruning techniques share: the base class, the polynomial ramp, argument checks.

Magnitude pruning (``sparsity/``) and filter pruning (``filter_pruning/``)
each keep their own schedule classes (TFMOT's ``(should_prune, sparsity)``
pair; a bare ratio), built on this one base, since a technique package
never imports another.
"""

from __future__ import annotations

import abc

import keras
from keras import ops

from collabopt.errors import InvalidArgumentError


def step_dtype() -> str:
    """The dtype of a training-step counter: ``"int64"`` (TFMOT's), or ``"int32"`` on JAX without 64-bit types.

    JAX truncates int64 to int32 (with a warning per use) unless
    ``jax_enable_x64`` is set; a ``.keras`` file saved there loads into the
    int64 counter of a TensorFlow process by value.

    >>> step_dtype() in ("int64", "int32")
    True
    """
    if keras.backend.backend() == "jax":
        import jax

        return "int64" if jax.config.read("jax_enable_x64") else "int32"
    return "int64"


class StepSchedule(abc.ABC):
    """Base class: ``schedule(step)`` gives the schedule's value(s) at a training step, as tensors."""

    @abc.abstractmethod
    def __call__(self, step):
        """The value(s) at ``step``."""

    @abc.abstractmethod
    def get_config(self) -> dict:
        """Serializable configuration."""

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def polynomial_ramp(step, initial: float, final: float, begin_step: int, end_step: int, power: float):
    """TFMOT's PolynomialDecay curve: ``final + (initial - final) * (1 - t) ** power``, float32.

    ``t = clip((step - begin_step) / (end_step - begin_step), 0, 1)``.

    Example:

    >>> from collabopt.technique.schedules import polynomial_ramp
    >>> [round(float(polynomial_ramp(s, 0.0, 0.8, 0, 10, 3)), 3) for s in (0, 5, 10, 20)]
    [0.0, 0.7, 0.8, 0.8]
    """
    step = ops.cast(step, "float32")
    t = ops.clip((step - begin_step) / float(max(end_step - begin_step, 1)), 0.0, 1.0)
    return ops.cast(final + (initial - final) * ops.power(1.0 - t, power), "float32")


def check_fraction(name: str, value) -> None:
    """InvalidArgumentError naming ``name`` unless ``value`` is a number in [0, 1)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
        raise InvalidArgumentError(f"{name} must be in [0, 1) (a number); received {value!r}.")


def check_step(name: str, value, minimum: int = 0) -> None:
    """InvalidArgumentError naming ``name`` unless ``value`` is an integer >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InvalidArgumentError(f"{name} must be an integer >= {minimum}; received {value!r}.")
