"""An in-memory driver for schedulers: the flow's loop without Prefect or SQL.

Used by unit tests, the contract suite and the search-quality benchmarks. It
follows exactly the protocol the real flow follows (ask, record the action's
events, tell them back, run, tell the result), with simulated time so that
asynchronous completion orders are reproducible.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from schedulers.actions import Done, RunSegment, Wait, action_events
from schedulers.base import Scheduler
from schedulers.events import (
    CheckpointRef,
    Event,
    SegmentFailed,
    SegmentFinished,
    segment_key,
)

__all__ = ["Objective", "SimulationResult", "simulate"]

#: ``objective(config, start, stop, state) -> (reports, new_state)`` where each
#: report is a mapping with ``"resource"`` and metric values and ``state`` is
#: whatever the previous segment (or a PBT donor) saved; ``None`` at the start.
Objective = Callable[
    [Mapping[str, Any], float, float, Any], tuple[Sequence[Mapping[str, Any]], Any]
]


@dataclass
class SimulationResult:
    """What a simulated run produced."""

    events: list[Event] = field(default_factory=list)
    resource_used: float = 0.0
    makespan: float = 0.0
    busy_time: float = 0.0
    done: Done | None = None
    #: Indices into ``events`` where an ``ask`` decision starts; replaying
    #: ``events[:i]`` must lead the scheduler to the same decision.
    decision_points: list[int] = field(default_factory=list)


def simulate(
    scheduler: Scheduler,
    objective: Objective,
    *,
    max_concurrency: int = 1,
    duration: Callable[[RunSegment, np.random.Generator], float] | None = None,
    fail: Callable[[RunSegment], bool] | None = None,
    seed: int = 0,
    max_steps: int = 1_000_000,
) -> SimulationResult:
    """Run ``scheduler`` to completion against ``objective``.

    Args:
        scheduler: A fresh scheduler (or one already told a log prefix).
        objective: Simulated trainable, see :data:`Objective`.
        max_concurrency: Segments in flight at once (workers).
        duration: Simulated wall time of a segment; default ``stop - start``
            times a lognormal jitter so completions interleave.
        fail: Return True to make a segment fail (final) instead of finishing.
        seed: Seed of the jitter, independent of the scheduler's seed.
        max_steps: Safety bound; exceeding it raises ``RuntimeError`` (a hang).

    Returns:
        The full event log and utilisation figures.
    """
    jitter = np.random.default_rng(seed)
    if duration is None:

        def duration(action: RunSegment, rng: np.random.Generator) -> float:
            return float(action.stop - action.start) * float(rng.lognormal(0.0, 0.3))

    result = SimulationResult()
    states: dict[str, Any] = {}
    heap: list[tuple[float, int, RunSegment]] = []
    now = 0.0
    counter = 0

    def record(event: Event) -> None:
        result.events.append(event)
        scheduler.tell(event)

    for _ in range(max_steps):
        while len(heap) < max_concurrency:
            actions = scheduler.ask(1)
            action = actions[0] if actions else Wait()
            if isinstance(action, Wait):
                break
            result.decision_points.append(len(result.events))
            for event in action_events(action):
                record(event)
            if isinstance(action, Done):
                result.done = action
                result.makespan = now
                return result
            if isinstance(action, RunSegment):
                d = max(duration(action, jitter), 1e-9)
                result.busy_time += d
                result.resource_used += action.stop - action.start
                counter += 1
                heapq.heappush(heap, (now + d, counter, action))
        if not heap:
            raise RuntimeError(
                f"{type(scheduler).__name__} waits with nothing running: it would hang"
            )
        now, _, action = heapq.heappop(heap)
        if fail is not None and fail(action):
            record(SegmentFailed(action.trial_id, action.start, action.stop, "injected failure"))
            continue
        state = None if action.restore_from is None else states.get(action.restore_from.key)
        reports, new_state = objective(action.config, action.start, action.stop, state)
        reports = [dict(r) for r in reports]
        key = f"sim/{action.trial_id}/{segment_key(action.start, action.stop)}"
        states[key] = new_state
        ref = CheckpointRef(key, 0, "", action.trial_id, float(action.stop))
        record(
            SegmentFinished(
                action.trial_id,
                action.start,
                action.stop,
                reports=tuple(reports),
                metrics=reports[-1] if reports else {},
                checkpoint=ref,
            )
        )
    raise RuntimeError(f"simulation did not finish within {max_steps} steps")
