"""Pure, replayable scheduling logic: no I/O, no Prefect, no SQLAlchemy.

See :class:`schedulers.base.Scheduler` for the contract.

The package imports lazily (PEP 562): ``import schedulers.events`` (which
``storage`` does to encode and decode the log) must not pull in numpy, scipy
or optuna, which the schedulers themselves need. Every public name below is
still importable as ``from schedulers import X``; the module defining it is
imported on first access.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the same names, for type checkers and IDEs
    from schedulers.actions import (
        Action,
        Done,
        Pause,
        Perturbation,
        RunSegment,
        Stop,
        Wait,
        action_events,
    )
    from schedulers.base import Budget, Scheduler, SchedulerArgumentError, TrialState
    from schedulers.events import (
        CheckpointRef,
        Event,
        ExperimentCreated,
        ExperimentFinished,
        ImportCompleted,
        JobUpdated,
        ObservationImported,
        SegmentFailed,
        SegmentFinished,
        SegmentReclaimed,
        SegmentStarted,
        TrialCreated,
        TrialPaused,
        TrialPerturbed,
        TrialRetried,
        TrialStopped,
        event_from_record,
        event_to_payload,
    )
    from schedulers.random_search import FIFOScheduler, RandomScheduler
    from schedulers.registry import SCHEDULERS, create_scheduler, scheduler_class
    from schedulers.searchers import RandomSearcher, Searcher
    from schedulers.space import SearchSpace, SpaceError

#: Public name -> module that defines it.
_WHERE: dict[str, str] = {
    **dict.fromkeys(
        ["Action", "Done", "Pause", "Perturbation", "RunSegment", "Stop", "Wait",
         "action_events"],
        "schedulers.actions",
    ),
    **dict.fromkeys(
        ["Budget", "Scheduler", "SchedulerArgumentError", "TrialState"], "schedulers.base"
    ),
    **dict.fromkeys(
        ["CheckpointRef", "Event", "ExperimentCreated", "ExperimentFinished",
         "ImportCompleted", "JobUpdated", "ObservationImported", "SegmentFailed",
         "SegmentFinished", "SegmentReclaimed", "SegmentStarted", "TrialCreated",
         "TrialPaused", "TrialPerturbed", "TrialRetried", "TrialStopped",
         "event_from_record", "event_to_payload"],
        "schedulers.events",
    ),
    **dict.fromkeys(["FIFOScheduler", "RandomScheduler"], "schedulers.random_search"),
    **dict.fromkeys(
        ["SCHEDULERS", "create_scheduler", "scheduler_class"], "schedulers.registry"
    ),
    **dict.fromkeys(["RandomSearcher", "Searcher"], "schedulers.searchers"),
    **dict.fromkeys(["SearchSpace", "SpaceError"], "schedulers.space"),
}

__all__ = [
    "SCHEDULERS",
    "Action",
    "Budget",
    "CheckpointRef",
    "Done",
    "Event",
    "ExperimentCreated",
    "ExperimentFinished",
    "FIFOScheduler",
    "ImportCompleted",
    "JobUpdated",
    "ObservationImported",
    "Pause",
    "Perturbation",
    "RandomScheduler",
    "RandomSearcher",
    "RunSegment",
    "Scheduler",
    "SchedulerArgumentError",
    "SearchSpace",
    "Searcher",
    "SegmentFailed",
    "SegmentFinished",
    "SegmentReclaimed",
    "SegmentStarted",
    "SpaceError",
    "Stop",
    "TrialCreated",
    "TrialPaused",
    "TrialPerturbed",
    "TrialRetried",
    "TrialState",
    "TrialStopped",
    "Wait",
    "action_events",
    "create_scheduler",
    "event_from_record",
    "event_to_payload",
    "scheduler_class",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'schedulers' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
