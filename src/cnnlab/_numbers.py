"""The one validator of numeric options: finite, of the right kind, inside a meaningful range.

``value < 0`` is False for NaN, so a range check alone lets NaN through (``--augment rotate=nan``
turned every pixel NaN); :func:`check_number` rejects NaN and infinity first, then checks the
range, and its message names the option, the value and what was expected, in one line. Callers
pass ``high`` from the data when a value only makes sense relative to it (a cutout no larger
than the image, no more deletion steps than pixels).
"""

from __future__ import annotations

import math
import numbers
from typing import Any

from cnnlab.errors import UserError


def check_number(value: Any, name: str, *, low: float | None = None, high: float | None = None,
                 low_open: bool = False, high_open: bool = False, integer: bool = False,
                 why: str = "") -> Any:
    """Return ``value`` if it is a finite number in the range, else raise one UserError.

    Args:
        value: what the user gave.
        name: how the user gave it (``"--lr"``, ``"augmentation cutout"``).
        low, high: the bounds (None: unbounded); ``low_open`` / ``high_open`` exclude them.
        integer: the value must be a whole number (an int, not a bool).
        why: appended to the range message, e.g. ``"(the images are 28x28)"``.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        kind = "a whole number" if integer else "a number"
        raise UserError(f"{name} must be {kind}, not {value!r}")
    if integer and not isinstance(value, numbers.Integral):
        raise UserError(f"{name} must be a whole number, not {value!r}")
    if not math.isfinite(value):
        raise UserError(f"{name} must be a finite number, not {value}")
    too_low = low is not None and (value <= low if low_open else value < low)
    too_high = high is not None and (value >= high if high_open else value > high)
    if too_low or too_high:
        if low is not None and high is not None:
            want = f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        elif low is not None:
            want = f"{'>' if low_open else '>='} {low:g}"
        else:
            want = f"{'<' if high_open else '<='} {high:g}"
        raise UserError(f"{name} must be {want}, not {value:g}{' ' + why if why else ''}")
    return value
