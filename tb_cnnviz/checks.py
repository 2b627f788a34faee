"""Argument checks shared by every public function and callback: one rule, one wording.

Each check returns the value normalized (a Python `int`, `float` or tuple) or raises a
`ValueError` that names the argument, says what it must be, and ends in `Received: name=value`,
as Keras' own errors do. Booleans are never numbers here: `steps=True` is an error, not 1.
NumPy only; no TensorFlow.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

__all__ = ["image_size", "integer", "number", "value_range"]


def integer(name: str, value, *, minimum: int | None = None, none: bool = False, what=None):
    """Checks an integer argument (a NumPy integer too; never a bool).

    Args:
        name: The argument's name.
        value: The value received.
        minimum: The smallest value allowed, if any.
        none: Whether `None` is allowed (and returned as is).
        what: What it must be, for the message; by default said from `minimum`.

    Returns:
        The value as an `int` (or None).

    Raises:
        ValueError: If `value` is not such an integer.

    Example:
        >>> integer("steps", np.int64(3), minimum=1)
        3
        >>> integer("steps", True, minimum=1)
        Traceback (most recent call last):
        ...
        ValueError: steps must be a positive integer. Received: steps=True
    """
    if value is None and none:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Integral | np.integer)
        or (minimum is not None and value < minimum)
    ):
        if what is None:
            what = {None: "an integer", 0: "a non-negative integer", 1: "a positive integer"}.get(
                minimum, f"an integer of at least {minimum}"
            )
            what += " or None" if none else ""
        raise ValueError(f"{name} must be {what}. Received: {name}={value!r}")
    return int(value)


def number(
    name: str,
    value,
    *,
    above: float | None = None,
    at_least: float | None = None,
    at_most: float | None = None,
    none: bool = False,
    what=None,
):
    """Checks a real-number argument (finite, never a bool).

    Args:
        name: The argument's name.
        value: The value received.
        above: The value must be greater than this, if given.
        at_least: The value must be at least this, if given.
        at_most: The value must be at most this, if given.
        none: Whether `None` is allowed (and returned as is).
        what: What it must be, for the message; by default said from the bounds.

    Returns:
        The value as a `float` (or None).

    Raises:
        ValueError: If `value` is not such a number.

    Example:
        >>> number("budget", 0.05, above=0, at_most=1)
        0.05
    """
    if value is None and none:
        return None
    ok = not isinstance(value, bool) and isinstance(value, numbers.Real)
    ok = ok and math.isfinite(float(value))
    ok = ok and (above is None or value > above) and (at_least is None or value >= at_least)
    ok = ok and (at_most is None or value <= at_most)
    if not ok:
        if what is None:
            if above is not None and at_most is not None:
                what = f"a number in ({above:g}, {at_most:g}]"
            elif above == 0:
                what = "a positive number"
            elif at_least == 0:
                what = "a non-negative number"
            elif above is not None:
                what = f"a number above {above:g}"
            else:
                what = "a finite number"
            what += " or None" if none else ""
        raise ValueError(f"{name} must be {what}. Received: {name}={value!r}")
    return float(value)


def image_size(name: str, value) -> tuple[int, int]:
    """Checks an image size: one positive int, or a `(height, width)` pair of them.

    Example:
        >>> image_size("size", 32), image_size("size", (24, 32))
        ((32, 32), (24, 32))
    """
    pair = (value, value) if isinstance(value, numbers.Integral | np.integer) else value
    try:
        h, w = (integer(name, v, minimum=1) for v in pair)
    except (TypeError, ValueError):
        raise ValueError(
            f"{name} must be a positive int or a (height, width) pair of them. "
            f"Received: {name}={value!r}"
        ) from None
    return h, w


def value_range(name: str, value) -> tuple[float, float]:
    """Checks a `(low, high)` pair of finite numbers with `low < high`.

    Example:
        >>> value_range("value_range", (0, 255))
        (0.0, 255.0)
    """
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a (low, high) pair. Received: {name}={value!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ValueError(f"{name} must be finite with low < high. Received: {name}={value!r}")
    return lo, hi
