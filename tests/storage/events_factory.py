"""Sample events and a hypothesis strategy for valid event sequences."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hypothesis import strategies as st

from schedulers.events import (
    CheckpointRef,
    Event,
    ExperimentFinished,
    SegmentFailed,
    SegmentFinished,
    SegmentStarted,
    TrialCreated,
    TrialPaused,
    TrialPerturbed,
    TrialStopped,
)
from storage import projections


def ref(trial_id: str, segment: str, resource: float) -> CheckpointRef:
    """A checkpoint reference with plausible fields."""
    return CheckpointRef(
        key=f"exp/{trial_id}/{segment}.ckpt",
        size=123,
        sha256="ab" * 32,
        trial_id=trial_id,
        resource=resource,
    )


def one_of_each() -> list[Event]:
    """Every appendable event kind, with non-default optional fields."""
    return [
        TrialCreated("t0000", {"lr": 0.01, "act": "relu", "width": 32}, info={"bracket": 1}),
        TrialCreated("t0001", {"lr": 0.5, "act": "tanh", "width": 8}),
        SegmentStarted("t0000", 0, 1, {"lr": 0.01, "act": "relu", "width": 32}, info={"rung": 0}),
        SegmentFinished(
            "t0000",
            0,
            1,
            reports=({"resource": 0.5, "loss": 0.9}, {"resource": 1, "loss": 0.7}),
            metrics={"resource": 1, "loss": 0.7, "note": "ok", "flag": True},
            checkpoint=ref("t0000", "0-1", 1.0),
            attempts=2,
        ),
        SegmentStarted(
            "t0000",
            1,
            3.5,
            {"lr": 0.01, "act": "relu", "width": 32},
            restore_from=ref("t0000", "0-1", 1.0),
        ),
        SegmentFailed("t0000", 1, 3.5, error="RuntimeError: boom", attempts=3, final=False),
        TrialPaused("t0000", 1.0, info={"why": "rung full"}),
        TrialPerturbed(
            "t0001",
            donor_id="t0000",
            donor_resource=1.0,
            old_config={"lr": 0.5, "act": "tanh", "width": 8},
            new_config={"lr": 0.02, "act": "relu", "width": 32},
            checkpoint=ref("t0000", "0-1", 1.0),
            info={"quantile": 0.25},
        ),
        TrialStopped("t0001", reason="culled", info={"rung": 1}),
        ExperimentFinished(reason="budget", best_trial_id="t0000"),
    ]


_metric_values = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-1000, 1000),
    st.none(),
    st.text(max_size=5),
    st.booleans(),
)
_metrics = st.dictionaries(st.sampled_from(["loss", "acc", "note"]), _metric_values, max_size=3)
_configs = st.fixed_dictionaries(
    {"lr": st.floats(1e-4, 1.0), "act": st.sampled_from(["relu", "tanh"])}
)


@st.composite
def event_sequences(draw: st.DrawFn) -> list[Event]:
    """A log a real scheduler could have written: segments start only on idle,
    non-failed trials and finish or fail only while running. Occasionally an
    event names a trial that was never created (the projections ignore it)."""
    trials: dict[str, dict[str, Any]] = {}
    events: list[Event] = []
    for _ in range(draw(st.integers(0, 30))):
        idle = [t for t, s in trials.items() if s["running"] is None and s["status"] != "failed"]
        running = [t for t, s in trials.items() if s["running"] is not None]
        choices = ["create", "orphan"]
        if idle:
            choices += ["start", "stop", "pause", "perturb"]
        if running:
            choices += ["finish", "finish", "fail"]
        choice = draw(st.sampled_from(choices))
        if choice == "create":
            tid = f"t{len(trials):04d}"
            trials[tid] = {"running": None, "status": "paused", "resource": 0.0}
            events.append(TrialCreated(tid, draw(_configs)))
        elif choice == "orphan":
            events.append(TrialPaused("ghost", 1.0))
        elif choice == "start":
            tid = draw(st.sampled_from(idle))
            start = trials[tid]["resource"]
            stop = start + draw(st.sampled_from([1, 2, 0.5, 3]))
            trials[tid]["running"] = (start, stop)
            events.append(SegmentStarted(tid, start, stop, draw(_configs)))
        elif choice == "finish":
            tid = draw(st.sampled_from(running))
            start, stop = trials[tid]["running"]
            trials[tid].update(running=None, resource=stop)
            metrics = draw(_metrics)
            events.append(SegmentFinished(tid, start, stop, reports=(metrics,), metrics=metrics))
        elif choice == "fail":
            tid = draw(st.sampled_from(running))
            start, stop = trials[tid]["running"]
            final = draw(st.booleans())
            trials[tid]["running"] = None
            if final:
                trials[tid]["status"] = "failed"
            events.append(SegmentFailed(tid, start, stop, error="boom", final=final))
        elif choice == "stop":
            events.append(TrialStopped(draw(st.sampled_from(idle)), reason="culled"))
        elif choice == "pause":
            tid = draw(st.sampled_from(idle))
            events.append(TrialPaused(tid, trials[tid]["resource"]))
        elif choice == "perturb":
            tid = draw(st.sampled_from(idle))
            donor = draw(st.sampled_from(list(trials)))
            resource = trials[donor]["resource"]
            trials[tid]["resource"] = resource
            events.append(
                TrialPerturbed(tid, donor, resource, old_config={}, new_config=draw(_configs))
            )
    if draw(st.booleans()):
        events.append(ExperimentFinished(reason="done"))
    return events


def draw_batches(events: Sequence[Event], data: st.DataObject) -> list[list[Event]]:
    """``events`` cut into appends of random sizes, now and then a bulk one
    (more than ``projections.BULK_THRESHOLD`` events: folded in bulk)."""
    batches, i = [], 0
    while i < len(events):
        size = data.draw(st.integers(1, 5) | st.just(projections.BULK_THRESHOLD + 1))
        batches.append(list(events[i : i + size]))
        i += size
    return batches
