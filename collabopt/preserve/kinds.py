"""Constraint kinds: what a stage promises about a weight, as explicit state.

A *kind* (sparsity, clusters, ...) knows

* which state variables describe one constraint on a weight (``state_spec``),
* how to derive that state from plain weight values, for models that arrive
  already stripped (``derive``; returns a warning when the derivation is a
  guess),
* how to project a weight onto the constraint (``project``),
* which values it pins to zero, if any (``zero_mask``), so a later stage can
  keep them without knowing the kind,
* what it promises, as one number (``expected``), how to check that promise
  against an exported tensor (``check``) and how to say it (``describe``), so
  ``collabopt.tflite.verify`` and reports never name a kind.

The state itself lives in the variables of the wrapper that owns the
constraint (so it is saved in ``.keras`` files); a :class:`Constraint` is a
view pairing a kind with those variables. New kinds join with
:func:`register_kind` (:func:`kind_registered` for the duration of a ``with``
block, in tests); nothing else in the library changes.
"""

from __future__ import annotations

import abc
import contextlib
import dataclasses
from typing import ClassVar

import numpy as np
from keras import ops
from collabopt.errors import InvalidArgumentError
from collabopt.layers.channels import cut_value
from collabopt.scoped import restored_entry


@dataclasses.dataclass(frozen=True)
class StateVariable:
    """Shape, dtype and trainability of one state variable of a constraint."""

    shape: tuple[int, ...]
    dtype: str = "float32"
    trainable: bool = False


class ConstraintKind(abc.ABC):
    """Base class of constraint kinds. Subclasses set ``name`` and implement the methods."""

    name: ClassVar[str] = ""
    #: Projection order when several kinds hold on one weight: kinds that
    #: replace values (clusters) go before kinds that mask them (sparsity), so
    #: a trained centroid can never move a pruned zero.
    order: ClassVar[int] = 0
    #: True if projecting onto the constraint replaces the weight's values
    #: entirely (clusters: ``centroids[indices]``), so the weight itself gets
    #: no gradient and is frozen while the constraint's state trains.
    replaces_weight: ClassVar[bool] = False

    @abc.abstractmethod
    def state_spec(self, weight_shape, spec, options: dict) -> dict[str, StateVariable]:
        """The state variables one constraint on a weight of ``weight_shape`` needs."""

    @abc.abstractmethod
    def derive(self, value: np.ndarray, spec, options: dict) -> tuple[dict[str, np.ndarray], str | None]:
        """State values derived from plain weight values, and a warning (or None)."""

    def detect(self, value: np.ndarray, spec) -> dict | None:
        """Options if ``value`` clearly carries this constraint (automatic preservation), else None.

        Only confident cases count; explicit requests go through :meth:`derive`,
        which warns on ambiguous ones.
        """
        return None

    def record_options(self, values: dict, options: dict) -> dict:
        """Options to save after deriving ``values`` (e.g. a derived size). Default: unchanged."""
        return options

    @abc.abstractmethod
    def project(self, state: dict, weight, spec=None):
        """``weight`` (with :class:`WeightSpec` ``spec``) projected onto the constraint ``state``."""

    def zero_mask(self, state: dict):
        """A 0/1 mask of the weight's shape (0 where the constraint pins the value to zero), or None.

        Stages that keep zeros (sparsity-preserving clustering) combine the
        masks of every constraint on a weight without knowing their kinds.
        """
        return None

    def without_channels(self, state: dict, weight_shape, cut: dict, kept_channels) -> dict:
        """This constraint's state (numpy) on the weight once export removed channels from it.

        Args:
            state: The state as numpy arrays.
            weight_shape: The weight's shape before the cut.
            cut: ``{negative axis: bool keep mask}`` on arrays of the
                weight's shape (``collabopt.transform.shrink.channel_cuts``).
            kept_channels: Indices of the output channels left.

        Default: arrays of the weight's shape are cut like the weight; the
        others stay. A kind holding per-channel state overrides this.
        """
        return {k: cut_value(v, cut) if tuple(np.shape(v)) == tuple(weight_shape) else v for k, v in state.items()}

    @abc.abstractmethod
    def expected(self, state: dict) -> float:
        """The promise this constraint makes, as one number (e.g. the zeros fraction, or K)."""

    @abc.abstractmethod
    def check(self, state: dict, tensor, *, channels_rescaled: bool = False) -> tuple[bool, float | None]:
        """Whether an exported tensor keeps the constraint: ``(holds, found)``.

        Args:
            state: The constraint's state as numpy arrays.
            tensor: Statistics of the exported tensor (``zeros_fraction``,
                ``unique_values``, ``max_unique_per_channel``, ``per_channel``,
                ``shape``, ``scales``, ``zero_points``,
                ``quantized_dimension`` and the stored ``values``; e.g.
                ``collabopt.tflite``'s ``TensorStats``), or None when no
                tensor of the file matched the weight. When export split the
                weight into several tensors along its output channels (one
                per gate of a recurrent kernel), ``tensor`` describes them
                reassembled: shape ``(channels, values per channel)``, the
                stored values side by side, one scale and zero point per
                channel unless every piece shares one. A kind therefore
                checks one tensor or several pieces the same way.
            channels_rescaled: True when export scaled each output channel
                differently (a folded BatchNormalization).

        Returns:
            ``(holds, found)``: ``found`` is the number compared with
            :meth:`expected` (None without a tensor; then it does not hold).
        """

    @abc.abstractmethod
    def describe(self, value: float | None, *, bound: bool = False) -> str:
        """Words for ``value`` (from :meth:`expected` if ``bound``, else from :meth:`check`)."""


_KINDS: dict[str, ConstraintKind] = {}


def register_kind(kind: ConstraintKind) -> ConstraintKind:
    """Adds a constraint kind to the registry (by its ``name``)."""
    if not kind.name:
        raise InvalidArgumentError(f"constraint kind {type(kind).__name__} has no name.")
    _KINDS[kind.name] = kind
    return kind


@contextlib.contextmanager
def kind_registered(kind: ConstraintKind):
    """:func:`register_kind` for the duration of a ``with`` block; the kind registry is restored after.

    For tests and experiments: on exit the name is unregistered (or given back
    to the kind it had before), so nothing leaks into code that runs later.

    Args:
        kind: The :class:`ConstraintKind` to register (by its ``name``).

    Yields:
        ``kind``.

    Raises:
        InvalidArgumentError: ``kind`` has no name.

    Example:

    >>> from collabopt.preserve import SparsityKind, get_kind, known_kinds
    >>> class Zeros(SparsityKind):
    ...     name = "zeros_toy"
    >>> with kind_registered(Zeros()):
    ...     type(get_kind("zeros_toy")).__name__
    'Zeros'
    >>> "zeros_toy" in known_kinds()
    False
    """
    with restored_entry(_KINDS, kind.name):
        register_kind(kind)
        yield kind


def get_kind(name: str) -> ConstraintKind:
    """The registered kind called ``name`` (ValueError listing the known kinds otherwise)."""
    if name not in _KINDS:
        raise InvalidArgumentError(f"unknown constraint kind {name!r}; known kinds: {sorted(_KINDS)}.")
    return _KINDS[name]


def known_kinds() -> list[str]:
    """Registered kind names, in projection order."""
    return sorted(_KINDS, key=lambda n: (_KINDS[n].order, n))


def in_projection_order(kind_names) -> list[str]:
    """``kind_names`` sorted as projections must be applied."""
    return sorted(kind_names, key=lambda n: (get_kind(n).order, n))


@dataclasses.dataclass
class Constraint:
    """One constraint on one weight: a kind and the variables holding its state.

    Attributes:
        kind: The :class:`ConstraintKind`.
        state: State name -> variable (owned by a wrapper).
        spec: The weight's :class:`~collabopt.layers.WeightSpec` (per-channel kinds need it).
    """

    kind: ConstraintKind
    state: dict
    spec: object = None

    def project(self, weight):
        return self.kind.project(self.state, weight, self.spec)

    def zero_mask(self):
        """The kind's :meth:`ConstraintKind.zero_mask` of this state (None if it pins no zeros)."""
        return self.kind.zero_mask(self.state)

    def numpy_state(self) -> dict[str, np.ndarray]:
        return {k: ops.convert_to_numpy(v) for k, v in self.state.items()}


class SparsityKind(ConstraintKind):
    """Pruned weights: a 0/1 mask of the weight's shape; projection multiplies by it.

    Derived from a stripped weight as ``value != 0``. That is a guess when the
    weight has few exact zeros (a float weight is rarely exactly zero unless it
    was pruned), so deriving warns when fewer than 5% of the values are zero.
    """

    name = "sparsity"
    order = 100

    def state_spec(self, weight_shape, spec, options):
        return {"mask": StateVariable(tuple(weight_shape), "float32", False)}

    def derive(self, value, spec, options):
        mask = (value != 0).astype(np.float32)
        zeros = 1.0 - float(mask.mean()) if mask.size else 0.0
        warning = None
        if zeros == 0.0:
            warning = "has no exact zeros; the derived sparsity constraint keeps nothing at zero"
        elif zeros < 0.05:
            warning = (
                f"has only {100 * zeros:.2f}% exact zeros; treating them as pruned may keep "
                "zeros that pruning did not create"
            )
        return {"mask": mask}, warning

    def detect(self, value, spec):
        return {} if value.size and float(np.mean(value == 0)) >= 0.05 else None

    def project(self, state, weight, spec=None):
        weight = ops.convert_to_tensor(weight)
        return weight * ops.cast(state["mask"], weight.dtype)

    def zero_mask(self, state):
        return state["mask"]

    def expected(self, state):
        return float(np.mean(np.asarray(state["mask"]) == 0))

    def check(self, state, tensor, *, channels_rescaled=False):
        # Holds when the file keeps at least the recorded fraction of zeros.
        if tensor is None or tensor.zeros_fraction is None:
            return False, None
        found = float(tensor.zeros_fraction)
        return found >= self.expected(state) - 1e-9, found

    def describe(self, value, *, bound=False):
        return "no tensor" if value is None else f"{100 * value:.1f}% zeros"


SPARSITY = register_kind(SparsityKind())
