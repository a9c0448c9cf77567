"""Actions: what :meth:`Scheduler.ask` tells the flow to do next.

Each action maps to the events that record it (:func:`action_events`). The flow
appends those events to the log *before* acting, then feeds the same events
back through ``tell``; so the scheduler's state only ever changes by folding
events, and a replayed log rebuilds it exactly.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from schedulers.events import (
    CheckpointRef,
    Event,
    ExperimentFinished,
    SegmentStarted,
    TrialCreated,
    TrialPaused,
    TrialPerturbed,
    TrialStopped,
)

__all__ = [
    "Action",
    "Done",
    "Pause",
    "Perturbation",
    "RunSegment",
    "Stop",
    "Wait",
    "action_events",
]


@dataclass(frozen=True)
class Perturbation:
    """PBT exploit: the trial takes ``donor_id``'s checkpoint and a new config."""

    donor_id: str
    donor_resource: float
    old_config: Mapping[str, Any]


@dataclass(frozen=True)
class RunSegment:
    """Train ``trial_id`` with ``config`` from resource ``start`` to ``stop``.

    Attributes:
        restore_from: Checkpoint to load first: the trial's own, a donor's (PBT)
            or ``None`` to start from scratch.
        new_trial: True when this action also creates the trial.
        perturbation: Set when PBT replaced the trial's weights and config.
        info: Decision record stored with the events (bracket, rung, scores).
    """

    trial_id: str
    config: Mapping[str, Any]
    start: float
    stop: float
    restore_from: CheckpointRef | None = None
    new_trial: bool = False
    perturbation: Perturbation | None = None
    info: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Pause:
    """Park ``trial_id`` at ``resource``; a later decision may promote it."""

    trial_id: str
    resource: float
    info: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Stop:
    """End ``trial_id`` for good."""

    trial_id: str
    reason: str
    info: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Wait:
    """Nothing can start until a running segment finishes."""


@dataclass(frozen=True)
class Done:
    """The experiment is over: nothing runs and nothing is left to start."""

    reason: str
    best_trial_id: str | None = None


Action = RunSegment | Pause | Stop | Wait | Done


def action_events(action: Action) -> list[Event]:
    """The events that record ``action``, in the order they must be appended."""
    if isinstance(action, RunSegment):
        events: list[Event] = []
        if action.new_trial:
            events.append(TrialCreated(action.trial_id, dict(action.config), dict(action.info)))
        if action.perturbation is not None:
            p = action.perturbation
            events.append(
                TrialPerturbed(
                    action.trial_id,
                    donor_id=p.donor_id,
                    donor_resource=p.donor_resource,
                    old_config=dict(p.old_config),
                    new_config=dict(action.config),
                    checkpoint=action.restore_from,
                    info=dict(action.info),
                )
            )
        events.append(
            SegmentStarted(
                action.trial_id,
                start=action.start,
                stop=action.stop,
                config=dict(action.config),
                restore_from=action.restore_from,
                info=dict(action.info),
            )
        )
        return events
    if isinstance(action, Pause):
        return [TrialPaused(action.trial_id, action.resource, dict(action.info))]
    if isinstance(action, Stop):
        return [TrialStopped(action.trial_id, action.reason, dict(action.info))]
    if isinstance(action, Done):
        return [ExperimentFinished(action.reason, action.best_trial_id)]
    return []
