"""Argument checks shared by the public constructors and functions: the README's rule is a
``TypeError`` for a wrong kind of argument and a ``ValueError`` for a bad value, each naming
the argument."""

from __future__ import annotations

__all__ = ["text", "whole_number"]


def whole_number(name: str, value: object, minimum: int, words: str) -> int:
    """``value`` as an int of at least ``minimum``: a ``TypeError`` for what is not an int (a
    bool is not), a ``ValueError`` below ``minimum``; both say "``name`` must be ``words``"."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be {words}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be {words}, got {value!r}")
    return value


def text(name: str, value: object, words: str) -> str:
    """``value`` as a string with something besides whitespace: a ``TypeError`` for what is not
    a string, a ``ValueError`` for a blank one; both say "``name`` must be ``words``"."""
    if not isinstance(value, str):
        raise TypeError(f"{name} must be {words}, got {value!r}")
    if not value.strip():
        raise ValueError(f"{name} must be {words}, got {value!r}")
    return value
