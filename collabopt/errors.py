"""The exceptions collabopt raises for anything a user can cause.

Every error a user can trigger (a bad argument, an unsupported layer, a stage
applied in an order that cannot work, an unreadable file, a model the TFLite
converter rejects) is a :class:`CollaboptError`. Each one is also a
``ValueError`` (or ``TypeError``), so code written against the built-in types
keeps working; the CLI turns any of them into one line and exit code 2.
Messages name the layer, weight, argument or file and what would be accepted.

Example:

>>> from collabopt.errors import CollaboptError, InvalidArgumentError
>>> issubclass(InvalidArgumentError, ValueError) and issubclass(InvalidArgumentError, CollaboptError)
True
"""

from __future__ import annotations


class CollaboptError(Exception):
    """Base class of every error collabopt raises for bad input."""


class InvalidArgumentError(CollaboptError, ValueError):
    """An argument has a value collabopt cannot use; the message names it and what is accepted."""


class InvalidTypeError(CollaboptError, TypeError):
    """An argument has a type collabopt cannot use; the message names it and what is accepted."""


class UnsupportedLayerError(CollaboptError, ValueError):
    """A layer (named in the message) cannot be handled by the requested technique or export."""


class OrderError(CollaboptError, ValueError):
    """A stage was applied on top of one it cannot follow; the message gives the order that works."""


class InvalidWeightError(CollaboptError, ValueError):
    """A weight holds values that cannot be optimized or exported (e.g. NaN or inf)."""


class InvalidFileError(CollaboptError, ValueError):
    """A file (named in the message) is missing, truncated or not of the expected format."""


class ConversionError(CollaboptError, ValueError):
    """The TFLite converter rejected the model; the message names the layers and ops involved."""


class UnsupportedBackendError(CollaboptError, RuntimeError):
    """A function that needs Keras' TensorFlow backend (TFLite conversion) ran on another; the message says how to export."""
