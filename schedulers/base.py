"""The scheduler contract: state folded from events plus a decision function.

Every scheduler derives from :class:`Scheduler`:

* ``tell(event)`` folds one event into state. It never decides and never
  draws random numbers, so replaying a log is cheap and exact.
* ``ask(n)`` returns up to ``n`` actions without changing state. The flow
  turns each action into events (:func:`schedulers.actions.action_events`),
  appends them to the log and tells them back. Randomness inside ``ask`` comes
  from :meth:`Scheduler.rng`, seeded by ``(seed, number of events told)``, so
  the same log always yields the same next decision.

The base class keeps the bookkeeping every algorithm needs (trials, their
status, results per resource, checkpoints, budget) so subclasses only hold
what is specific to them.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from schedulers.actions import Action, Done
from schedulers.events import (
    CheckpointRef,
    Event,
    ExperimentCreated,
    ExperimentFinished,
    ObservationImported,
    SegmentFailed,
    SegmentFinished,
    SegmentStarted,
    TrialCreated,
    TrialPaused,
    TrialPerturbed,
    TrialRetried,
    TrialStopped,
)
from schedulers.outcomes import ENDED, TrialStatus, next_status, signed_score
from schedulers.space import SearchSpace
from schedulers.validation import (
    SchedulerArgumentError,
    check_choice,
    check_int,
    check_max_t,
    check_name,
)

__all__ = [
    "Budget",
    "ImportedObservation",
    "Mode",
    "Scheduler",
    "SchedulerArgumentError",
    "TrialState",
    "TrialStatus",
    "check_int",
    "check_max_t",
]

Mode = Literal["min", "max"]

_EPS = 1e-9


@dataclass(frozen=True)
class Budget:
    """Limits on a whole experiment.

    Attributes:
        max_trials: Most trials (configurations) ever created; None = no limit.
        max_resource: Most total resource over all segments started, e.g. the
            sum of epochs over all trials; None = no limit.
    """

    max_trials: int | None = None
    max_resource: float | None = None


@dataclass
class TrialState:
    """What every scheduler knows about one trial, folded from events.

    Attributes:
        resource: Resource reached by the last *finished* segment.
        results: ``resource -> score`` at the end of each finished segment,
            where score is the metric signed so that lower is better.
        history: Every report as ``(resource, score)``, in order.
        checkpoint: Latest checkpoint written by this trial.
        running: ``(start, stop)`` of the segment in flight, if any.
    """

    trial_id: str
    config: dict[str, Any]
    status: TrialStatus = "paused"
    resource: float = 0.0
    results: dict[float, float] = field(default_factory=dict)
    history: list[tuple[float, float]] = field(default_factory=list)
    checkpoint: CheckpointRef | None = None
    running: tuple[float, float] | None = None
    created_seq: int = 0
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def last_score(self) -> float | None:
        return self.results.get(self.resource)


@dataclass
class ImportedObservation:
    """A prior result folded from :class:`~schedulers.events.ObservationImported`.

    Never a trial: it is not in :attr:`Scheduler.trials`, costs no budget and
    is never run, promoted or stopped.

    Attributes:
        observation_id: Id within the experiment (``i0000``, ...).
        config: The imported configuration.
        source: Where it came from (``optuna:...``, ``experiment:...``).
        results: ``resource -> score`` (lower is better) per reported point.
    """

    observation_id: str
    config: dict[str, Any]
    source: str
    results: dict[float, float] = field(default_factory=dict)

    def at(self, resources: Iterable[float]) -> list[tuple[float, float]]:
        """``(resource, score)`` for each of ``resources`` this observation reported.

        Resources match within a relative tolerance of 1e-9 (a study may store
        ``3.0000000000000004`` for rung 3); the resource returned is the one
        asked for, so callers can use it as a key of their own rungs.
        """
        out = []
        for r in resources:
            score = self.results.get(float(r))
            if score is None:
                for have, value in self.results.items():
                    if math.isclose(have, float(r), rel_tol=1e-9, abs_tol=1e-12):
                        score = value
                        break
            if score is not None:
                out.append((r, score))
        return out


class Scheduler(ABC):
    """Base class: fold events into :class:`TrialState`, decide in :meth:`ask`.

    Args:
        space: Search space (optuna distributions).
        metric: Name of the reported metric to optimise.
        mode: ``"min"`` or ``"max"``.
        seed: Root seed; each decision draws from
            ``default_rng(SeedSequence([seed, decision_seq]))``.
        budget: Experiment-wide limits.
    """

    #: Name used in specs (``scheduler: <name>``).
    name: str = "base"

    def __init__(
        self,
        *,
        space: SearchSpace,
        metric: str,
        mode: Mode = "min",
        seed: int = 0,
        budget: Budget | None = None,
    ) -> None:
        check_choice("mode", mode, ("min", "max"))
        check_name("metric", metric)
        self.space = space
        self.metric = metric
        self.mode: Mode = mode
        self.seed = check_int("seed", seed, 0)
        self.budget = budget or Budget()
        self.trials: dict[str, TrialState] = {}
        #: Prior results imported by a warm start, by observation id (in log order).
        self.imported: dict[str, ImportedObservation] = {}
        self.n_events = 0
        self.resource_used = 0.0
        #: Trials whose status is in :data:`~schedulers.outcomes.ENDED`, kept
        #: by the fold so that progress at 10k trials is not a scan.
        self.n_ended = 0
        self.finished = False
        # best_trial's key, (-resource, score, trial_id) of the best scored
        # trial, kept up to date as events move a trial's resource or score
        # (see _rank_best), so that a Done at 10k trials is not a scan.
        self._best: tuple[float, float, str] | None = None
        self._best_stale = False

    # ----------------------------------------------------------------- fold
    def tell(self, event: Event) -> None:
        """Fold one event into state. Never decides, never draws randomness.

        Coordination events (segment claims, job progress notes) are skipped
        without being counted: they say who runs a segment, not what was
        decided, and counting them would make the seed of every later decision
        depend on when a worker happened to die.
        """
        if event.coordination:
            return
        self.n_events += 1
        self._fold_common(event)
        self.on_event(event)

    def on_event(self, event: Event) -> None:  # noqa: B027 - optional hook
        """Subclass hook, called after the common fold of ``event``."""

    def _fold_common(self, event: Event) -> None:
        if isinstance(event, ExperimentCreated):
            return
        # Status words come from the one fold shared with the stored
        # projections (schedulers.outcomes); the rest is scheduler bookkeeping.
        trial_id = event.trial
        known = None if trial_id is None else self.trials.get(trial_id)
        previous = None if known is None else known.status
        if known is not None:
            status = next_status(previous, event)
            self.n_ended += (status in ENDED) - (previous in ENDED)
            known.status = status  # type: ignore[assignment]
        if isinstance(event, TrialCreated):
            if self._best is not None and self._best[2] == event.trial_id:
                self._best_stale = True  # created again: its score is gone
            if known is not None and known.status in ENDED:
                self.n_ended -= 1  # replaced below by a fresh (paused) trial
            self.trials[event.trial_id] = TrialState(
                event.trial_id, dict(event.config), created_seq=self.n_events, info=dict(event.info)
            )
        elif isinstance(event, SegmentStarted):
            t = self.trials[event.trial_id]
            if t.running != (event.start, event.stop):
                self.resource_used += event.stop - event.start
            t.running = (event.start, event.stop)
            t.config = dict(event.config)
        elif isinstance(event, SegmentFinished):
            t = self.trials[event.trial_id]
            t.running = None
            t.resource = event.stop
            for report in event.reports:
                score = self.score(report)
                if score is not None and "resource" in report:
                    t.history.append((float(report["resource"]), score))
            score = self.score(event.metrics)
            if score is not None:
                t.results[event.stop] = score
            else:
                t.results.pop(event.stop, None)
            if event.checkpoint is not None:
                t.checkpoint = event.checkpoint
            self._rank_best(t)
        elif isinstance(event, SegmentFailed):
            self.trials[event.trial_id].running = None
        elif isinstance(event, (TrialPaused, TrialStopped)):
            pass  # status only (above)
        elif isinstance(event, TrialPerturbed):
            t = self.trials[event.trial_id]
            t.config = dict(event.new_config)
            t.resource = event.donor_resource
            t.checkpoint = event.checkpoint
            self._rank_best(t)
        elif isinstance(event, ExperimentFinished):
            self.finished = True
        elif isinstance(event, ObservationImported):
            results: dict[float, float] = {}
            for report in event.reports:
                score = self.score(report)
                resource = report.get("resource")
                if score is not None and isinstance(resource, (int, float)):
                    results[float(resource)] = score
            self.imported[event.observation_id] = ImportedObservation(
                event.observation_id, dict(event.config), event.source, results
            )
        elif isinstance(event, TrialRetried):
            retried = self.trials.get(event.trial_id)
            # Only a failed trial can be retried (next_status made it paused
            # above); anything else is a no-op so the fold stays total over
            # hand-made logs.
            if retried is not None and previous == "failed":
                retried.running = None
                # A finished experiment reopens: the scheduler must be able to
                # decide about the retried result (pause, promote, stop).
                self.finished = False

    # --------------------------------------------------------------- decide
    @abstractmethod
    def ask(self, n: int = 1) -> list[Action]:
        """Return up to ``n`` actions to take now, without changing state.

        Actions are listed in the order they would be applied: the second
        assumes the first happened. Returning ``[Wait()]`` means "nothing until
        a running segment finishes"; ``[Done(...)]`` means the experiment is over.
        """

    # -------------------------------------------------------------- helpers
    def rng(self, salt: int = 0) -> np.random.Generator:
        """The generator for the decision taken after ``n_events`` events."""
        return np.random.default_rng(np.random.SeedSequence([self.seed, self.n_events, salt]))

    def score(self, metrics: Mapping[str, Any]) -> float | None:
        """The metric signed so that lower is better; None if missing or NaN."""
        return signed_score(metrics, self.metric, self.mode)

    def new_trial_id(self, offset: int = 0) -> str:
        """Deterministic id of the next trial (``t0000``, ``t0001``, ...)."""
        return f"t{len(self.trials) + offset:04d}"

    @property
    def running(self) -> list[TrialState]:
        return [t for t in self.trials.values() if t.running is not None]

    def can_create_trial(self, pending_new: int = 0) -> bool:
        """Whether the trial budget allows one more trial."""
        cap = self.budget.max_trials
        return cap is None or len(self.trials) + pending_new < cap

    def can_spend(self, amount: float, pending: float = 0.0) -> bool:
        """Whether ``amount`` more resource fits the total-resource budget."""
        cap = self.budget.max_resource
        return cap is None or self.resource_used + pending + amount <= cap + _EPS

    def live_checkpoints(self) -> set[str]:
        """Checkpoint keys this scheduler may still restore from.

        Retention never deletes these. The default keeps the latest checkpoint
        of every trial that can still run; PBT adds donors referenced by exploits.
        """
        return {
            t.checkpoint.key
            for t in self.trials.values()
            if t.checkpoint is not None and t.status in ("running", "paused")
        }

    def status_extras(self) -> dict[str, Any]:
        """Scheduler-specific JSON shown by ``rungflow status --json`` (e.g. brackets)."""
        return {}

    def best_trial(self) -> TrialState | None:
        """Best trial at the highest resource it reached.

        Ranked by resource first (a trial trained to max_t beats one culled
        early) and by score second, which is what multi-fidelity users expect.
        """
        if self._best_stale:
            best: tuple[float, float, str] | None = None
            for t in self.trials.values():
                if t.last_score is None:
                    continue
                key = (-t.resource, t.last_score, t.trial_id)
                if best is None or key < best:
                    best = key
            self._best, self._best_stale = best, False
        return None if self._best is None else self.trials[self._best[2]]

    def _rank_best(self, t: TrialState) -> None:
        """Fold a change of ``t``'s resource or score into :meth:`best_trial`'s key.

        A trial that now ranks above the best becomes it; only the best trial
        ranking lower than before (an exploit moved it back, or its score is
        gone) leaves the key stale, for :meth:`best_trial` to rescan once.
        """
        if self._best_stale:
            return
        score = t.last_score
        key = None if score is None else (-t.resource, score, t.trial_id)
        best = self._best
        if best is not None and best[2] == t.trial_id:
            if key is not None and key <= best:
                self._best = key
            else:
                self._best_stale = True
        elif key is not None and (best is None or key < best):
            self._best = key

    def done_action(self, reason: str = "budget exhausted") -> Done:
        """``Done(reason)`` naming :meth:`best_trial` (None while no trial has a score)."""
        best = self.best_trial()
        return Done(reason, None if best is None else best.trial_id)
