"""ASHA: asynchronous successive halving, promotion and stopping variants.

*Promotion* is Algorithm 2 of Li et al., "A System for Massively Parallel
Hyperparameter Tuning" (MLSys 2020): whenever a worker is free, promote the
best promotable trial of the highest rung that has one, else start a new
configuration at the bottom rung. *Stopping* is Ray Tune's ASHAScheduler: a
trial keeps training rung after rung as long as its value is within the top
``1/eta`` of the values recorded at that rung before it, and stops otherwise.

The hot path is O(log n) in the number of results per rung: rungs keep sorted
lists, the promotability test is a bisection and the stopping cutoff an O(1)
interpolation on the sorted values.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from schedulers._rungs import (
    Number,
    asha_rungs,
    bracket_probabilities,
    check_grace_period,
    check_reduction_factor,
    make_searcher,
    percentile,
    promotion_fraction,
    rng_after,
)
from schedulers.actions import Action, Done, Pause, RunSegment, Stop, Wait, action_events
from schedulers.base import ImportedObservation, Scheduler
from schedulers.events import (
    Event,
    ObservationImported,
    SegmentFailed,
    SegmentFinished,
    SegmentStarted,
    TrialCreated,
    TrialPaused,
    TrialRetried,
    TrialStopped,
)
from schedulers.validation import ARGUMENTS, check_argument

__all__ = ["ASHAInfo", "ASHAScheduler", "bracket_probabilities"]

_VARIANTS = ARGUMENTS["variant"].choices
_BRACKET_WEIGHTS = ARGUMENTS["bracket_weights"].choices


@dataclass(frozen=True)
class ASHAInfo:
    """What an ASHA decision records in its events' ``info``; replay reads it back.

    Stored as a plain mapping (:meth:`to_info`), so the event schema is
    unchanged and every stored log reads the same; :meth:`parse` ignores keys
    it does not know and defaults missing flags to False.

    Attributes:
        bracket: The trial's bracket (0 = the most aggressive).
        rung: Rung the segment trains to (or the trial sits at, for Pause/Stop).
        promoted: The segment is a promotion to ``rung`` (promotion variant).
        continued: The segment continues past the stopping cutoff (stopping variant).
        retry: The segment re-runs one that failed (not finally).
        cutoff: Stopping variant: the cutoff the result was compared with.
        has_cutoff: Whether ``cutoff`` is recorded (it may be recorded as None).
    """

    bracket: int
    rung: int
    promoted: bool = False
    continued: bool = False
    retry: bool = False
    cutoff: float | None = None
    has_cutoff: bool = False

    def to_info(self) -> dict[str, Any]:
        """The mapping stored in the event, keys in the order rungflow always wrote."""
        info: dict[str, Any] = {"bracket": self.bracket, "rung": self.rung}
        for flag in ("continued", "promoted", "retry"):
            if getattr(self, flag):
                info[flag] = True
        if self.has_cutoff:
            info["cutoff"] = self.cutoff
        return info

    @classmethod
    def parse(cls, info: Mapping[str, Any], rung: int = 0) -> ASHAInfo | None:
        """Read a stored payload; None when it is not ASHA's (no ``bracket``)."""
        if "bracket" not in info:
            return None
        return cls(
            bracket=int(info["bracket"]),
            rung=int(info.get("rung", rung)),
            promoted=bool(info.get("promoted", False)),
            continued=bool(info.get("continued", False)),
            retry=bool(info.get("retry", False)),
            cutoff=info.get("cutoff"),
            has_cutoff="cutoff" in info,
        )


@dataclass
class _Rung:
    resource: Number
    fraction: Fraction = Fraction(1)  # r_k / r_{k+1}: share promoted to the next rung
    recorded: list[tuple[float, str]] = field(default_factory=list)  # sorted, best first
    unpromoted: list[tuple[float, str]] = field(default_factory=list)  # alive, not promoted
    rewards: list[float] = field(default_factory=list)  # sorted -score, Ray's sign
    promoted: int = 0


@dataclass
class _Overlay:
    """Effects of actions already listed by the current ``ask`` (never stored)."""

    events: int = 0
    spent: Number = 0
    new_trials: int = 0
    segments: int = 0
    decided: set[str] = field(default_factory=set)  # pending trials already handled
    promoted: set[str] = field(default_factory=set)


def _quota(rung: _Rung) -> int:
    """Trials of ``rung`` that may be promoted: ``floor(n_k * r_k / r_{k+1})``."""
    return math.floor(len(rung.recorded) * rung.fraction)


def _quantile(rung: _Rung) -> float:
    """Ray's stopping percentile generalised to any spacing: ``(1 - r_k / r_{k+1}) * 100``."""
    return float(1 - rung.fraction) * 100


def _remove(rows: list[tuple[float, str]], row: tuple[float, str]) -> bool:
    i = bisect.bisect_left(rows, row)
    if i < len(rows) and rows[i] == row:
        del rows[i]
        return True
    return False


class ASHAScheduler(Scheduler):
    """Asynchronous successive halving (Li et al., MLSys 2020) with Ray's arguments.

    Paper symbols: ``eta = reduction_factor``, ``r = grace_period`` (minimum
    resource), ``R = max_t``, ``s`` = bracket index (early-stopping rate).
    Bracket ``s`` has rungs ``r * eta**(k + s)`` below ``R`` and ``R`` itself
    as the top rung, so every surviving trial ends at exactly ``max_t``.
    A trial is promotable at rung ``k`` when it is in the top
    ``floor(n_k * r_k / r_{k+1})`` of the ``n_k`` results recorded there and
    has not been promoted yet: the fraction promoted follows the rung spacing
    (Syne Tune's rule), so it is ``1/eta`` between geometric rungs and 9/10
    for the short last step of rungs ``[1, 3, 9, 10]``.

    ``variant="promotion"`` (default) is the paper's algorithm. It is the
    default because in rungflow pausing is free (every segment ends with a
    checkpoint), a trial is never killed on the strength of the first few
    results (the stopping rule lets the first trials through unopposed and can
    never take back a stop), and as rungs fill the promoted fraction tends to
    ``1/eta`` as in synchronous successive halving. Trials that finish a rung
    are paused there; the free worker then promotes or starts a new trial.
    ``variant="stopping"`` reproduces Ray's ``ASHAScheduler``: at each rung
    the trial continues iff its value is not below ``np.nanpercentile`` of the
    values recorded there so far at ``(1 - r_k / r_{k+1}) * 100`` (Ray's
    ``(1 - 1/eta) * 100`` between geometric rungs; in Ray's larger-is-better
    sign), and is stopped otherwise.

    With ``brackets > 1`` (asynchronous HyperBand) each new trial draws its
    bracket from :func:`bracket_probabilities` (``bracket_weights="budget"``:
    Optuna's HyperbandPruner weighting, each bracket gets about the same
    resource), and a free worker looks for promotions from the highest rung
    resource down across all brackets. When the drawn bracket's first rung no
    longer fits the budget, the next cheaper bracket that fits is used.

    Warm start: an imported observation (:class:`~schedulers.events.ObservationImported`)
    with a result at a rung's resource is recorded in that rung of every
    bracket, so it counts in the promotion quota ``floor(n_k * r_k / r_{k+1})`` and in
    the stopping cutoff, but it is never promotable itself. Its results at
    every rung resource also go to the searcher.

    Retry: a failed trial that is retried (:class:`~schedulers.events.TrialRetried`)
    becomes alive again; its result is recorded at the rung it was training
    to and it is paused there (promotion) or continued/stopped by the cutoff
    (stopping), like any other result.

    Args:
        max_t: R, resource of the top rung (> 0).
        grace_period: r, resource of the bottom rung of bracket 0 (0 < r <= R).
        reduction_factor: eta (>= 2).
        brackets: Number of brackets (1 = plain ASHA), at most the number of
            rungs of bracket 0.
        bracket_weights: How a new trial's bracket is drawn when ``brackets > 1``:
            ``"budget"`` (Optuna), ``"exponential"`` (Ray Tune) or
            ``"round_robin"``; see :func:`bracket_probabilities`.
        variant: ``"promotion"`` or ``"stopping"``.
        time_attr: Accepted for Ray compatibility; progress is the resource
            passed to ``report``, so this is only a label.
        searcher: ``"random"`` or ``"tpe"`` (BOHB-style).
        searcher_args: Keyword arguments of the searcher.
        **kwargs: ``space``, ``metric``, ``mode``, ``seed``, ``budget`` for
            :class:`schedulers.base.Scheduler`. Without a budget ASHA never ends.

    Example:
        >>> from schedulers import Budget, SearchSpace
        >>> from schedulers.simulate import simulate
        >>> space = SearchSpace.parse({"x": {"type": "float", "low": 0, "high": 1}})
        >>> asha = ASHAScheduler(space=space, metric="loss", max_t=9, grace_period=1,
        ...                      reduction_factor=3, budget=Budget(max_trials=9))
        >>> [(a.start, a.stop) for a in asha.ask(2)]
        [(0, 1), (0, 1)]
        >>> def objective(config, start, stop, state):
        ...     return [{"resource": stop, "loss": (config["x"] - 0.3) ** 2 + 1 / stop}], None
        >>> result = simulate(asha, objective, max_concurrency=1)
        >>> asha.status_extras()["brackets"][0]["rungs"][0]["recorded"]
        9
    """

    name = "asha"

    def __init__(
        self,
        *,
        max_t: Number = 100,
        grace_period: Number = 1,
        reduction_factor: Number = 4,
        brackets: int = 1,
        bracket_weights: str = "budget",
        variant: str = "promotion",
        time_attr: str = "training_iteration",
        searcher: str = "random",
        searcher_args: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.max_t = check_argument("max_t", max_t)
        self.grace_period = check_argument("grace_period", grace_period)
        check_grace_period(grace_period, max_t)
        self.reduction_factor = check_reduction_factor(reduction_factor)
        check_argument("variant", variant)
        check_argument("time_attr", time_attr)
        # At most one bracket per rung from grace_period to max_t.
        most = len(asha_rungs(grace_period, max_t, reduction_factor))
        check_argument("brackets", brackets, high=most)
        check_argument("bracket_weights", bracket_weights)
        self.brackets = brackets
        self.bracket_weights = bracket_weights
        self._weights = bracket_probabilities(brackets, reduction_factor, bracket_weights)
        self.variant = variant
        self.time_attr = time_attr
        self.searcher = make_searcher(searcher, self.space, searcher_args)
        self._rungs: list[list[_Rung]] = []
        for s in range(brackets):
            resources = asha_rungs(grace_period, max_t, reduction_factor, s)
            self._rungs.append(
                [
                    _Rung(r, promotion_fraction(r, resources[k + 1]))
                    for k, r in enumerate(resources[:-1])
                ]
                + [_Rung(resources[-1])]
            )
        # Promotion search order: highest rung resource first, top rungs excluded.
        self._order = sorted(
            ((b, k) for b, rungs in enumerate(self._rungs) for k in range(len(rungs) - 1)),
            key=lambda bk: (-self._rungs[bk[0]][bk[1]].resource, bk[0]),
        )
        self._where: dict[str, tuple[int, int]] = {}  # trial -> (bracket, rung it trains to)
        self._pending: dict[str, None] = {}  # finished, awaiting a decision (arrival order)
        self._cutoff: dict[str, float | None] = {}  # stopping: cutoff when the result came
        self._alive: set[str] = set()
        self._running: set[str] = set()

    # ------------------------------------------------------------------ fold
    def on_event(self, event: Event) -> None:
        tid = event.trial
        if isinstance(event, ObservationImported):
            self._import(self.imported[event.observation_id])
            return
        if isinstance(event, TrialCreated):
            created = ASHAInfo.parse(event.info)
            if created is not None:
                self._where[event.trial_id] = (created.bracket, 0)
                self._alive.add(event.trial_id)
            return
        if tid is None or tid not in self._where:
            return
        b, k = self._where[tid]
        rung = self._rungs[b][k]
        if isinstance(event, SegmentStarted):
            parsed = ASHAInfo.parse(event.info, rung=k)
            target = k if parsed is None else parsed.rung
            if target != k:
                score = self.trials[tid].results.get(rung.resource)
                if score is not None and _remove(rung.unpromoted, (score, tid)):
                    rung.promoted += 1
                self._where[tid] = (b, target)
            self._running.add(tid)
            self._pending.pop(tid, None)
        elif isinstance(event, SegmentFinished):
            self._running.discard(tid)
            t = self.trials[tid]
            score = t.results.get(event.stop)
            if score is not None:
                self.searcher.observe(tid, t.config, event.stop, score)
            if score is not None and t.resource >= rung.resource:
                self._record(rung, tid, score, top=k == len(self._rungs[b]) - 1)
            if tid in self._alive:
                self._pending[tid] = None
        elif isinstance(event, SegmentFailed):
            self._running.discard(tid)
            if event.final:
                self.searcher.observe_failure(tid)
                self._leave(tid)
            elif tid in self._alive:
                self._pending[tid] = None
        elif isinstance(event, TrialPaused):
            self._pending.pop(tid, None)
        elif isinstance(event, TrialStopped):
            self._leave(tid)
        elif isinstance(event, TrialRetried) and self.trials[tid].status == "paused":
            # The common fold turned a failed trial back into a paused one; a
            # stopped trial stays stopped and is not revived.
            self._alive.add(tid)

    def _import(self, obs: ImportedObservation) -> None:
        """Record a prior result at every rung with a matching resource (never promotable)."""
        levels = sorted({rung.resource for rungs in self._rungs for rung in rungs})
        for resource, score in obs.at(levels):
            self.searcher.observe(obs.observation_id, obs.config, resource, score)
            row = (score, obs.observation_id)
            for rungs in self._rungs:
                for rung in rungs:
                    if rung.resource != resource:
                        continue
                    i = bisect.bisect_left(rung.recorded, row)
                    if i < len(rung.recorded) and rung.recorded[i] == row:
                        continue  # the same observation folded twice counts once
                    if self.variant == "stopping":
                        bisect.insort(rung.rewards, -score)
                    # Not in ``unpromoted``: a prior raises the bar, it never runs.
                    rung.recorded.insert(i, row)

    def _record(self, rung: _Rung, tid: str, score: float, top: bool) -> None:
        row = (score, tid)
        if _remove(rung.recorded, row):  # a repeated result (retried segment) counts once
            bisect.insort(rung.recorded, row)
            return
        if self.variant == "stopping":
            # Ray compares with the values recorded *before* this one, at arrival.
            self._cutoff[tid] = percentile(rung.rewards, _quantile(rung))
            bisect.insort(rung.rewards, -score)
        bisect.insort(rung.recorded, row)
        if not top and self.variant == "promotion":
            bisect.insort(rung.unpromoted, row)

    def _leave(self, tid: str) -> None:
        """A failed or stopped trial is never promoted and never waited for."""
        self._alive.discard(tid)
        self._pending.pop(tid, None)
        self._running.discard(tid)
        b, k = self._where[tid]
        rung = self._rungs[b][k]
        score = self.trials[tid].results.get(rung.resource)
        if score is not None:
            _remove(rung.unpromoted, (score, tid))

    # ---------------------------------------------------------------- decide
    def ask(self, n: int = 1) -> list[Action]:
        overlay = _Overlay()
        actions: list[Action] = []
        for _ in range(n):
            action = self._decide(overlay)
            if isinstance(action, Wait):
                break
            actions.append(action)
            if isinstance(action, Done):
                break
            overlay.events += len(action_events(action))
            if isinstance(action, RunSegment):
                overlay.spent += action.stop - action.start
                overlay.segments += 1
                overlay.new_trials += int(action.new_trial)
                if (parsed := ASHAInfo.parse(action.info)) is not None and parsed.promoted:
                    overlay.promoted.add(action.trial_id)
            if isinstance(action, (RunSegment, Pause, Stop)):
                overlay.decided.add(action.trial_id)
        return actions or [Wait()]

    def _decide(self, ov: _Overlay) -> Action:
        if self.finished:
            return self.done_action()
        for tid in self._pending:
            if tid not in ov.decided:
                return self._decide_trial(tid, ov)
        if self.variant == "promotion":
            action = self._promotion(ov)
            if action is not None:
                return action
        action = self._new_trial(ov)
        if action is not None:
            return action
        if self._running or ov.segments:
            return Wait()
        return self.done_action()

    def _decide_trial(self, tid: str, ov: _Overlay) -> Action:
        b, k = self._where[tid]
        rungs = self._rungs[b]
        r_k = rungs[k].resource
        t = self.trials[tid]
        info = ASHAInfo(b, k).to_info()
        if t.resource < r_k:  # a non-final failure: run the same segment again
            return RunSegment(
                tid, t.config, t.resource, r_k, restore_from=t.checkpoint,
                info=ASHAInfo(b, k, retry=True).to_info(),
            )
        score = t.results.get(r_k)
        if score is None:
            return Stop(tid, f"metric {self.metric!r} not reported", info)
        if k == len(rungs) - 1:
            return Stop(tid, "max_t reached", info)
        if self.variant == "promotion":
            return Pause(tid, t.resource, info)
        cutoff = self._cutoff.get(tid)
        info = ASHAInfo(b, k, cutoff=cutoff, has_cutoff=True).to_info()
        if cutoff is not None and -score < cutoff:
            return Stop(tid, f"below the rung {k} cutoff", info)
        r_next = rungs[k + 1].resource
        if not self.can_spend(r_next - r_k, pending=ov.spent):
            return Stop(tid, "budget exhausted", info)
        return RunSegment(
            tid, t.config, r_k, r_next, restore_from=t.checkpoint,
            info=ASHAInfo(b, k + 1, continued=True, cutoff=cutoff, has_cutoff=True).to_info(),
        )

    def _promotable(self, rung: _Rung, skip: set[str]) -> tuple[float, str] | None:
        """Best trial of ``rung`` in its top ``floor(n * r_k / r_{k+1})`` not promoted yet."""
        quota = _quota(rung)
        if quota == 0:
            return None
        for row in rung.unpromoted:
            if row[1] in skip:
                continue  # promoted by an earlier action of this ask
            # unpromoted is sorted, so only its first remaining row can qualify.
            return row if bisect.bisect_left(rung.recorded, row) < quota else None
        return None

    def _promotion(self, ov: _Overlay) -> RunSegment | None:
        for b, k in self._order:
            rung = self._rungs[b][k]
            row = self._promotable(rung, ov.promoted)
            if row is None:
                continue
            r_next = self._rungs[b][k + 1].resource
            if not self.can_spend(r_next - rung.resource, pending=ov.spent):
                continue
            t = self.trials[row[1]]
            return RunSegment(
                t.trial_id, t.config, rung.resource, r_next, restore_from=t.checkpoint,
                info=ASHAInfo(b, k + 1, promoted=True).to_info(),
            )
        return None

    def _new_trial(self, ov: _Overlay) -> RunSegment | None:
        if not self.can_create_trial(pending_new=ov.new_trials):
            return None
        b = self._draw_bracket(ov)
        # Brackets are ordered by first-rung resource: fall back to cheaper ones.
        while not self.can_spend(self._rungs[b][0].resource, pending=ov.spent):
            if b == 0:
                return None
            b -= 1
        r_0 = self._rungs[b][0].resource
        trial_id = self.new_trial_id(offset=ov.new_trials)
        config = self.searcher.suggest(trial_id, rng_after(self, ov.events))
        return RunSegment(
            trial_id, config, 0, r_0, new_trial=True, info=ASHAInfo(b, 0).to_info()
        )

    def _draw_bracket(self, ov: _Overlay) -> int:
        if self.brackets == 1:
            return 0
        if self.bracket_weights == "round_robin":
            return (len(self.trials) + ov.new_trials) % self.brackets
        # Salt 1: the searcher's draws (salt 0) stay what they would be with one bracket.
        u = float(rng_after(self, ov.events, salt=1).random())
        total = 0.0
        for b, w in enumerate(self._weights):
            total += w
            if u < total:
                return b
        return self.brackets - 1

    # ---------------------------------------------------------------- status
    def status_extras(self) -> dict[str, Any]:
        """Per bracket and rung: results recorded, promotions, cutoff and the leaders."""
        brackets = []
        for b, rungs in enumerate(self._rungs):
            rows = []
            for rung in rungs:
                quota = _quota(rung)
                rows.append(
                    {
                        "resource": rung.resource,
                        "recorded": len(rung.recorded),
                        "promoted": rung.promoted,
                        "quota": quota,
                        "cutoff": percentile(rung.rewards, _quantile(rung)),
                        "top": [tid for _, tid in rung.recorded[: min(quota, 20)]],
                    }
                )
            brackets.append({"bracket": b, "rungs": rows})
        return {
            "scheduler": self.name,
            "variant": self.variant,
            "max_t": self.max_t,
            "grace_period": self.grace_period,
            "reduction_factor": self.reduction_factor,
            "brackets": brackets,
            "searcher": self.searcher.name,
        }
