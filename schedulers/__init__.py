"""Pure, replayable scheduling logic: no I/O, no Prefect, no SQLAlchemy.

See :class:`schedulers.base.Scheduler` for the contract.
"""

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
