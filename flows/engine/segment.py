"""The body of one training segment, independent of where it runs.

It runs inside a Prefect task on a thread, a process or a Dask worker, so it
receives only plain values (names, numbers, the checkpoint root) and opens the
blob store itself: any worker can restore any trial.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from flows.trainable import (
    MetricNotReportedError,
    SegmentContext,
    SegmentOutcome,
    get_trainable,
)
from schedulers.events import CheckpointRef, segment_key
from storage import CheckpointStore

__all__ = ["SegmentJob", "run_segment"]


@dataclass(frozen=True)
class SegmentJob:
    """Everything a worker needs to train one segment."""

    experiment: str
    trainable: str
    metric: str
    trial_id: str
    config: Mapping[str, Any]
    start: float
    stop: float
    restore_from: CheckpointRef | None
    checkpoint_root: str
    trainable_args: Mapping[str, Any] = field(default_factory=dict)
    #: Seq of the SegmentStarted event: a retry of this segment writes the same
    #: checkpoint key, while a later segment over the same range (a PBT member
    #: that jumped back to a donor's resource) writes a different one.
    started_seq: int = 0

    @property
    def segment(self) -> str:
        return f"{segment_key(self.start, self.stop)}.s{self.started_seq}"


def run_segment(job: SegmentJob) -> SegmentOutcome:
    """Train ``job`` and return its reports and checkpoint.

    Idempotent: a retried job writes its checkpoint to the same key, and a
    finished segment is never started again by the flow.

    Raises:
        MetricNotReportedError: the trainable did not report ``job.metric``.
        storage.CheckpointError: the checkpoint to restore is missing or corrupt.
    """
    fn = get_trainable(job.trainable)
    opened: list[CheckpointStore] = []

    def checkpoints() -> CheckpointStore:
        # Opened on first use: most segments of most trainables (and every
        # segment of one that keeps no checkpoints) never touch the store.
        if not opened:
            opened.append(CheckpointStore(job.checkpoint_root))
        return opened[0]

    def restore() -> bytes | None:
        return None if job.restore_from is None else checkpoints().get(job.restore_from)

    ctx = SegmentContext(
        config=dict(job.config),
        start=job.start,
        stop=job.stop,
        trial_id=job.trial_id,
        experiment=job.experiment,
        args=dict(job.trainable_args),
        _restore=restore,
    )
    fn(ctx)
    if not ctx.reports or job.metric not in ctx.reports[-1]:
        seen = sorted({k for r in ctx.reports for k in r if k != "resource"})
        raise MetricNotReportedError(
            f"trainable {job.trainable!r} finished segment {job.start:g}->{job.stop:g} of "
            f"trial {job.trial_id} without reporting metric {job.metric!r} "
            f"(it reported: {seen or 'nothing'}); call ctx.report(resource, {job.metric}=...)"
        )
    ref = None
    if ctx._saved is not None:
        ref = checkpoints().put(job.experiment, job.trial_id, job.segment, ctx._saved, job.stop)
    return SegmentOutcome(reports=tuple(ctx.reports), checkpoint=ref)
