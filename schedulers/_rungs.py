"""Shared arithmetic for HyperBand and ASHA: brackets, rungs, cutoffs.

Everything here is pure. Bracket and rung sizes are computed with exact
rationals (:class:`fractions.Fraction`) because the obvious float formulas are
wrong at the edges: ``math.log(243, 3)`` is ``4.999999999999999`` (so
``floor`` gives s_max = 4 instead of 5) and ``5 / 3 * 9`` is
``15.000000000000002`` (so ``ceil`` gives n = 16 instead of the paper's 15).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING, Any

import numpy as np

from schedulers.searchers import RandomSearcher, Searcher
from schedulers.space import SearchSpace

# Argument checks live in schedulers.validation; re-exported for old imports.
from schedulers.validation import (
    SchedulerArgumentError,
    check_grace_period,
    check_positive,
    check_reduction_factor,
)

if TYPE_CHECKING:
    from schedulers.base import Scheduler

__all__ = [
    "Bracket",
    "Number",
    "asha_rungs",
    "check_grace_period",
    "check_positive",
    "check_reduction_factor",
    "hyperband_brackets",
    "make_searcher",
    "percentile",
    "rng_after",
]

Number = int | float

#: Relative slack when comparing a computed rung with max_t: ``0.1 * 3**3`` is
#: ``2.7000000000000006``, which must count as reaching ``max_t=2.7``.
_REL_TOL = Fraction(1, 10**9)


@dataclass(frozen=True)
class Bracket:
    """One bracket of HyperBand (one run of successive halving).

    Attributes:
        s: Bracket index of the paper; ``s_max`` is the most exploratory one.
        rungs: ``(n_i, r_i)`` per rung: ``n_i`` trials are trained to resource
            ``r_i``. The last ``r_i`` is ``max_t`` (R) exactly.
    """

    s: int
    rungs: tuple[tuple[int, Number], ...]

    @property
    def resource(self) -> Number:
        """Resource the bracket spends when promoted trials resume from checkpoints.

        ``sum_i n_i * (r_i - r_{i-1})`` with ``r_{-1} = 0``: what rungflow
        charges to ``Budget.max_resource``.
        """
        total: Number = 0
        previous: Number = 0
        for n_i, r_i in self.rungs:
            total += n_i * (r_i - previous)
            previous = r_i
        return total

    @property
    def resource_restart(self) -> Number:
        """``sum_i n_i * r_i``: the paper's cost, where every rung retrains from scratch."""
        return sum(n_i * r_i for n_i, r_i in self.rungs)

    def to_json(self) -> dict[str, Any]:
        return {
            "s": self.s,
            "rungs": [[n_i, r_i] for n_i, r_i in self.rungs],
            "resource": self.resource,
            "resource_restart": self.resource_restart,
        }


def _exact(value: Number) -> Fraction:
    # Fraction(float) is the float's exact binary value, so no rounding sneaks in.
    return Fraction(value)


def _out(value: Fraction, like: Number) -> Number:
    """``value`` as an int when ``like`` (max_t) is an int and it is integral, else float."""
    if isinstance(like, int) and value.denominator == 1:
        return int(value)
    return float(value)


def s_max_of(max_t: Number, reduction_factor: Number) -> int:
    """``floor(log_eta(R))`` computed exactly (0 when R < eta)."""
    r, eta = _exact(max_t), _exact(reduction_factor)
    s = 0
    power = eta
    while power <= r * (1 + _REL_TOL):
        s += 1
        power *= eta
    return s


def hyperband_brackets(max_t: Number, reduction_factor: Number = 3) -> list[Bracket]:
    """The brackets of one HyperBand iteration (Li et al., JMLR 2018, Algorithm 1).

    With ``R = max_t`` and ``eta = reduction_factor``: ``s_max = floor(log_eta R)``;
    for ``s = s_max, ..., 0``: ``n = ceil((s_max + 1) / (s + 1) * eta**s)``,
    ``r = R * eta**-s``, and rung ``i = 0..s`` trains ``n_i = floor(n * eta**-i)``
    trials to ``r_i = r * eta**i``. The last rung is ``R`` exactly.

    Args:
        max_t: R, the most resource any trial gets (> 0). Resources come back
            as ints when ``max_t`` is an int and the value is integral, else floats.
        reduction_factor: eta (>= 2).

    Returns:
        Brackets from ``s_max`` down to 0.

    Raises:
        SchedulerArgumentError: naming ``max_t`` or ``reduction_factor``.

    Example:
        >>> [(b.s, b.rungs) for b in hyperband_brackets(9, 3)]
        [(2, ((9, 1), (3, 3), (1, 9))), (1, ((5, 3), (1, 9))), (0, ((3, 9),))]
    """
    check_positive("max_t", max_t)
    check_reduction_factor(reduction_factor)
    r_max, eta = _exact(max_t), _exact(reduction_factor)
    s_max = s_max_of(max_t, reduction_factor)
    brackets = []
    for s in range(s_max, -1, -1):
        n = math.ceil(Fraction(s_max + 1, s + 1) * eta**s)
        rungs = []
        for i in range(s + 1):
            n_i = math.floor(n / eta**i)
            # r_i = R / eta**(s - i): for i = s this is R itself, exactly.
            r_i = max_t if i == s else _out(r_max / eta ** (s - i), max_t)
            rungs.append((n_i, r_i))
        brackets.append(Bracket(s, tuple(rungs)))
    return brackets


def asha_rungs(
    grace_period: Number, max_t: Number, reduction_factor: Number, bracket: int = 0
) -> list[Number]:
    """Rung resources of ASHA bracket ``bracket`` (s in the paper).

    ``grace_period * eta**(k + s)`` for every k whose value is below ``max_t``,
    then ``max_t`` itself as the top rung, so trials always end at ``max_t``.

    Example:
        >>> asha_rungs(1, 10, 3)
        [1, 3, 9, 10]
        >>> asha_rungs(1, 9, 3, bracket=1)
        [3, 9]
    """
    g, r_max, eta = _exact(grace_period), _exact(max_t), _exact(reduction_factor)
    rungs: list[Number] = []
    value = g * eta**bracket
    while value < r_max * (1 - _REL_TOL):
        rungs.append(_out(value, max_t if isinstance(grace_period, int) else 0.0))
        value *= eta
    rungs.append(max_t)
    return rungs


def percentile(sorted_values: Sequence[float], q: float) -> float | None:
    """``numpy.percentile(values, q)`` (linear method) on an already sorted sequence.

    O(1) instead of numpy's O(n) selection, which keeps ASHA's per-result cost
    independent of how many results a rung holds. Returns None when empty,
    like Ray's ``_Bracket.cutoff``.
    """
    n = len(sorted_values)
    if n == 0:
        return None
    index = (n - 1) * q / 100.0
    lo = math.floor(index)
    hi = min(lo + 1, n - 1)
    frac = index - lo
    a, b = sorted_values[lo], sorted_values[hi]
    # numpy's _lerp: interpolate from the nearer end for symmetric rounding.
    if frac >= 0.5:
        return float(b - (b - a) * (1 - frac))
    return float(a + (b - a) * frac)


def rng_after(scheduler: Scheduler, offset: int) -> np.random.Generator:
    """The generator ``scheduler.rng(0)`` will return once ``offset`` more events are told.

    ``ask(n)`` lists actions as if each earlier one had already been recorded,
    so its k-th decision must draw from the same generator that ``ask(1)``
    would use after the events of the first k-1 actions were told. This
    mirrors :meth:`Scheduler.rng`'s seeding exactly.
    """
    if offset == 0:
        return scheduler.rng(0)
    seq = np.random.SeedSequence([scheduler.seed, scheduler.n_events + offset, 0])
    return np.random.default_rng(seq)


def make_searcher(
    name: Any, space: SearchSpace, args: Mapping[str, Any] | None
) -> Searcher:
    """Build the searcher named in a scheduler's ``searcher`` argument."""
    if args is not None and not isinstance(args, Mapping):
        raise SchedulerArgumentError(
            "searcher_args", f"searcher_args is {args!r}, but must be a mapping"
        )
    kwargs = dict(args or {})
    if name == "random":
        if kwargs:
            raise SchedulerArgumentError(
                "searcher_args",
                f"searcher_args is {kwargs!r}, but the random searcher takes no arguments",
            )
        return RandomSearcher(space)
    if name == "tpe":
        from schedulers.tpe import TPESearcher

        try:
            return TPESearcher(space, **kwargs)
        except TypeError as exc:
            raise SchedulerArgumentError("searcher_args", f"searcher_args: {exc}") from exc
    raise SchedulerArgumentError("searcher", f"searcher is {name!r}, but must be 'random' or 'tpe'")
