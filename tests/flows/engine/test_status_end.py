"""The status the end of a flow run publishes == the full view, reduced.

:func:`flows.engine.status.run_end_status` reads the run's own runner, one
``trials`` row per trial and a few event kinds (no results scan, no fold of
the log); it must equal :func:`~flows.engine.status.end_view` of
:func:`~flows.engine.status.experiment_status` and of the log's full fold,
and the verdict, leaderboard and summary published from it must equal those
published from the full view: for every scheduler, on every backend, mid-run
and finished, with the runner given, caught up or restored from a snapshot,
after a crash and its resume, and on projections that lost rows.
"""

from __future__ import annotations

import json
from collections.abc import Hashable
from typing import Any

import pytest
import sqlalchemy as sa

from flows.artifacts import leaderboard_rows, summary_markdown
from flows.engine.runner import ExperimentRunner
from flows.engine.segment import SegmentJob
from flows.engine.status import (
    end_view,
    experiment_status,
    experiment_status_from_log,
    run_end_status,
    run_verdict,
)
from flows.spec import ExperimentSpec
from schedulers.events import SegmentFailed, TrialRetried
from storage import EventStore
from storage.models import RESULTS, TRIALS
from tests.flows.engine.test_status_projections import (
    CASES,
    NAME,
    SPACE,
    make_spec,
    simulated_log,
    write,
)
from tests.flows.inline import InlineExecutor


def assert_end_is_full(
    store: EventStore, spec: ExperimentSpec, runner: ExperimentRunner | None
) -> dict[str, Any]:
    """The end-of-run document, checked against both full views; returned."""
    end = run_end_status(store, NAME, runner)
    full = experiment_status(store, NAME, checkpoints="/nonexistent")
    logged = experiment_status_from_log(store, NAME, checkpoints="/nonexistent")
    # As text: key order, and 0 apart from 0.0, as a published artifact has them.
    assert json.dumps(end) == json.dumps(end_view(full)) == json.dumps(end_view(logged))
    assert run_verdict(end) == run_verdict(full)
    assert leaderboard_rows(end) == leaderboard_rows(full)
    assert leaderboard_rows(end, limit=1000) == leaderboard_rows(full, limit=1000)
    assert summary_markdown(spec, end, None) == summary_markdown(spec, full, None)
    return end


@pytest.mark.parametrize("scheduler", list(CASES))
@pytest.mark.parametrize("cut", [0.3, 0.7, 1.0])
def test_end_of_run_status_equals_the_full_view(
    store: EventStore, scheduler: str, cut: float
) -> None:
    spec = make_spec(scheduler)
    events = simulated_log(spec)
    head = int(len(events) * cut)
    # Short appends take the per-event projection path, long ones the bulk one.
    write(store, spec, events[: head // 2], batch=1 if scheduler in ("random", "pbt") else 50)
    runner = ExperimentRunner(store, spec, "")
    runner.restore()
    runner.save_snapshot()
    store.append(NAME, events[head // 2 : head], expected_seq=store.last_seq(NAME))
    # The run's runner behind the log (it catches up), and none (snapshot + tail).
    end = assert_end_is_full(store, spec, runner)
    assert runner.seq == store.last_seq(NAME)
    assert json.dumps(assert_end_is_full(store, spec, None)) == json.dumps(end)
    assert end["n_trials"] > 0 and "checkpoints" not in end
    assert sum(t["n_segments"] for t in end["trials"]) == len(store.results(NAME))
    if cut == 1.0:
        assert end["best"] is not None and end["state"] in ("finished", "failed")
    else:
        assert end["state"] == "interrupted"  # open segments, nobody holds a lease


def test_end_of_run_status_after_a_retry(store: EventStore) -> None:
    """A retried trial is open again: the same document either way."""
    spec = make_spec("random")
    events = simulated_log(spec)
    seq = write(store, spec, events, batch=10)
    failed = next(e for e in events if isinstance(e, SegmentFailed) and e.final)
    runner = ExperimentRunner(store, spec, "")
    runner.restore()
    assert_end_is_full(store, spec, runner)
    store.append(NAME, [TrialRetried(failed.trial_id, failed.start, failed.stop)], expected_seq=seq)
    end = assert_end_is_full(store, spec, runner)
    retried = next(t for t in end["trials"] if t["trial_id"] == failed.trial_id)
    assert retried["status"] == "paused" and "error" not in retried


class _Crash(BaseException):
    """The flow's process dying mid-run (not a trial's failure)."""


class CrashingExecutor(InlineExecutor):
    """Runs segments inline, then dies at the ``after``-th submit, segments in flight."""

    def __init__(self, runner: ExperimentRunner, after: int) -> None:
        super().__init__()
        self.runner, self.after = runner, after

    def submit(self, job: SegmentJob) -> Hashable:
        if len(self.outcomes) == self.after - 2:
            # The last snapshot lies a few events behind the crash (and a killed
            # process saves nothing on its way out).
            self.runner.snapshots = False
        if len(self.outcomes) == self.after:
            raise _Crash
        return super().submit(job)


@pytest.mark.parametrize("scheduler", list(CASES))
def test_end_of_run_status_after_a_crash_and_its_resume(
    store: EventStore, scheduler: str, tmp_path: Any
) -> None:
    """The resumed flow's runner (snapshot + tail, then its own run) is the state read."""
    args, budget = CASES[scheduler]
    spec = ExperimentSpec(
        name=NAME,
        trainable="synthetic",
        metric="loss",
        mode="min",
        space={**SPACE, "dropout": {"type": "float", "low": 0.0, "high": 0.6}},
        scheduler=scheduler,
        scheduler_args=args,
        budget=budget,
        max_concurrency=2,
        seed=3,
    )
    root = str(tmp_path / "checkpoints")
    crashed = ExperimentRunner(store, spec, root)
    crashed.snapshot_every_events, crashed.snapshot_every_seconds = 10, 0.0
    with pytest.raises(_Crash):
        crashed.run(CrashingExecutor(crashed, after=9))
    snapshot = store.load_snapshot(NAME, crashed.snapshot_version)
    assert snapshot is not None and 0 < snapshot.seq < store.last_seq(NAME)
    mid = run_end_status(store, NAME)  # what a crashed run's artifacts publish
    assert mid["state"] == "interrupted"
    resumed = ExperimentRunner(store, spec, root)
    summary = resumed.run(InlineExecutor())
    assert summary.resumed_segments > 0
    end = assert_end_is_full(store, spec, resumed)
    assert end["state"] in ("finished", "failed")
    assert json.dumps(run_end_status(store, NAME)) == json.dumps(end)


def test_end_of_run_status_on_lost_projections(store: EventStore) -> None:
    """Projections missing rows (an older rungflow, a hand edit): the full view, rebuilt."""
    spec = make_spec("asha")
    write(store, spec, simulated_log(spec), batch=40)
    runner = ExperimentRunner(store, spec, "")
    runner.restore()
    expected = json.dumps(end_view(experiment_status_from_log(store, NAME)))
    engine = sa.create_engine(store._url)  # behind the store's back
    with engine.begin() as conn:
        conn.execute(sa.delete(RESULTS).where(RESULTS.c.seq > 30))
        conn.execute(sa.delete(TRIALS).where(TRIALS.c.trial_id == "t0003"))
    engine.dispose()
    assert json.dumps(run_end_status(store, NAME, runner)) == expected
    assert_end_is_full(store, spec, runner)  # rebuilt by that read
