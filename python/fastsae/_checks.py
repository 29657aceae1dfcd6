"""One argument-check policy for the whole package: a wrong type raises :class:`ArgumentTypeError`
(a ``TypeError``), a wrong value a ``ValueError``, each naming the argument and what it got.

:class:`ArgumentTypeError` is also a ``ValueError``, so code written against the earlier checks
(which raised ``ValueError`` for both) keeps catching it. ``bool`` is never accepted as a number.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Iterable


class ArgumentTypeError(TypeError, ValueError):
    """An argument of the wrong type (a ``TypeError``; also a ``ValueError`` for older callers)."""


def _describe(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})"


def check_int(value: Any, name: str, *, min: int | None = None, max: int | None = None,
              none: bool = False) -> int | None:
    """``value`` as an ``int`` in ``[min, max]`` (numpy integers accepted; ``None`` when ``none``)."""
    if value is None and none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        want = "an int" + (" or None" if none else "")
        raise ArgumentTypeError(f"{name} must be {want}, got {_describe(value)}")
    v = int(value)
    if (min is not None and v < min) or (max is not None and v > max):
        raise ValueError(f"{name} must be {_range(min, max)}, got {v}")
    return v


def check_number(value: Any, name: str, *, min: float | None = None, max: float | None = None,
                 min_open: bool = False, max_open: bool = False, none: bool = False) -> float | None:
    """``value`` as a finite ``float`` in the given range (``min_open``: strictly above ``min``)."""
    if value is None and none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        want = "a number" + (" or None" if none else "")
        raise ArgumentTypeError(f"{name} must be {want}, got {_describe(value)}")
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"{name} must be finite, got {v}")
    low_bad = min is not None and (v <= min if min_open else v < min)
    high_bad = max is not None and (v >= max if max_open else v > max)
    if low_bad or high_bad:
        raise ValueError(f"{name} must be {_range(min, max, min_open, max_open)}, got {v:g}")
    return v


def check_choice(value: Any, name: str, choices: Iterable[Any]) -> Any:
    """``value`` when it is one of ``choices``."""
    options = tuple(choices)
    if value not in options:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, options))}; got {value!r}")
    return value


def check_bool(value: Any, name: str) -> bool:
    """``value`` when it is a ``bool`` (numpy bools accepted)."""
    if not isinstance(value, (bool, _np_bool())):
        raise ArgumentTypeError(f"{name} must be True or False, got {_describe(value)}")
    return bool(value)


def _np_bool():
    import numpy as np

    return np.bool_


def _range(lo, hi, lo_open: bool = False, hi_open: bool = False) -> str:
    if lo is not None and hi is not None:
        return f"in {'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"
    if lo is not None:
        return f"{'>' if lo_open else '>='} {lo}"
    return f"{'<' if hi_open else '<='} {hi}"
