"""Registries changed for a ``with`` block only (the scoped registration functions of each registry)."""

from __future__ import annotations

import contextlib


@contextlib.contextmanager
def restored_entry(registry: dict, key):
    """Puts ``registry[key]`` back as it was (or removes it) when the ``with`` block ends.

    >>> table = {"a": 1}
    >>> with restored_entry(table, "a"), restored_entry(table, "b"):
    ...     table.update(a=2, b=3)
    >>> table
    {'a': 1}
    """
    had, previous = key in registry, registry.get(key)
    try:
        yield
    finally:
        if had:
            registry[key] = previous
        else:
            registry.pop(key, None)
