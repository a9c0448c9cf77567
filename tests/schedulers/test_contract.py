"""The contract every scheduler honours, run against every registered scheduler."""

from __future__ import annotations

import dataclasses

import pytest

from schedulers import (
    Done,
    ExperimentFinished,
    RunSegment,
    SegmentFailed,
    SegmentFinished,
    SegmentStarted,
    TrialCreated,
    TrialPerturbed,
    action_events,
)
from schedulers.base import Scheduler
from schedulers.simulate import simulate
from tests.schedulers.conftest import make, objective


@pytest.mark.parametrize("workers", [1, 4])
def test_runs_to_done(scheduler_name: str, workers: int) -> None:
    result = simulate(make(scheduler_name), objective, max_concurrency=workers)
    assert result.done is not None
    assert isinstance(result.events[-1], ExperimentFinished)
    assert any(isinstance(e, SegmentFinished) for e in result.events)


def test_ask_does_not_change_state(scheduler_name: str) -> None:
    scheduler = make(scheduler_name)
    result = simulate(make(scheduler_name), objective, max_concurrency=3)
    for event in result.events[: len(result.events) // 2]:
        scheduler.tell(event)
    assert scheduler.ask(2) == scheduler.ask(2)


def test_same_seed_same_log(scheduler_name: str) -> None:
    a = simulate(make(scheduler_name, seed=7), objective, max_concurrency=3)
    b = simulate(make(scheduler_name, seed=7), objective, max_concurrency=3)
    assert a.events == b.events


def test_replayed_prefix_gives_same_next_decision(scheduler_name: str) -> None:
    """For every decision in a real log, replaying the log up to it reproduces it."""
    result = simulate(make(scheduler_name, seed=3), objective, max_concurrency=4)
    assert result.decision_points
    for point in result.decision_points:
        replayed = make(scheduler_name, seed=3)
        for event in result.events[:point]:
            replayed.tell(event)
        action = replayed.ask(1)[0]
        expected = action_events(action)
        assert expected == result.events[point : point + len(expected)], f"at event {point}"


def test_segments_are_contiguous_and_within_budget(scheduler_name: str) -> None:
    scheduler = make(scheduler_name, seed=1)
    result = simulate(scheduler, objective, max_concurrency=4)
    reached: dict[str, float] = {}
    seen: set[tuple[str, float]] = set()
    for event in result.events:
        if isinstance(event, TrialCreated):
            reached[event.trial_id] = 0.0
        elif isinstance(event, TrialPerturbed):
            reached[event.trial_id] = event.donor_resource
        elif isinstance(event, SegmentStarted):
            assert event.start == pytest.approx(reached[event.trial_id]), event
            assert event.stop > event.start
            assert (event.trial_id, event.start) not in seen or scheduler_name == "pbt"
            seen.add((event.trial_id, event.start))
        elif isinstance(event, SegmentFinished):
            reached[event.trial_id] = event.stop
    budget = scheduler.budget
    if budget.max_resource is not None:
        assert result.resource_used <= budget.max_resource + 1e-9
    if budget.max_trials is not None:
        assert len(reached) <= budget.max_trials


def test_failures_never_hang(scheduler_name: str) -> None:
    def fail(action: RunSegment) -> bool:
        return int(action.trial_id[1:]) % 3 == 1

    result = simulate(make(scheduler_name, seed=2), objective, max_concurrency=3, fail=fail)
    assert isinstance(result.done, Done)
    assert any(isinstance(e, SegmentFailed) for e in result.events)
    failed = {e.trial_id for e in result.events if isinstance(e, SegmentFailed)}
    for event in result.events:
        if isinstance(event, SegmentStarted) and event.trial_id in failed:
            # A failed trial is never scheduled again after its failure.
            later = result.events.index(event)
            fail_at = next(
                i for i, e in enumerate(result.events)
                if isinstance(e, SegmentFailed) and e.trial_id == event.trial_id
            )
            assert later < fail_at


def test_events_are_frozen(scheduler_name: str) -> None:
    result = simulate(make(scheduler_name), objective, max_concurrency=2)
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.events[0].trial_id = "x"  # type: ignore[misc]


def _scanned_best(scheduler: Scheduler) -> str | None:
    """:meth:`Scheduler.best_trial` by its definition: a scan of every trial."""
    keys = [(-t.resource, t.last_score, t.trial_id)
            for t in scheduler.trials.values() if t.last_score is not None]
    return min(keys)[2] if keys else None


def _best_id(scheduler: Scheduler) -> str | None:
    best = scheduler.best_trial()
    return None if best is None else best.trial_id


@pytest.mark.parametrize("every", [1, 7, 0])
def test_best_trial_follows_the_log(scheduler_name: str, every: int) -> None:
    """The best trial kept up as events arrive is the one a scan finds, asked
    after every event, every 7th, or only at the end."""
    def fail(action: RunSegment) -> bool:
        return int(action.trial_id[1:]) % 5 == 3

    result = simulate(make(scheduler_name, seed=5), objective, max_concurrency=4, fail=fail)
    replayed = make(scheduler_name, seed=5)
    for i, event in enumerate(result.events):
        replayed.tell(event)
        if every and i % every == 0:
            assert _best_id(replayed) == _scanned_best(replayed), f"at event {i}"
    assert _best_id(replayed) == _scanned_best(replayed) is not None


def test_best_trial_after_the_best_is_moved_back() -> None:
    """An exploit moving the best trial back to a lower resource: the next best wins."""
    scheduler = make("random")
    config = {"lr": 0.1, "width": 8, "act": "relu"}
    for tid, start, stop, loss in (("t0000", 0.0, 1.0, 0.5), ("t0000", 1.0, 2.0, 0.1),
                                   ("t0001", 0.0, 1.0, 0.3)):
        if start == 0.0:
            scheduler.tell(TrialCreated(tid, config))
        scheduler.tell(SegmentStarted(tid, start, stop, config))
        metrics = {"resource": stop, "loss": loss}
        scheduler.tell(SegmentFinished(tid, start, stop, (metrics,), metrics))
    assert _best_id(scheduler) == "t0000"  # resource 2 beats t0001's 1
    scheduler.tell(TrialPerturbed("t0000", "t0001", 1.0, config, config))
    assert _best_id(scheduler) == _scanned_best(scheduler) == "t0001"  # 0.3 beats 0.5 at 1
