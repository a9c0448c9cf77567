"""HyperBand: synchronous successive halving in brackets, several brackets at once.

The scheduler follows Algorithm 1 of Li et al., "Hyperband: A Novel
Bandit-Based Approach to Hyperparameter Optimization" (JMLR 2018), with the
bracket arithmetic of :func:`schedulers._rungs.hyperband_brackets`. Inside a
bracket, successive halving is synchronous: rung ``i`` is decided only when all
of its trials have finished or left. Brackets are opened one after another
(s_max, s_max - 1, ..., 0, then the next HyperBand iteration) *as soon as a
worker would otherwise idle*, so a bracket waiting for its stragglers never
holds the cluster back.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from schedulers._rungs import (
    Bracket,
    Number,
    check_reduction_factor,
    hyperband_brackets,
    make_searcher,
    partial_bracket,
    rng_after,
)
from schedulers.actions import Action, Done, Pause, RunSegment, Stop, Wait, action_events
from schedulers.base import Scheduler, SchedulerArgumentError
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
from schedulers.validation import check_argument

__all__ = ["HyperBandInfo", "HyperBandScheduler"]

Plan = tuple[tuple[int, Number], ...]


@dataclass(frozen=True)
class HyperBandInfo:
    """What a HyperBand decision records in its events' ``info``; replay reads it back.

    Stored as a plain mapping (see :meth:`to_info`), so the event schema is
    unchanged; :meth:`parse` reads payloads of every version (unknown keys are
    ignored, missing flags default to False).

    Attributes:
        bracket: Opening order of the bracket (its id, ``k``).
        s: The paper's bracket index.
        iteration: HyperBand iteration the bracket belongs to.
        rung: Rung the segment trains to (or the trial sits at, for Pause/Stop).
        plan: ``(n_i, r_i)`` per rung, written by the trial that opens the
            bracket: the bracket runs this plan on replay whatever the current
            arithmetic (a partial bracket has fewer trials; logs written before
            plans were recorded replay the exact-rational plan they ran).
        promoted: The segment is a promotion to ``rung``.
        retry: The segment re-runs one that failed (not finally).
        extended: ``stop_last_trials=False``: a survivor trains ``max_t`` more.
        retried: The Stop ends a retried trial whose rung was decided meanwhile.
    """

    bracket: int
    s: int
    iteration: int
    rung: int
    plan: Plan | None = None
    promoted: bool = False
    retry: bool = False
    extended: bool = False
    retried: bool = False

    def to_info(self) -> dict[str, Any]:
        """The mapping stored in the event: only the flags that are set."""
        info: dict[str, Any] = {
            "bracket": self.bracket, "s": self.s, "iteration": self.iteration, "rung": self.rung,
        }
        if self.plan is not None:
            info["plan"] = [[n, r] for n, r in self.plan]
        for flag in ("promoted", "retry", "extended", "retried"):
            if getattr(self, flag):
                info[flag] = True
        return info

    @classmethod
    def parse(cls, info: Mapping[str, Any], rung: int = 0) -> HyperBandInfo | None:
        """Read a stored payload; None when it is not HyperBand's (no ``bracket``)."""
        if "bracket" not in info:
            return None
        plan = info.get("plan")
        return cls(
            bracket=int(info["bracket"]),
            s=int(info.get("s", 0)),
            iteration=int(info.get("iteration", 0)),
            rung=int(info.get("rung", rung)),
            plan=None if plan is None else tuple((int(n), r) for n, r in plan),
            promoted=bool(info.get("promoted", False)),
            retry=bool(info.get("retry", False)),
            extended=bool(info.get("extended", False)),
            retried=bool(info.get("retried", False)),
        )


@dataclass
class _BracketState:
    """One opened bracket, folded from the events that carry its id."""

    k: int  # opening order: the bracket's id
    s: int
    iteration: int
    plan: Bracket
    members: list[list[str]] = field(default_factory=list)  # per rung, in start order
    done: list[set[str]] = field(default_factory=list)  # finished or left, per rung
    complete: list[bool] = field(default_factory=list)
    top: list[list[str]] = field(default_factory=list)  # promoted set once complete
    live: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        n = len(self.plan.rungs)
        self.members = [[] for _ in range(n)]
        self.done = [set() for _ in range(n)]
        self.complete = [False] * n
        self.top = [[] for _ in range(n)]

    @property
    def created(self) -> int:
        return len(self.members[0])

    def expected(self, i: int) -> int | None:
        """Trials rung ``i`` will hold; None while rung ``i - 1`` is undecided."""
        if i == 0:
            return self.plan.rungs[0][0]
        return len(self.top[i - 1]) if self.complete[i - 1] else None

    def remaining_cost(self, extra_started: dict[int, int] | None = None) -> Number:
        """Planned resource of segments not started yet (reserved against the budget)."""
        total: Number = 0
        cap: int | None = None
        previous: Number = 0
        for i, (n_i, r_i) in enumerate(self.plan.rungs):
            target = self.expected(i)
            target = n_i if target is None else target
            cap = target if cap is None else min(cap, target)
            started = len(self.members[i]) + (extra_started or {}).get(i, 0)
            total += max(0, cap - started) * (r_i - previous)
            previous = r_i
        return total


@dataclass
class _Overlay:
    """Effects of actions already listed by the current ``ask`` (never stored)."""

    events: int = 0
    spent: Number = 0
    new_trials: int = 0
    decided: set[str] = field(default_factory=set)
    started: dict[int, dict[int, int]] = field(default_factory=dict)  # k -> rung -> count
    opened: list[tuple[int, int, int, Bracket]] = field(default_factory=list)  # (k, s, it, plan)
    segments: int = 0


class HyperBandScheduler(Scheduler):
    """HyperBand (Li et al., JMLR 2018) with Ray Tune's argument names.

    Paper symbols: ``R = max_t``, ``eta = reduction_factor``,
    ``s_max = floor(log_eta R)``; bracket ``s`` starts
    ``n = ceil((s_max + 1) / (s + 1) * eta**s)`` trials at ``r = R * eta**-s``
    and its rung ``i`` trains ``n_i = floor(n * eta**-i)`` trials to
    ``r_i = r * eta**i``, the best ``n_{i+1}`` of rung ``i`` being promoted
    (they resume from their own checkpoints). The last rung is exactly ``max_t``.

    Scheduling: each trial created records its bracket in the event's ``info``
    (``bracket`` id, ``s``, ``iteration``, ``rung``), every promotion records
    ``promoted: True``, so replaying the log rebuilds the bracket state. When
    nothing in the open brackets can start (they are waiting for stragglers),
    the next bracket opens, cycling ``s_max .. 0`` over HyperBand iterations
    while the budget allows. A bracket opens only if its whole plan fits in
    the remaining ``Budget`` (trials and resource) after what open brackets
    still need, so a started bracket always runs to its end; a bracket that
    does not fit is skipped for the next one in the cycle that does. When no
    whole bracket fits any more, a cut-down copy of the next one
    (:func:`~schedulers._rungs.partial_bracket`: fewer trials, at least one
    reaching ``max_t``) spends the remainder, so less than one full training
    (``max_t``) of a ``max_resource`` budget is left unspent (at R = 81 and
    8,100 units: 6 instead of 195). ``rungflow plan hyperband --max-resource``
    prints the brackets a run will open (:func:`~schedulers._rungs.hyperband_schedule`).
    With an int ``max_t`` rungs are whole epochs (``floor(R * eta**(i - s))``,
    Ray Tune's rounding): what the budget is charged is what is trained.
    Each bracket's plan is recorded in the ``info`` of its first trial
    (:class:`HyperBandInfo`), so replay never re-derives it.
    Trials parked at an undecided rung get ``Pause``; trials culled get
    ``Stop``. Errored or removed trials leave their rung at once; a rung
    promotes ``min(n_{i+1}, trials with a result)``, so it never waits for them.

    Warm start: imported observations (:class:`~schedulers.events.ObservationImported`)
    logged before the first trial count as results of every rung at their
    resource. Rung ``i`` with ``m`` such priors at ``r_i`` promotes its trials
    that rank in the top ``n_{i+1} + floor(m * n_{i+1} / n_i)`` of its own
    results and the priors together (at most ``n_{i+1}``): the same fraction
    ``n_{i+1} / n_i`` of a bigger population, so good priors cull more and
    with no priors nothing changes. Priors are never promoted; all their
    results at rung resources also go to the searcher (BOHB's model).

    Retry: a retried failed trial (:class:`~schedulers.events.TrialRetried`)
    rejoins its rung if that rung is still undecided and is ranked with the
    others. If the rung was decided while it was failed, its result is kept
    (trial status, searcher, leaderboard) but it cannot displace trials
    already promoted, so it is stopped once the result arrives.

    Args:
        max_t: R, the resource of the last rung (> 0; int or float).
        reduction_factor: eta (>= 2).
        stop_last_trials: True (Ray's default) stops trials when they reach
            ``max_t``. False lets the survivors of each bracket's last rung keep
            training in further segments of ``max_t`` each while
            ``budget.max_resource`` allows (required in that case, since
            nothing else would end them).
        time_attr: Accepted for Ray compatibility. rungflow measures progress
            by the resource passed to ``report``, so this is only a label.
        searcher: ``"random"`` or ``"tpe"`` (BOHB-style, see
            :class:`schedulers.tpe.TPESearcher`).
        searcher_args: Keyword arguments of the searcher.
        **kwargs: ``space``, ``metric``, ``mode``, ``seed``, ``budget`` for
            :class:`schedulers.base.Scheduler`.

    Example:
        >>> from schedulers import Budget, SearchSpace
        >>> from schedulers.simulate import simulate
        >>> space = SearchSpace.parse({"x": {"type": "float", "low": 0, "high": 1}})
        >>> hb = HyperBandScheduler(space=space, metric="loss", max_t=9, reduction_factor=3,
        ...                         budget=Budget(max_trials=17))
        >>> [a.stop for a in hb.ask(3)]
        [1, 1, 1]
        >>> def objective(config, start, stop, state):
        ...     return [{"resource": stop, "loss": (config["x"] - 0.3) ** 2 + 1 / stop}], None
        >>> result = simulate(hb, objective, max_concurrency=4)
        >>> result.resource_used  # one iteration, brackets s = 2, 1, 0: 21 + 21 + 27
        69.0
    """

    name = "hyperband"

    def __init__(
        self,
        *,
        max_t: Number = 81,
        reduction_factor: Number = 3,
        stop_last_trials: bool = True,
        time_attr: str = "training_iteration",
        searcher: str = "random",
        searcher_args: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.max_t = check_argument("max_t", max_t)
        self.reduction_factor = check_reduction_factor(reduction_factor)
        check_argument("stop_last_trials", stop_last_trials)
        if not stop_last_trials and self.budget.max_resource is None:
            raise SchedulerArgumentError(
                "stop_last_trials",
                "stop_last_trials is False, but then budget.max_resource must be set "
                "(survivors would otherwise train forever)",
            )
        check_argument("time_attr", time_attr)
        self.stop_last_trials = stop_last_trials
        self.time_attr = time_attr
        self.searcher = make_searcher(searcher, self.space, searcher_args)
        self.plans = hyperband_brackets(max_t, reduction_factor)
        self._legacy_plans = hyperband_brackets(max_t, reduction_factor, integer=False)
        self.s_max = self.plans[0].s
        self._brackets: dict[int, _BracketState] = {}
        self._open: dict[int, None] = {}  # ordered set of brackets with work left
        self._where: dict[str, tuple[int, int]] = {}  # trial -> (bracket id, rung)
        self._pending: dict[str, None] = {}  # trials awaiting a decision, arrival order
        self._parked: set[str] = set()
        self._running: set[str] = set()
        self._last: tuple[int, int, int] | None = None  # (k, s, iteration) last opened
        self._levels = sorted({r for plan in self.plans for _, r in plan.rungs})
        self._prior: dict[float, list[float]] = {}  # rung resource -> sorted imported scores
        self._outside: set[str] = set()  # retried after their rung was decided

    # ------------------------------------------------------------------ fold
    def on_event(self, event: Event) -> None:
        if isinstance(event, TrialCreated):
            self._on_created(event)
            return
        if isinstance(event, ObservationImported):
            self._import(event.observation_id)
            return
        tid = event.trial
        if tid is None or tid not in self._where:
            return
        k, i = self._where[tid]
        b = self._brackets[k]
        if isinstance(event, SegmentStarted):
            parsed = HyperBandInfo.parse(event.info, i)
            rung = i if parsed is None else parsed.rung
            if rung != i:
                self._where[tid] = (k, rung)
                i = rung
            if tid not in b.members[i]:
                b.members[i].append(tid)
            self._running.add(tid)
            self._pending.pop(tid, None)
            self._parked.discard(tid)
        elif isinstance(event, SegmentFinished):
            self._running.discard(tid)
            t = self.trials[tid]
            score = t.results.get(event.stop)
            if score is not None:
                self.searcher.observe(tid, t.config, event.stop, score)
            if tid in b.live or tid in self._outside:
                self._pending[tid] = None
            if t.resource >= b.plan.rungs[i][1]:
                b.done[i].add(tid)
                self._refresh(b, i)
        elif isinstance(event, SegmentFailed):
            self._running.discard(tid)
            if event.final:
                self.searcher.observe_failure(tid)
                self._leave(b, tid, i)
            elif tid in b.live:
                self._pending[tid] = None  # retry the segment
        elif isinstance(event, TrialPaused):
            self._parked.add(tid)
            if not b.complete[i]:
                self._pending.pop(tid, None)
        elif isinstance(event, TrialStopped):
            self._leave(b, tid, i)
        elif isinstance(event, TrialRetried):
            self._retried(b, tid, i)

    def _import(self, observation_id: str) -> None:
        obs = self.imported[observation_id]
        for resource, score in obs.at(self._levels):
            self.searcher.observe(observation_id, obs.config, resource, score)
            # Priors that arrive after the first trial would change rankings a
            # decided rung was promoted on (and could leave its next rung
            # waiting for a trial that is no longer in the top): they inform
            # the searcher only. The CLI imports before the first trial.
            if not self.trials:
                bisect.insort(self._prior.setdefault(float(resource), []), score)

    def _retried(self, b: _BracketState, tid: str, i: int) -> None:
        """A failed trial runs its failed segment again (see the class docstring)."""
        if self.trials[tid].status != "paused" or tid in b.live:
            return  # not a failed trial: the common fold ignored the retry too
        if b.complete[i]:
            self._outside.add(tid)
            return
        b.live.add(tid)
        b.done[i].discard(tid)
        if b.k not in self._open:
            self._open[b.k] = None

    def _on_created(self, event: TrialCreated) -> None:
        info = HyperBandInfo.parse(event.info)
        if info is None:
            return  # not one of ours (e.g. a hand-made trial): ignore it
        k, s, it = info.bracket, info.s, info.iteration
        if k not in self._brackets:
            if info.plan is not None:
                plan = Bracket(s, info.plan)
            else:  # written before plans were recorded: the exact-rational arithmetic
                plan = self._legacy_plans[self.s_max - s]
            self._brackets[k] = _BracketState(k, s, it, plan)
            self._open[k] = None
            if self._last is None or k > self._last[0]:
                self._last = (k, s, it)
        b = self._brackets[k]
        self._where[event.trial_id] = (k, 0)
        b.live.add(event.trial_id)

    def _leave(self, b: _BracketState, tid: str, i: int) -> None:
        """``tid`` failed or was stopped: it resolves its rung and is never waited for."""
        self._outside.discard(tid)
        self._pending.pop(tid, None)
        self._parked.discard(tid)
        self._running.discard(tid)
        b.live.discard(tid)
        if tid in b.members[i]:
            b.done[i].add(tid)
        self._refresh(b, i)
        if not b.live and b.created >= b.plan.rungs[0][0]:
            self._open.pop(b.k, None)

    def _refresh(self, b: _BracketState, i: int) -> None:
        """Re-derive completion and promotions of rung ``i`` (and the rungs after it)."""
        for j in range(i, len(b.plan.rungs)):
            expected = b.expected(j)
            complete = (
                expected is not None
                and len(b.members[j]) == expected
                and len(b.done[j]) == expected
            )
            if complete and j + 1 < len(b.plan.rungs):
                r_j = b.plan.rungs[j][1]
                nxt = set(b.members[j + 1])
                ranked = sorted(
                    (self.trials[m].results[r_j], m)
                    for m in b.members[j]
                    if r_j in self.trials[m].results and (m in b.live or m in nxt)
                )
                b.top[j] = self._top(ranked, b.plan.rungs[j][0], b.plan.rungs[j + 1][0], r_j)
            if complete and not b.complete[j]:
                b.complete[j] = True
                for m in b.members[j]:
                    if m in b.live and m not in self._running:
                        self._pending[m] = None
            elif not complete and b.complete[j] and j == i:
                b.complete[j] = False  # cannot normally happen; keep the fold honest
            if not complete:
                break

    def _top(
        self, ranked: list[tuple[float, str]], n_i: int, n_next: int, r_i: Number
    ) -> list[str]:
        """Trials promoted from a rung: the best ``n_next``, raised bar with priors."""
        prior = self._prior.get(float(r_i))
        if not prior:
            return [m for _, m in ranked[:n_next]]
        # Rank among own results and priors together; a tie goes to the trial.
        k = n_next + (len(prior) * n_next) // n_i
        top = [m for p, (score, m) in enumerate(ranked) if p + bisect.bisect_left(prior, score) < k]
        return top[:n_next]

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
            self._apply(overlay, action)
        return actions or [Wait()]

    def _apply(self, ov: _Overlay, action: Action) -> None:
        ov.events += len(action_events(action))
        if isinstance(action, RunSegment):
            ov.spent += action.stop - action.start
            ov.segments += 1
            k, rung = int(action.info["bracket"]), int(action.info["rung"])
            if action.new_trial or action.info.get("promoted"):
                # Only planned segments count against the bracket's reservation.
                per = ov.started.setdefault(k, {})
                per[rung] = per.get(rung, 0) + 1
            if action.new_trial:
                ov.new_trials += 1
                info = HyperBandInfo.parse(action.info)
                if info is not None and info.plan is not None:
                    ov.opened.append((k, info.s, info.iteration, Bracket(info.s, info.plan)))
                return
        if isinstance(action, (RunSegment, Pause, Stop)):
            ov.decided.add(action.trial_id)

    def _decide(self, ov: _Overlay) -> Action:
        if self.finished:
            return self.done_action()
        for tid in self._pending:
            if tid not in ov.decided:
                return self._decide_trial(tid, ov)
        action = self._new_trial(ov)
        if action is not None:
            return action
        if self._running or ov.segments:
            return Wait()
        return self.done_action()

    def _info(
        self, b: _BracketState, rung: int, *, promoted: bool = False, retry: bool = False,
        extended: bool = False, retried: bool = False,
    ) -> dict[str, Any]:
        return HyperBandInfo(
            b.k, b.s, b.iteration, rung, promoted=promoted, retry=retry, extended=extended,
            retried=retried,
        ).to_info()

    def _decide_trial(self, tid: str, ov: _Overlay) -> Action:
        k, i = self._where[tid]
        b = self._brackets[k]
        t = self.trials[tid]
        last = len(b.plan.rungs) - 1
        r_i = b.plan.rungs[i][1]
        if t.resource < r_i:  # the segment failed without being final: run it again
            return RunSegment(
                tid, t.config, t.resource, r_i, restore_from=t.checkpoint,
                info=self._info(b, i, retry=True),
            )
        if r_i not in t.results:
            return Stop(tid, f"metric {self.metric!r} not reported", self._info(b, i))
        if tid in self._outside:
            reason = "max_t reached" if i == last else f"rung {i} was decided while it had failed"
            return Stop(tid, reason, self._info(b, i, retried=True))
        if i == last:
            if self.stop_last_trials:
                return Stop(tid, "max_t reached", self._info(b, i))
            if self.can_spend(self.max_t, pending=ov.spent + self._committed(ov)):
                return RunSegment(
                    tid, t.config, t.resource, t.resource + self.max_t,
                    restore_from=t.checkpoint, info=self._info(b, i, extended=True),
                )
            return Stop(tid, "budget exhausted", self._info(b, i))
        if not b.complete[i]:
            return Pause(tid, t.resource, self._info(b, i))
        if tid not in b.top[i]:
            return Stop(tid, f"culled at rung {i}", self._info(b, i))
        r_next = b.plan.rungs[i + 1][1]
        return RunSegment(
            tid, t.config, r_i, r_next, restore_from=t.checkpoint,
            info=self._info(b, i + 1, promoted=True),
        )

    def _committed(self, ov: _Overlay) -> Number:
        """Resource still planned by open brackets (including ones opened in ``ov``)."""
        total: Number = 0
        for k in self._open:
            total += self._brackets[k].remaining_cost(ov.started.get(k))
        for k, _, _, plan in ov.opened:
            started = ov.started.get(k, {}).get(0, 0)
            total += plan.resource - started * plan.rungs[0][1]
        return total

    def _unfilled(self, ov: _Overlay) -> tuple[int, int, int, int] | None:
        """First open bracket with rung-0 slots left: ``(k, s, iteration, slots)``."""
        for k in self._open:
            b = self._brackets[k]
            left = b.plan.rungs[0][0] - b.created - ov.started.get(k, {}).get(0, 0)
            if left > 0:
                return k, b.s, b.iteration, left
        for k, s, it, plan in ov.opened:
            left = plan.rungs[0][0] - ov.started.get(k, {}).get(0, 0)
            if left > 0:
                return k, s, it, left
        return None

    def _slots_left(self, ov: _Overlay) -> int:
        slots = 0
        for k in self._open:
            b = self._brackets[k]
            slots += max(0, b.plan.rungs[0][0] - b.created - ov.started.get(k, {}).get(0, 0))
        for k, _, _, plan in ov.opened:
            slots += plan.rungs[0][0] - ov.started.get(k, {}).get(0, 0)
        return slots

    def _next_bracket(self, ov: _Overlay) -> tuple[int, int, int, Bracket] | None:
        """The bracket to open next: ``(k, s, iteration, plan)``.

        In cycle order, the first whole bracket that fits the budget; when none
        fits, the first bracket of the cycle of which a cut-down copy
        (:func:`~schedulers._rungs.partial_bracket`) still fits, so the
        remainder of the budget is spent on search rather than left unspent.
        """
        last = ov.opened[-1][:3] if ov.opened else self._last
        k = 0 if last is None else last[0] + 1
        # Before the first bracket, pretend the previous one was "s_max + 1" of
        # iteration 0 so that the cycle starts at s_max without wrapping.
        s_prev, it = (self.s_max + 1, 0) if last is None else (last[1], last[2])
        committed = self._committed(ov)
        reserved_trials = ov.new_trials + self._slots_left(ov)
        cycle = [(s_prev - step) % (self.s_max + 1) for step in range(1, self.s_max + 2)]
        for s in cycle:
            plan = self.plans[self.s_max - s]
            if not self.can_create_trial(pending_new=reserved_trials + plan.rungs[0][0] - 1):
                continue
            if not self.can_spend(plan.resource, pending=ov.spent + committed):
                continue
            return k, s, it + 1 if s >= s_prev else it, plan
        room = self.budget.max_resource
        if room is not None:
            room = room - self.resource_used - ov.spent - committed
        trials = self.budget.max_trials
        if trials is not None:
            trials = trials - len(self.trials) - reserved_trials
        if (room is None and trials is None) or (trials is not None and trials < 1):
            return None
        for s in cycle:
            cut = partial_bracket(self.plans[self.s_max - s], self.reduction_factor, room, trials)
            if cut is not None:
                # A new HyperBand iteration starts when the cycle wraps past s = 0.
                return k, s, it + 1 if s >= s_prev else it, cut
        return None

    def _new_trial(self, ov: _Overlay) -> RunSegment | None:
        slot = self._unfilled(ov)
        recorded: Plan | None = None  # written by the trial that opens a bracket
        if slot is None:
            opened = self._next_bracket(ov)
            if opened is None:
                return None
            k, s, it, plan = opened
            recorded = plan.rungs
        else:
            k, s, it, _ = slot
            plan = self._plan_of(k, ov)
        r_0 = plan.rungs[0][1]
        trial_id = self.new_trial_id(offset=ov.new_trials)
        config = self.searcher.suggest(trial_id, rng_after(self, ov.events))
        info = HyperBandInfo(k, s, it, 0, plan=recorded)
        return RunSegment(trial_id, config, 0, r_0, new_trial=True, info=info.to_info())

    def _plan_of(self, k: int, ov: _Overlay) -> Bracket:
        if k in self._brackets:
            return self._brackets[k].plan
        return next(plan for kk, _, _, plan in ov.opened if kk == k)

    # ---------------------------------------------------------------- status
    def status_extras(self) -> dict[str, Any]:
        """Open brackets with their rungs and members, plus counts of closed ones."""
        brackets = []
        for k in self._open:
            b = self._brackets[k]
            rungs = []
            for i, (n_i, r_i) in enumerate(b.plan.rungs):
                rungs.append(
                    {
                        "n": n_i,
                        "r": r_i,
                        "members": list(b.members[i]),
                        "done": len(b.done[i]),
                        "complete": b.complete[i],
                        "promoted": list(b.top[i]) if b.complete[i] else [],
                    }
                )
            brackets.append({"bracket": k, "s": b.s, "iteration": b.iteration, "rungs": rungs})
        return {
            "scheduler": self.name,
            "max_t": self.max_t,
            "reduction_factor": self.reduction_factor,
            "s_max": self.s_max,
            "brackets": brackets,
            "closed_brackets": len(self._brackets) - len(self._open),
            "searcher": self.searcher.name,
        }
