"""``rungflow retry``: an injected failure retried through a real Prefect flow run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from flows.engine.status import experiment_status
from flows.retry import RetryRefusedError, check_retry, retry_trial
from flows.spec import load_spec
from flows.trainable import SegmentContext, register_trainable
from flows.tune import tune
from schedulers import SegmentFailed, SegmentFinished, SegmentStarted
from schedulers.events import TrialRetried
from storage import EventStore, ExperimentNotFoundError
from tests.log_checks import assert_log_integrity

pytestmark = pytest.mark.usefixtures("prefect_harness")

#: Trials that already failed once: the trainable fails the first time only.
_FAILED: set[str] = set()


def _fails_once_for_t0001(ctx: SegmentContext) -> None:
    if ctx.trial_id == "t0001" and ctx.start == 0 and "t0001" not in _FAILED:
        _FAILED.add("t0001")
        raise RuntimeError("injected failure")
    state = ctx.restore() or {"x": ctx.config["x"]}
    for r in range(int(ctx.start) + 1, int(ctx.stop) + 1):
        ctx.report(r, loss=(state["x"] - 0.3) ** 2 + 1.0 / r)
    ctx.save(state)


register_trainable("retry-test-flaky", _fails_once_for_t0001)


def spec(name: str) -> Any:
    return load_spec({
        "name": name,
        "trainable": "retry-test-flaky",
        "metric": "loss",
        "space": {"x": {"type": "float", "low": 0.0, "high": 1.0}},
        "scheduler": "asha",
        "scheduler_args": {"max_t": 3, "grace_period": 1, "reduction_factor": 3},
        "budget": {"max_trials": 3},
        "max_concurrency": 1,
    })


def test_retry_of_an_injected_failure_goes_back_to_the_scheduler(rungflow_home: Path) -> None:
    _FAILED.clear()
    summary = tune(spec("flaky"))
    assert summary["state"] == "finished" and summary["segments_failed"] == 1
    store = EventStore(f"sqlite:///{rungflow_home / 'rungflow.db'}")
    try:
        before = experiment_status(store, "flaky")
        assert {t["trial_id"]: t["status"] for t in before["trials"]}["t0001"] == "failed"

        result = retry_trial("flaky", "t0001", retries=1)

        assert result["outcome"] == "finished" and result["reopened"]
        assert result["metrics"]["resource"] == 1.0
        events = [r.event for r in store.read("flaky")]
        retried = [e for e in events if isinstance(e, TrialRetried)]
        assert [(e.trial_id, e.start, e.stop, e.retries) for e in retried] == [("t0001", 0, 1, 1)]
        i = events.index(retried[0])
        assert isinstance(events[i + 1], SegmentStarted) and events[i + 1].info["retried"]
        assert isinstance(events[i + 2], SegmentFinished) and events[i + 2].trial_id == "t0001"
        # ASHA recorded the result at rung 0 and decided about it (pause, promote or stop).
        assert result["decisions"] and "t0001" in result["decisions"][0]
        assert_log_integrity(events, finished=result["experiment_finished"])

        after = experiment_status(store, "flaky")
        t0001 = next(t for t in after["trials"] if t["trial_id"] == "t0001")
        assert t0001["status"] in ("paused", "completed", "pruned")
        assert [(s["start"], s["stop"]) for s in t0001["segments"]] == [(0, 1)]
        assert after["state"] == ("finished" if result["experiment_finished"] else "running")
        # Resuming carries on from the log and ends the experiment.
        assert tune(spec("flaky"))["state"] == "finished"
        assert experiment_status(store, "flaky")["state"] == "finished"
    finally:
        store.close()


def test_retry_refusals_say_why(rungflow_home: Path) -> None:
    from flows.cli import app

    _FAILED.clear()
    tune(spec("refuse"))
    store = EventStore(f"sqlite:///{rungflow_home / 'rungflow.db'}")
    try:
        with pytest.raises(ExperimentNotFoundError):
            check_retry(store, "nope", "t0001")
        with pytest.raises(RetryRefusedError, match=r"not in .*failed trials: \['t0001'\]"):
            check_retry(store, "refuse", "t0042")
        with pytest.raises(RetryRefusedError, match="only a failed trial"):
            check_retry(store, "refuse", "t0000")
        # t0001 did fail: the refusals above are about the request, not the log.
        assert any(isinstance(r.event, SegmentFailed) for r in store.read("refuse"))
    finally:
        store.close()
    runner = CliRunner()
    for args, message in (
        (["retry", "nope", "t0001"], "not found"),
        (["retry", "refuse", "t0042"], "not in experiment"),
        (["retry", "refuse", "t0000"], "only a failed trial"),
    ):
        out = runner.invoke(app, args)
        assert out.exit_code == 1, out.output
        assert message in out.output
