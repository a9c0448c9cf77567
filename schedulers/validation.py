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

The range of every scheduler argument a spec may set lives in one table,
:data:`ARGUMENTS`: the schedulers check their arguments through
:func:`check_argument`, and the spec layer builds the Prefect form (bounds,
enums) from the same rules, so a bound is written once.

This module imports only the standard library.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

__all__ = [
    "ARGUMENTS",
    "ArgumentRule",
    "SchedulerArgumentError",
    "check_argument",
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
    return check_argument("max_t", max_t)


def check_reduction_factor(value: Any) -> Number:
    """``reduction_factor`` (eta): the rung-to-rung resource ratio, a number >= 2."""
    return check_argument("reduction_factor", value)


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


RuleKind = Literal["number", "int", "bool", "choice", "name"]


@dataclass(frozen=True)
class ArgumentRule:
    """The allowed values of one scheduler argument.

    Attributes:
        kind: "number" (finite real), "int", "bool", "choice" or "name"
            (a non-empty string).
        low: Lower bound of a number or an int.
        high: Upper bound of a number or an int.
        low_open: The lower bound of a number is excluded (``> low``).
        choices: The allowed strings of a "choice".
    """

    kind: RuleKind
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    choices: tuple[str, ...] = ()

    def check(
        self, name: str, value: Any, *, nullable: bool = False, high: float | None = None
    ) -> Any:
        """``value`` unchanged if it follows the rule, else :class:`SchedulerArgumentError`.

        Args:
            name: The argument's name (the error names it).
            value: The value given.
            nullable: ``None`` is allowed (the argument's default is ``None``).
            high: A tighter upper bound known only at run time (e.g. ASHA's
                ``brackets`` is at most its number of rungs).
        """
        if value is None and nullable:
            return None
        if self.kind == "number":
            return check_number(name, value, low=self.low, high=self.high, low_open=self.low_open)
        if self.kind == "int":
            low = int(self.low if self.low is not None else 0)
            if nullable:
                return check_optional_int(name, value, low)
            top = high if high is not None else self.high
            return check_int(name, value, low, None if top is None else int(top))
        if self.kind == "bool":
            return check_bool(name, value)
        if self.kind == "choice":
            return check_choice(name, value, self.choices)
        return check_name(name, value)

    def describe(self) -> str:
        """The rule in words, as errors say it: "a number > 0", "an integer in 1..100"."""
        if self.kind == "number":
            return f"a number {_range_rule(self.low, self.high, self.low_open)}"
        if self.kind == "int":
            low = int(self.low or 0)
            if self.high is None:
                return f"an integer >= {low}"
            return f"an integer in {low}..{int(self.high)}"
        if self.kind == "bool":
            return "true or false"
        if self.kind == "choice":
            quoted = [repr(c) for c in self.choices]
            return " or ".join(quoted) if len(quoted) <= 2 else "one of " + ", ".join(quoted)
        return "a name"


_POSITIVE = ArgumentRule("number", low=0, low_open=True)
_FRACTION = ArgumentRule("number", low=0, high=1)
_FLAG = ArgumentRule("bool")
_NAME = ArgumentRule("name")


def _int(low: int, high: int | None = None) -> ArgumentRule:
    return ArgumentRule("int", low=low, high=high)


def _choice(*choices: str) -> ArgumentRule:
    return ArgumentRule("choice", choices=choices)


#: Every scalar scheduler argument a spec may set, by name (an argument means
#: the same in every scheduler that takes it). Arguments that are lists or
#: mappings (grid, policy, hyperparam_mutations, ...) are checked by their
#: scheduler.
ARGUMENTS: dict[str, ArgumentRule] = {
    # Resource levels (Ray Tune / Syne Tune names)
    "max_t": _POSITIVE,
    "grace_period": _POSITIVE,
    "reduction_factor": ArgumentRule("number", low=2),
    "rung_increment": _POSITIVE,
    "perturbation_interval": _POSITIVE,
    "burn_in_period": ArgumentRule("number", low=0),
    # Brackets and their weights (ASHA)
    "brackets": _int(1),
    "bracket_weights": _choice("budget", "exponential", "round_robin"),
    "variant": _choice("promotion", "stopping"),
    "stop_last_trials": _FLAG,
    # Searchers
    "searcher": _choice("random", "tpe"),
    "points_per_dim": _int(1, 100),
    # PBT
    "population_size": _int(2),
    "max_generations": _int(1),
    "quantile_fraction": ArgumentRule("number", low=0, high=0.5),
    "resample_probability": _FRACTION,
    "exploit": _choice("truncation", "binary_tournament"),
    "compare": _choice("matched", "latest"),
    "boundary": _choice("clip", "reflect"),
    "log_config": _FLAG,
    "require_attrs": _FLAG,
    "synch": _FLAG,
    # DyHPO
    "rung_spacing": _choice("geometric", "linear"),
    "probability_sh": _FRACTION,
    "surrogate": _choice("dkgp", "gp"),
    "curve_length": _int(0),
    "cost_aware": _FLAG,
    "new_config_target": _choice("first_rung", "max_t"),
    "num_init_random": _int(1),
    "num_candidates": _int(1),
    "max_gp_points": _int(4),
    "points_per_trial": _int(1),
    "refit_every": _int(1),
    "dkgp_min_points": _int(4),
    # Reported attribute names
    "time_attr": _NAME,
    "resource_attr": _NAME,
}


def check_argument(
    name: str, value: Any, *, nullable: bool = False, high: float | None = None
) -> Any:
    """Check ``value`` against ``ARGUMENTS[name]`` (see :meth:`ArgumentRule.check`)."""
    return ARGUMENTS[name].check(name, value, nullable=nullable, high=high)
