"""Argument checks shared by every module: a clear error that names the parameter and what is
allowed, raised before anything changes.

`ArgumentError` is both a ValueError and a TypeError, so a caller may catch either: a string
where an int belongs is a wrong type and a wrong value at once.
"""

from __future__ import annotations

import math


class ArgumentError(ValueError, TypeError):
    """A parameter outside what is allowed; the message names the parameter."""


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def int_at_least(value, param: str, least: int = 1) -> int:
    """`value` if it is an int >= `least`.

    >>> int_at_least(3, "steps")
    3
    >>> int_at_least("3", "steps")
    Traceback (most recent call last):
    ...
    peftlab.checks.ArgumentError: steps must be a positive int, got '3'
    """
    if not _is_int(value) or value < least:
        allowed = "a positive int" if least == 1 else f"an int >= {least}"
        raise ArgumentError(f"{param} must be {allowed}, got {value!r}")
    return value


def positive_int(value, param: str) -> int:
    """`value` if it is an int >= 1 (a count, a rank, a width)."""
    return int_at_least(value, param, 1)


def positive_number(value, param: str) -> float:
    """`value` if it is a finite int or float > 0 (a learning rate, a scale).

    >>> positive_number(-1e-3, "lr")
    Traceback (most recent call last):
    ...
    peftlab.checks.ArgumentError: lr must be a positive number, got -0.001
    """
    if not _is_number(value) or not value > 0:
        raise ArgumentError(f"{param} must be a positive number, got {value!r}")
    return value


def number_in(value, param: str, low: float, high: float, *, high_open: bool = False) -> float:
    """`value` if it is a finite number in [low, high] (or [low, high) with `high_open`)."""
    if not _is_number(value) or not low <= value <= high or (high_open and value == high):
        raise ArgumentError(f"{param} must be a number in [{low:g}, {high:g}{')' if high_open else ']'}, "
                            f"got {value!r}")
    return value
