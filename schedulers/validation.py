"""Checks for scheduler arguments: one place, one wording.

Every scheduler (and the searchers, and ``rungflow plan``) validates its
arguments with these helpers, so an out-of-range value always reads the same
way: the argument's name, the value it was given and the rule it broke::

    reduction_factor is 1, but must be >= 2
    num_candidates is 0, but must be an integer >= 1
    quantile_fraction is 0.7, but must be in [0, 0.5]
    grace_period is 10, but must be <= max_t (9)

A value of the wrong type says what type is wanted ("must be a number >= 2").
Each failure is a :class:`SchedulerArgumentError` whose ``argument`` names the
field, which the spec layer turns into one ``error:`` line. Each helper
returns the value unchanged (an ``int`` stays an ``int``: HyperBand's bracket
arithmetic is exact on it), so a check reads as an assignment.

This module imports only the standard library.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

__all__ = [
    "SchedulerArgumentError",
    "check_at_most",
    "check_bool",
    "check_choice",
    "check_grace_period",
    "check_int",
    "check_max_t",
    "check_name",
    "check_number",
    "check_optional_int",
    "check_positive",
    "check_reduction_factor",
]

Number = int | float


class SchedulerArgumentError(ValueError):
    """A scheduler argument is out of range. ``argument`` names it."""

    def __init__(self, argument: str, message: str):
        super().__init__(message)
        self.argument = argument


def _fail(name: str, value: Any, rule: str) -> SchedulerArgumentError:
    return SchedulerArgumentError(name, f"{name} is {value!r}, but must be {rule}")


def _is_number(value: Any) -> bool:
    # bool is an int to Python, never a resource or a rate to a user.
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)


def _range_rule(low: float | None, high: float | None, low_open: bool) -> str:
    if low is not None and high is not None:
        return f"in ({low:g}, {high:g}]" if low_open else f"in [{low:g}, {high:g}]"
    if low is not None:
        return f"> {low:g}" if low_open else f">= {low:g}"
    if high is not None:
        return f"<= {high:g}"
    return "finite"


def check_number(
    name: str,
    value: Any,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
) -> Number:
    """A finite real number within ``[low, high]`` (``(low, high]`` if ``low_open``).

    Returns:
        ``value`` itself (an ``int`` stays an ``int``).
    """
    rule = _range_rule(low, high, low_open)
    if not _is_number(value):
        raise _fail(name, value, "a finite number" if rule == "finite" else f"a number {rule}")
    ok = True
    if low is not None:
        ok = value > low if low_open else value >= low
    if high is not None:
        ok = ok and value <= high
    if not ok:
        raise _fail(name, value, rule)
    return value


def check_positive(name: str, value: Any) -> Number:
    """A resource amount or a rate: a finite number > 0."""
    return check_number(name, value, low=0, low_open=True)


def check_max_t(max_t: Any) -> Number:
    """``max_t`` (R): the most resource any trial is trained to, a number > 0."""
    return check_positive("max_t", max_t)


def check_reduction_factor(value: Any) -> Number:
    """``reduction_factor`` (eta): the rung-to-rung resource ratio, a number >= 2."""
    return check_number("reduction_factor", value, low=2)


def check_at_most(name: str, value: Number, bound_name: str, bound: Number) -> Number:
    """``value <= bound``, where ``bound`` is another (already checked) argument."""
    if value > bound:
        raise _fail(name, value, f"<= {bound_name} ({bound!r})")
    return value


def check_grace_period(grace_period: Number, max_t: Number) -> Number:
    """The bottom rung (r_min) must not lie above the top one: ``grace_period <= max_t``."""
    return check_at_most("grace_period", grace_period, "max_t", max_t)


def check_int(name: str, value: Any, low: int, high: int | None = None) -> int:
    """An integer (bools excluded) ``>= low``, and ``<= high`` when given."""
    ok = not isinstance(value, bool) and isinstance(value, int) and value >= low
    if ok and high is not None:
        ok = value <= high
    if not ok:
        raise _fail(name, value, f"an integer >= {low}" if high is None
                    else f"an integer in {low}..{high}")
    return value


def check_optional_int(name: str, value: Any, low: int) -> int | None:
    """Like :func:`check_int`, but ``None`` (no limit) is allowed."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise _fail(name, value, f"an integer >= {low} or null")
    return value


def check_bool(name: str, value: Any) -> bool:
    """A real ``bool`` (``1`` or ``"yes"`` are refused: a spec says ``true``/``false``)."""
    if not isinstance(value, bool):
        raise _fail(name, value, "true or false")
    return value


def check_name(name: str, value: Any) -> str:
    """A non-empty string naming a metric or a reported attribute."""
    if not isinstance(value, str) or not value:
        raise _fail(name, value, "a name")
    return value


def check_choice(name: str, value: Any, choices: Iterable[str]) -> str:
    """One of ``choices``: "mode is 'avg', but must be 'min' or 'max'"."""
    options = list(choices)
    if value not in options:
        quoted = [repr(c) for c in options]
        rule = " or ".join(quoted) if len(quoted) <= 2 else "one of " + ", ".join(quoted)
        raise _fail(name, value, rule)
    return value
