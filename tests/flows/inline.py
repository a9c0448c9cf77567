"""A segment executor for tests that drive the runner without Prefect."""

from __future__ import annotations

from collections.abc import Hashable, Sequence

from flows.engine.segment import SegmentJob, run_segment
from flows.trainable import SegmentOutcome


class InlineExecutor:
    """Runs each segment when submitted, in order: one worker, no Prefect."""

    def __init__(self) -> None:
        self.outcomes: dict[int, SegmentOutcome] = {}

    def submit(self, job: SegmentJob) -> Hashable:
        handle = len(self.outcomes)
        self.outcomes[handle] = run_segment(job)
        return handle

    def wait_first(self, handles: Sequence[Hashable], timeout: float | None = None) -> Hashable:
        return handles[0]

    def result(self, handle: Hashable) -> SegmentOutcome:
        return self.outcomes[handle]  # type: ignore[index]
