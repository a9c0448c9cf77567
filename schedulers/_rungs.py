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

# Argument checks live in schedulers.validation; re-exported for old imports.
from schedulers.validation import (
    SchedulerArgumentError,
    check_argument,
    check_grace_period,
    check_positive,
    check_reduction_factor,
)

if TYPE_CHECKING:
    # numpy and the searchers (optuna) only where a scheduler uses them:
    # `rungflow plan` prints brackets with this module's arithmetic alone.
    import numpy as np

    from schedulers.base import Scheduler
    from schedulers.searchers import Searcher
    from schedulers.space import SearchSpace

__all__ = [
    "Bracket",
    "Number",
    "asha_rungs",
    "bracket_probabilities",
    "check_grace_period",
    "check_positive",
    "check_reduction_factor",
    "hyperband_brackets",
    "hyperband_schedule",
    "make_searcher",
    "partial_bracket",
    "percentile",
    "promotion_fraction",
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


def _floor_rung(value: Fraction, like: Number, integer: bool) -> Number:
    """A rung resource: ``floor(value)`` when rungs are integers (as Ray Tune), else exact."""
    if integer:
        return max(1, math.floor(value * (1 + _REL_TOL)))
    return _out(value, like)


def hyperband_brackets(
    max_t: Number, reduction_factor: Number = 3, *, integer: bool | None = None
) -> list[Bracket]:
    """The brackets of one HyperBand iteration (Li et al., JMLR 2018, Algorithm 1).

    With ``R = max_t`` and ``eta = reduction_factor``: ``s_max = floor(log_eta R)``;
    for ``s = s_max, ..., 0``: ``n = ceil((s_max + 1) / (s + 1) * eta**s)``,
    ``r = R * eta**-s``, and rung ``i = 0..s`` trains ``n_i = floor(n * eta**-i)``
    trials to ``r_i = r * eta**i``. The last rung is ``R`` exactly.

    A trainable trains whole epochs, so when ``max_t`` is an int the rungs are
    ints: ``r_i = floor(R * eta**(i - s))`` (Ray Tune's ``_get_r0`` rounding;
    it is >= 1 because ``eta**s_max <= R``). ``R = 100, eta = 3`` gives rungs
    1, 3, 11, 33, 100 instead of 100/81, 100/27, ...; what is charged to the
    budget is then what is trained.

    Args:
        max_t: R, the most resource any trial gets (> 0). Resources come back
            as ints when ``max_t`` is an int, else floats.
        reduction_factor: eta (>= 2).
        integer: Integer rungs; default: when ``max_t`` is an int. False gives
            the exact rationals (the arithmetic of logs written before integer
            rungs, replayed as they were).

    Returns:
        Brackets from ``s_max`` down to 0.

    Raises:
        SchedulerArgumentError: naming ``max_t`` or ``reduction_factor``.

    Example:
        >>> [(b.s, b.rungs) for b in hyperband_brackets(9, 3)]
        [(2, ((9, 1), (3, 3), (1, 9))), (1, ((5, 3), (1, 9))), (0, ((3, 9),))]
        >>> hyperband_brackets(100, 3)[0].rungs
        ((81, 1), (27, 3), (9, 11), (3, 33), (1, 100))
    """
    check_argument("max_t", max_t)
    check_reduction_factor(reduction_factor)
    if integer is None:
        integer = isinstance(max_t, int)
    r_max, eta = _exact(max_t), _exact(reduction_factor)
    s_max = s_max_of(max_t, reduction_factor)
    brackets = []
    for s in range(s_max, -1, -1):
        n = math.ceil(Fraction(s_max + 1, s + 1) * eta**s)
        rungs = []
        for i in range(s + 1):
            n_i = math.floor(n / eta**i)
            # r_i = R / eta**(s - i): for i = s this is R itself, exactly.
            r_i = max_t if i == s else _floor_rung(r_max / eta ** (s - i), max_t, integer)
            rungs.append((n_i, r_i))
        brackets.append(Bracket(s, tuple(rungs)))
    return brackets


def partial_bracket(
    plan: Bracket, reduction_factor: Number, room: Number | None, trials: int | None
) -> Bracket | None:
    """The largest cut-down copy of ``plan`` that fits ``room`` resource and ``trials`` trials.

    HyperBand's last bracket rarely fits what is left of a ``max_resource``
    budget; rather than leave it unspent, run the same bracket with fewer
    trials: ``n'_0 <= n_0`` trials at rung 0 and ``n'_i = max(1, floor(n'_0 *
    eta**-i))`` at rung ``i`` (at least one trial still reaches ``max_t``).
    Returns the bracket with the largest ``n'_0`` that fits, or None when not
    even one trial trained to ``max_t`` fits.

    Example:
        >>> partial_bracket(hyperband_brackets(9, 3)[0], 3, 16, None).rungs
        ((6, 1), (2, 3), (1, 9))
    """
    eta = _exact(reduction_factor)
    resources = [r for _, r in plan.rungs]

    def cut(n0: int) -> Bracket:
        ns = [max(1, math.floor(n0 / eta**i)) for i in range(len(resources))]
        return Bracket(plan.s, tuple(zip(ns, resources, strict=True)))

    best = None
    lo, hi = 1, plan.rungs[0][0]
    if trials is not None:
        hi = min(hi, trials)
    while lo <= hi:  # resource grows with n'_0: bisect for the largest that fits
        mid = (lo + hi) // 2
        candidate = cut(mid)
        if room is None or candidate.resource <= room * (1 + _REL_TOL):
            best, lo = candidate, mid + 1
        else:
            hi = mid - 1
    return best


def hyperband_schedule(
    max_t: Number,
    reduction_factor: Number = 3,
    *,
    max_resource: Number | None = None,
    max_trials: int | None = None,
    max_brackets: int = 10_000,
) -> list[tuple[int, Bracket]]:
    """The brackets a fresh HyperBand run opens under a budget: ``[(iteration, plan), ...]``.

    Mirrors :class:`schedulers.hyperband.HyperBandScheduler` when no trial
    fails: brackets are opened in the cycle ``s_max .. 0`` (a new iteration
    each time the cycle wraps), a bracket that does not fit what is left is
    skipped for the next one in the cycle that does, and when no whole bracket
    fits, the first bracket of the cycle of which a
    :func:`partial_bracket` fits is the last one. Without a budget, one
    iteration.

    Example:
        >>> [(it, b.s, b.resource) for it, b in hyperband_schedule(9, 3, max_resource=130)]
        [(0, 2, 21), (0, 1, 21), (0, 0, 27), (1, 2, 21), (1, 1, 21), (1, 0, 18)]
    """
    plans = hyperband_brackets(max_t, reduction_factor)
    if max_resource is None and max_trials is None:
        return [(0, plan) for plan in plans]
    s_max = plans[0].s
    room: Number | None = max_resource
    trials = max_trials
    out: list[tuple[int, Bracket]] = []
    s_prev, it = s_max + 1, 0
    while len(out) < max_brackets:
        cycle = [(s_prev - step) % (s_max + 1) for step in range(1, s_max + 2)]
        chosen = None
        for s in cycle:
            plan = plans[s_max - s]
            if trials is not None and plan.rungs[0][0] > trials:
                continue
            if room is not None and plan.resource > room * (1 + _REL_TOL):
                continue
            chosen = (s, plan)
            break
        if chosen is None:
            for s in cycle:
                cut = partial_bracket(plans[s_max - s], reduction_factor, room, trials)
                if cut is not None:
                    chosen = (s, cut)
                    break
        if chosen is None:
            break
        s, plan = chosen
        it = it + 1 if s >= s_prev else it
        out.append((it, plan))
        s_prev = s
        if room is not None:
            room -= plan.resource
        if trials is not None:
            trials -= plan.rungs[0][0]
        if len(plan.rungs) and plan.rungs[0][0] < plans[s_max - s].rungs[0][0]:
            break  # a partial bracket is the last one
    return out


def promotion_fraction(r_k: Number, r_next: Number) -> Fraction:
    """Share of a rung's trials that go on to the next rung: ``r_k / r_{k+1}``.

    Syne Tune's rung systems promote this fraction; for geometric rungs it is
    ``1 / eta`` (successive halving), for the short last step of
    ``asha_rungs(1, 10, 3) == [1, 3, 9, 10]`` it is 9/10, not an extra cull
    to a third.
    """
    return _exact(r_k) / _exact(r_next)


def asha_rungs(
    grace_period: Number, max_t: Number, reduction_factor: Number, bracket: int = 0
) -> list[Number]:
    """Rung resources of ASHA bracket ``bracket`` (s in the paper).

    ``grace_period * eta**(k + s)`` for every k whose value is below ``max_t``,
    then ``max_t`` itself as the top rung, so trials always end at ``max_t``.
    When ``grace_period`` and ``max_t`` are ints the rungs are ints (rounded
    down, like HyperBand's), so a trainable is asked for whole epochs.

    Example:
        >>> asha_rungs(1, 10, 3)
        [1, 3, 9, 10]
        >>> asha_rungs(1, 9, 3, bracket=1)
        [3, 9]
        >>> asha_rungs(1, 20, 2.5)
        [1, 2, 6, 15, 20]
    """
    g, r_max, eta = _exact(grace_period), _exact(max_t), _exact(reduction_factor)
    integer = isinstance(grace_period, int) and isinstance(max_t, int)
    rungs: list[Number] = []
    value = g * eta**bracket
    while value < r_max * (1 - _REL_TOL):
        r = _floor_rung(value, max_t if isinstance(grace_period, int) else 0.0, integer)
        if not rungs or r > rungs[-1]:
            rungs.append(r)
        value *= eta
    if not rungs or max_t > rungs[-1]:
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


def rng_after(scheduler: Scheduler, offset: int, salt: int = 0) -> np.random.Generator:
    """The generator ``scheduler.rng(salt)`` will return once ``offset`` more events are told.

    ``ask(n)`` lists actions as if each earlier one had already been recorded,
    so its k-th decision must draw from the same generator that ``ask(1)``
    would use after the events of the first k-1 actions were told. This
    mirrors :meth:`Scheduler.rng`'s seeding exactly.
    """
    if offset == 0:
        return scheduler.rng(salt)
    import numpy as np

    seq = np.random.SeedSequence([scheduler.seed, scheduler.n_events + offset, salt])
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
        from schedulers.searchers import RandomSearcher

        return RandomSearcher(space)
    if name == "tpe":
        from schedulers.tpe import TPESearcher

        try:
            return TPESearcher(space, **kwargs)
        except TypeError as exc:
            raise SchedulerArgumentError("searcher_args", f"searcher_args: {exc}") from exc
    check_argument("searcher", name)  # raises: neither random nor tpe
    raise AssertionError(name)  # pragma: no cover


def bracket_probabilities(n_brackets: int, reduction_factor: Number, rule: str) -> list[float]:
    """Probability that a new trial joins ASHA bracket ``b`` (0 = most aggressive).

    ``"budget"`` is Optuna's ``HyperbandPruner``: bracket ``b`` has early-stopping
    rate ``s = n_brackets - 1 - b`` and weight ``ceil(n_brackets * eta**s / (s + 1))``,
    HyperBand's ``n`` for that bracket, so every bracket gets about the same
    resource, as in synchronous HyperBand. ``"exponential"`` is Ray Tune's
    ``AsyncHyperBandScheduler``: weight ``e**(rungs_b - max_b rungs_b)``, which
    puts ~64% of the trials in the most aggressive bracket. ``"round_robin"`` is
    rungflow's former rule (equal trial counts), which gives the full-fidelity
    bracket about half of the budget.

    Example:
        >>> [round(w, 3) for w in bracket_probabilities(5, 3, "budget")]
        [0.566, 0.238, 0.105, 0.056, 0.035]
    """
    if rule == "round_robin":
        return [1.0 / n_brackets] * n_brackets
    if rule == "budget":
        raw = [
            math.ceil(Fraction(n_brackets * Fraction(reduction_factor) ** s, s + 1))
            for s in (n_brackets - 1 - b for b in range(n_brackets))
        ]
        return [w / sum(raw) for w in raw]
    # Bracket b has one rung fewer than bracket b - 1.
    raw_e = [math.exp(-b) for b in range(n_brackets)]
    return [w / sum(raw_e) for w in raw_e]
