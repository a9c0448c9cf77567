"""Checks shared by the HyperBand/ASHA tests: replay and ask(n) consistency."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from schedulers import CheckpointRef, Done, SegmentFinished, Wait, action_events
from schedulers.base import Scheduler
from schedulers.events import Event
from schedulers.simulate import SimulationResult, simulate
from tests.schedulers.conftest import objective


def apply(s: Scheduler, action: Any) -> None:
    """Tell ``s`` the events of ``action``, as the flow would record them."""
    for event in action_events(action):
        s.tell(event)


def finish(s: Scheduler, tid: str, start: float, stop: float, loss: float) -> None:
    """Tell ``s`` that ``tid`` finished ``start -> stop`` with ``loss`` and a checkpoint."""
    report = {"resource": stop, "loss": loss}
    ref = CheckpointRef(f"e/{tid}/{stop}", 1, "x", tid, float(stop))
    s.tell(SegmentFinished(tid, start, stop, (report,), report, checkpoint=ref))


def replayed(make: Callable[[], Scheduler], events: list[Event]) -> Scheduler:
    scheduler = make()
    for event in events:
        scheduler.tell(event)
    return scheduler


def check_replay(
    make: Callable[[], Scheduler], *, seed: int, workers: int = 4, prefixes: int = 12
) -> SimulationResult:
    """For random decision points of a simulated run, replay + ask(1) repeats the decision."""
    result = simulate(make(), objective, max_concurrency=workers, seed=seed)
    points = random.Random(seed).sample(
        result.decision_points, min(prefixes, len(result.decision_points))
    )
    for point in points:
        action = replayed(make, result.events[:point]).ask(1)[0]
        expected = action_events(action)
        assert expected == result.events[point : point + len(expected)], f"at event {point}"
    return result


def check_ask_n(make: Callable[[], Scheduler], events: list[Event], n: int = 5) -> None:
    """``ask(n)`` lists what n successive ``ask(1)`` + tell would decide."""
    batch = replayed(make, events).ask(n)
    one_by_one = replayed(make, events)
    sequence = []
    for _ in range(n):
        action = one_by_one.ask(1)[0]
        if isinstance(action, Wait):
            break
        sequence.append(action)
        for event in action_events(action):
            one_by_one.tell(event)
        if isinstance(action, Done):
            break
    assert batch == (sequence or [Wait()])
