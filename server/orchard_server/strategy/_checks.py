"""Argument checks shared by the strategy modules.

Each public module raises its own ``ValueError`` subclass, so the checks take
the error class to raise; the messages name the argument or option at fault.
"""

from __future__ import annotations

import math
import numbers

import numpy as np


def real(value: object, *, what: str, error: type[ValueError]) -> float:
    """``value`` as a finite float; ints are accepted, bools and strings are not.

    bool is an int subclass in Python, so ``True`` would otherwise slip through
    as 1.0 and hide a configuration mistake.
    """
    if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Real):
        raise error(f"{what} must be a real number, got {value!r} ({type(value).__name__})")
    result = float(value)
    if not math.isfinite(result):
        raise error(f"{what} must be finite, got {result!r}")
    return result


def real_in(
    value: object,
    *,
    what: str,
    error: type[ValueError],
    low: float,
    high: float = math.inf,
    low_open: bool = False,
    high_open: bool = True,
) -> float:
    """``value`` as a float inside the interval; the message spells the interval out."""
    result = real(value, what=what, error=error)
    too_low = result <= low if low_open else result < low
    too_high = result >= high if high_open else result > high
    if too_low or too_high:
        interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        raise error(f"{what} must be in {interval}, got {result!r}")
    return result


def integer(value: object, *, what: str, error: type[ValueError], low: int) -> int:
    """``value`` as a Python int no smaller than ``low``; bools and floats are refused."""
    if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Integral):
        raise error(f"{what} must be an integer, got {value!r} ({type(value).__name__})")
    result = int(value)
    if result < low:
        raise error(f"{what} must be at least {low}, got {result}")
    return result
