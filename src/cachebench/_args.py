"""Argument checks shared by the public constructors and functions: the README's rule is a
``TypeError`` for a wrong kind of argument and a ``ValueError`` for a bad value, each naming
the argument."""

from __future__ import annotations

__all__ = ["whole_number"]


def whole_number(name: str, value: object, minimum: int, words: str) -> int:
    """``value`` as an int of at least ``minimum``: a ``TypeError`` for what is not an int (a
    bool is not), a ``ValueError`` below ``minimum``; both say "``name`` must be ``words``"."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be {words}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be {words}, got {value!r}")
    return value
