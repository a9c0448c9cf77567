"""Retry from the UI resumes: a served deployment on a real Prefect server.

The ``faults`` trainable crashes the flow run once (a simulated lost worker);
the run is then retried the way the Prefect UI's Retry button does it, and
must continue from the event log. A cancelled run started again must too.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from flows.engine.runner import unfinished_segments
from schedulers import ExperimentFinished, SegmentFinished
from tests.flows.served import (
    Served,
    cancel_like_the_ui,
    logs_and_artifacts,
    retry_like_the_ui,
    start,
    task_runs,
    wait_final,
)
from tests.log_checks import assert_log_integrity
from tests.waiting import wait_for

pytestmark = pytest.mark.slow


def faults_spec(name: str, **changes: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "name": name,
        "trainable": "faults",
        "metric": "loss",
        "space": {"x": {"type": "float", "low": 0.0, "high": 1.0}},
        "scheduler": "hyperband",
        "scheduler_args": {"max_t": 4, "reduction_factor": 2},
        "budget": {"max_trials": 8},
        "max_concurrency": 2,
        "seed": 3,
    }
    spec.update(changes)
    return spec


def finished_per_segment(events: list[Any]) -> Counter[tuple[str, float]]:
    return Counter((e.trial_id, e.start) for e in events if isinstance(e, SegmentFinished))


def task_name(event: Any) -> str:
    """The train-segment task run name of a segment event (the task's template)."""
    return f"{event.trial_id} {event.start}->{event.stop}"


def segment_task_runs(runs: list[Any]) -> tuple[Counter[str], Counter[str]]:
    """(all train-segment task runs, completed ones) counted per segment name."""
    segs = [r for r in runs if "->" in r.name]  # task_run_name "{trial} {start}->{stop}"
    return (
        Counter(r.name for r in segs),
        Counter(r.name for r in segs if r.state is not None and r.state.is_completed()),
    )


def test_crashed_run_retried_from_the_ui_resumes(served: Served, tmp_path: Path) -> None:
    marker = tmp_path / "crashed"
    spec = faults_spec(
        "retry-crash",
        trainable_args={"crash_once_at": 2, "crash_marker": str(marker)},
    )
    run_id = start(served.api_url, {"spec": spec})
    first = wait_final(served.api_url, run_id)
    assert first.state.type.value in ("CRASHED", "FAILED"), first.state
    assert "worker lost" in (first.state.message or "")
    assert marker.exists()

    before = served.events("retry-crash")
    done_before = finished_per_segment(before)
    assert done_before, "the crash should come after some segments finished"
    assert not any(isinstance(e, ExperimentFinished) for e in before)

    retry_like_the_ui(served.api_url, run_id)
    second = wait_final(served.api_url, run_id)
    assert second.state.is_completed(), second.state
    assert second.run_count >= 2

    after = served.events("retry-crash")
    assert_log_integrity(after)
    assert isinstance(after[-1], ExperimentFinished)
    finished = finished_per_segment(after)
    # No segment finished twice; everything finished before the crash is kept as is.
    assert max(finished.values()) == 1
    assert set(done_before) <= set(finished)
    assert after[: len(before)] == before

    # Prefect's view, over both attempts: a segment the log recorded as finished
    # before the crash has exactly one task run; only segments in flight at the
    # crash (started, never recorded) were trained again, once.
    runs, completed = segment_task_runs(task_runs(served.api_url, run_id))
    finished_names = {task_name(e) for e in before if isinstance(e, SegmentFinished)}
    orphans = {task_name(e) for e in unfinished_segments(before)}
    assert orphans and len(orphans) <= spec["max_concurrency"]
    assert all(runs[name] == 1 for name in finished_names)
    assert {name for name, n in runs.items() if n > 1} <= orphans
    assert sum(runs.values()) == sum(finished.values()) + len(orphans)
    assert set(completed) == {task_name(e) for e in after if isinstance(e, SegmentFinished)}

    # Storage locations never reach the Prefect API.
    text = logs_and_artifacts(served.api_url, [run_id])
    assert "retry-crash" in text  # the logs and artifacts were read at all
    assert str(served.home) not in text
    assert "rungflow.db" not in text
    assert "sqlite" not in text


def test_cancelled_run_started_again_resumes(served: Served) -> None:
    spec = faults_spec(
        "retry-cancel",
        scheduler="random",
        scheduler_args={"max_t": 2},
        budget={"max_trials": 10},
        trainable_args={"seconds_per_unit": 0.25},
    )
    run_id = start(served.api_url, {"spec": spec})

    def two_segments_finished() -> bool:
        if not served.has_experiment("retry-cancel"):
            return False
        return sum(finished_per_segment(served.events("retry-cancel")).values()) >= 2

    # Cancel mid-experiment: once the log shows two finished segments.
    wait_for(two_segments_finished, 90, "two finished segments", interval=0.2)
    cancel_like_the_ui(served.api_url, run_id)
    first = wait_final(served.api_url, run_id)
    assert first.state.type.value == "CANCELLED", first.state
    before = served.events("retry-cancel")
    assert not any(isinstance(e, ExperimentFinished) for e in before)
    done_before = finished_per_segment(before)

    again = start(served.api_url, {"spec": spec})
    second = wait_final(served.api_url, again)
    assert second.state.is_completed(), second.state

    after = served.events("retry-cancel")
    assert_log_integrity(after)
    finished = finished_per_segment(after)
    assert max(finished.values()) == 1
    assert sum(finished.values()) == 10
    assert set(done_before) <= set(finished)
    # The second run trained only what the log did not record as finished:
    # the cancelled run's unrecorded segments (in flight when it was killed)
    # and the rest of the budget.
    _, completed_again = segment_task_runs(task_runs(served.api_url, again))
    finished_names = {task_name(e) for e in before if isinstance(e, SegmentFinished)}
    assert not set(completed_again) & finished_names
    assert sum(completed_again.values()) == 10 - sum(done_before.values())
