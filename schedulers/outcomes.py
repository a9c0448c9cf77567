"""Trial outcomes: the one fold from events to the status users read.

Schedulers (:class:`schedulers.base.Scheduler`), the stored ``trials``
projection (:mod:`storage.projections`), ``rungflow status``, the exports and
the Prefect artifacts all name a trial's state with the same words, folded by
:func:`next_status`:

* ``running``: a segment is in flight;
* ``paused``: waiting for a decision (promotion, the next PBT interval);
* ``completed``: stopped because it reached ``max_t`` or the end of its bracket;
* ``pruned``: stopped early by the scheduler (culled at a rung, below a
  cutoff, out of budget);
* ``failed``: its last segment failed for good, or it never reported the
  metric (error in :func:`error_summary` form).

At the end of an experiment a trial still ``paused`` was never promoted:
:func:`final_status` says what it became (``pruned``).

Whether a ``TrialStopped`` means completed or pruned is read from the reason
the scheduler gave (:func:`stop_outcome`); the reasons are the ones the
schedulers' ``Stop(trial_id, reason)`` actions use, so old logs classify the
same way as new ones. Logs folded before these words existed said
``stopped``; :func:`normalize_status` maps that word for rows stored then.

Standard library only: storage imports this module, and must not pay for
numpy or optuna.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any, Literal

from schedulers.events import (
    Event,
    SegmentFailed,
    SegmentFinished,
    SegmentStarted,
    TrialCreated,
    TrialPaused,
    TrialRetried,
    TrialStopped,
)

__all__ = [
    "ENDED",
    "EXPERIMENT_STATES",
    "LIVE",
    "TRIAL_STATUSES",
    "ExperimentState",
    "TrialStatus",
    "error_summary",
    "final_status",
    "most_common_error",
    "next_status",
    "normalize_status",
    "signed_score",
    "stop_outcome",
]

TrialStatus = Literal["running", "paused", "completed", "pruned", "failed"]
TRIAL_STATUSES: tuple[TrialStatus, ...] = ("running", "paused", "completed", "pruned", "failed")
#: Statuses a trial can still leave without a retry.
LIVE: frozenset[str] = frozenset({"running", "paused"})
#: Statuses of a trial that will not train again (unless retried).
ENDED: frozenset[str] = frozenset({"completed", "pruned", "failed"})

ExperimentState = Literal["running", "finished", "interrupted", "cancelled", "failed"]
EXPERIMENT_STATES: tuple[ExperimentState, ...] = (
    "running",
    "finished",
    "interrupted",
    "cancelled",
    "failed",
)

# Stop reasons that mean "trained as far as it was meant to" (schedulers/*.py).
_COMPLETED = frozenset({
    "max_t reached",  # hyperband, asha, pbt
    "reached max_t",  # dyhpo
    "completed",  # random / fifo
    "max_generations reached",  # pbt
    "replay finished",  # pbt replay
})
# Stop reasons that mean the trial produced no usable result.
_FAILED_MARKERS = ("not reported", "metric missing", "missing (require_attrs)", "segment failed")


def stop_outcome(reason: str) -> Literal["completed", "pruned", "failed"]:
    """What a ``TrialStopped(reason)`` means for the user.

    Example:
        >>> stop_outcome("max_t reached"), stop_outcome("culled at rung 1")
        ('completed', 'pruned')
        >>> stop_outcome("metric 'loss' not reported")
        'failed'
    """
    if reason in _COMPLETED:
        return "completed"
    if any(marker in reason for marker in _FAILED_MARKERS):
        return "failed"
    return "pruned"


def next_status(status: str | None, event: Event) -> str | None:
    """The trial's status after ``event`` (an event naming that trial).

    ``status`` is None before ``TrialCreated``. Rules: a new trial is
    ``paused`` until its first segment starts; a finished segment parks a
    running trial again; a final ``SegmentFailed`` fails it; ``TrialStopped``
    completes or prunes it (:func:`stop_outcome`) but never overrides
    ``failed``; ``TrialRetried`` makes a failed trial ``paused`` again.
    Events that do not change the status return ``status`` unchanged.
    """
    if isinstance(event, TrialCreated):
        return "paused"
    if isinstance(event, SegmentStarted):
        return "running"
    if isinstance(event, SegmentFinished):
        return "paused" if status == "running" else status
    if isinstance(event, SegmentFailed):
        return "failed" if event.final else status
    if isinstance(event, TrialPaused):
        return "paused"
    if isinstance(event, TrialStopped):
        return status if status == "failed" else stop_outcome(event.reason)
    if isinstance(event, TrialRetried):
        return "paused" if status == "failed" else status
    return status


def final_status(status: str, experiment_finished: bool) -> str:
    """``status`` as shown once the experiment may be over.

    A trial left ``paused`` (or, in a log cut by a crash, ``running``) when
    the experiment finished was never promoted: it was ``pruned``.
    """
    if experiment_finished and status in LIVE:
        return "pruned"
    return normalize_status(status)


def normalize_status(status: str) -> str:
    """Map words of older stored projections (``stopped``) onto today's."""
    return "pruned" if status == "stopped" else status


def error_summary(error: str) -> str:
    """``Type: first line`` of a stored segment error (tracebacks cut)."""
    lines = [line for line in error.strip().splitlines() if line.strip()]
    return lines[0].strip()[:300] if lines else "unknown error"


def most_common_error(errors: Iterable[str]) -> tuple[str, int] | None:
    """The most frequent :func:`error_summary` and its count; None if there is none."""
    counts = Counter(error_summary(e) for e in errors)
    if not counts:
        return None
    return counts.most_common(1)[0]


def signed_score(metrics: Mapping[str, Any], metric: str, mode: str) -> float | None:
    """``metric`` in ``metrics`` signed so that lower is better; None if missing or NaN.

    The scheduler's rule (:meth:`schedulers.base.Scheduler.score`), also read
    by ``rungflow status`` without building a scheduler.
    """
    value = metrics.get(metric)
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    if not math.isfinite(value):
        return None
    return value if mode == "min" else -value
