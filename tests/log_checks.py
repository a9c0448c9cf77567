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
    SegmentReclaimed,
    SegmentStarted,
    TrialCreated,
    TrialPerturbed,
)


def assert_log_integrity(
    events: Sequence[Event], *, finished: bool = True, owners: bool = False
) -> None:
    """Every trial's segments are contiguous, none finished twice, none left open.

    A segment's identity is (trial, lineage epoch, start): PBT may move a trial
    back to a donor's resource, which starts a new epoch of its history.

    Claims: a segment has exactly one owner at a time. A reclaim must name the
    segment that is open and its current owner, and must hand it to someone
    else; with ``owners`` every ``SegmentStarted`` must carry an owner.
    """
    reached: dict[str, float] = {}
    epoch: dict[str, int] = {}
    started: dict[str, SegmentStarted] = {}
    holder: dict[str, object] = {}
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
            holder[t] = event.info.get("owner")
            if owners:
                assert holder[t], f"event {i}: {t} segment claimed without an owner"
        elif isinstance(event, SegmentReclaimed):
            t = event.trial_id
            open_ = started.get(t)
            assert open_ is not None, f"event {i}: {t} reclaimed a segment that is not open"
            assert (open_.start, open_.stop) == (event.start, event.stop), (
                f"event {i}: {t} reclaimed {event.start}->{event.stop}, "
                f"but {open_.start}->{open_.stop} is open"
            )
            assert event.previous_owner == holder[t], (
                f"event {i}: {t} reclaimed from {event.previous_owner}, but {holder[t]} held it"
            )
            assert event.owner and event.owner != holder[t], (
                f"event {i}: {t} reclaimed by its own holder"
            )
            holder[t] = event.owner
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


def claim_stats(events: Sequence[Event]) -> dict[str, object]:
    """Who claimed what: segments per owner, reclaims, and owners whose work was reclaimed."""
    per_owner: dict[str, int] = {}
    reclaimed_from: dict[str, int] = {}
    n_reclaims = 0
    for e in events:
        if isinstance(e, SegmentStarted):
            owner = str(e.info.get("owner"))
            per_owner[owner] = per_owner.get(owner, 0) + 1
        elif isinstance(e, SegmentReclaimed):
            n_reclaims += 1
            prev = str(e.previous_owner)
            reclaimed_from[prev] = reclaimed_from.get(prev, 0) + 1
    return {"segments_per_owner": per_owner, "reclaims": n_reclaims,
            "reclaimed_from": reclaimed_from}


def decision_view(events: Sequence[Event]) -> list[tuple[object, ...]]:
    """Events without values that may legitimately differ between runs.

    A checkpoint's bytes may differ between processes (pickles of sets and
    dicts follow the per-process string hash seed), so checkpoints are
    compared by the trial and resource they hold, not by bytes or key: the key
    carries the seq of the segment's claim, and a reclaim recorded after a
    crash shifts every later seq. Coordination events (who holds a segment) and
    the owner stamped on a claim are not decisions and are left out.
    """
    out: list[tuple[object, ...]] = []
    for e in events:
        if e.coordination:
            continue
        if isinstance(e, SegmentFinished):
            out.append((e.kind, e.trial_id, e.start, e.stop))
            continue
        fields = {}
        for f in dataclasses.fields(e):
            value = getattr(e, f.name)
            if isinstance(value, CheckpointRef):
                value = ("checkpoint", value.trial_id, value.resource)
            elif f.name == "info" and isinstance(e, SegmentStarted):
                value = {k: v for k, v in value.items() if k != "owner"}
            fields[f.name] = value
        out.append((e.kind, repr(fields)))
    return out
