"""Assertions over a whole event log: nothing lost, nothing trained twice."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from schedulers import (
    CheckpointRef,
    Event,
    ExperimentFinished,
    SegmentFailed,
    SegmentFinished,
    SegmentStarted,
    TrialCreated,
    TrialPerturbed,
)


def assert_log_integrity(events: Sequence[Event], *, finished: bool = True) -> None:
    """Every trial's segments are contiguous, none finished twice, none left open.

    A segment's identity is (trial, lineage epoch, start): PBT may move a trial
    back to a donor's resource, which starts a new epoch of its history.
    """
    reached: dict[str, float] = {}
    epoch: dict[str, int] = {}
    started: dict[str, SegmentStarted] = {}
    done: set[tuple[str, int, float]] = set()
    for i, event in enumerate(events):
        if isinstance(event, TrialCreated):
            assert event.trial_id not in reached, f"trial {event.trial_id} created twice"
            reached[event.trial_id] = 0.0
            epoch[event.trial_id] = 0
        elif isinstance(event, TrialPerturbed):
            reached[event.trial_id] = event.donor_resource
            epoch[event.trial_id] += 1
        elif isinstance(event, SegmentStarted):
            t = event.trial_id
            assert t not in started, f"event {i}: {t} started a segment while one was open"
            assert event.start == reached[t], (
                f"event {i}: {t} segment starts at {event.start} but trial reached {reached[t]}"
            )
            started[t] = event
        elif isinstance(event, SegmentFinished):
            t = event.trial_id
            open_ = started.pop(t, None)
            assert open_ is not None, f"event {i}: {t} finished a segment it never started"
            assert (open_.start, open_.stop) == (event.start, event.stop)
            key = (t, epoch[t], event.start)
            assert key not in done, f"event {i}: segment {key} finished twice"
            done.add(key)
            reached[t] = event.stop
        elif isinstance(event, SegmentFailed):
            assert started.pop(event.trial_id, None) is not None
    if finished:
        assert isinstance(events[-1], ExperimentFinished), "log must end with ExperimentFinished"
        assert not started, f"segments left open: {sorted(started)}"


def decision_view(events: Sequence[Event]) -> list[tuple[object, ...]]:
    """Events without values that may legitimately differ between runs.

    A checkpoint's bytes may differ between processes (pickles of sets and
    dicts follow the per-process string hash seed), so checkpoints are
    compared by key only.
    """
    out: list[tuple[object, ...]] = []
    for e in events:
        if isinstance(e, SegmentFinished):
            out.append((e.kind, e.trial_id, e.start, e.stop))
            continue
        fields = {}
        for f in dataclasses.fields(e):
            value = getattr(e, f.name)
            fields[f.name] = value.key if isinstance(value, CheckpointRef) else value
        out.append((e.kind, repr(fields)))
    return out
