"""End-to-end: real Prefect flow runs on a real SQLite store with real trainables."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from flows.engine.runner import ResumeRefusedError
from flows.engine.status import experiment_status
from flows.spec import load_spec
from flows.trainable import MetricNotReportedError, SegmentContext, register_trainable
from flows.tune import tune
from schedulers import SegmentFailed, SegmentFinished
from storage import EventStore

pytestmark = pytest.mark.usefixtures("prefect_harness")

SPACE = {
    "lr": {"type": "float", "low": 1e-3, "high": 0.1, "log": True},
    "hidden": {"type": "int", "low": 8, "high": 32, "step": 8},
}


def spec(**changes: Any) -> Any:
    base: dict[str, Any] = {
        "name": "e2e",
        "trainable": "digits",
        "metric": "error",
        "space": SPACE,
        "scheduler": "random",
        "scheduler_args": {"max_t": 2},
        "budget": {"max_trials": 3},
        "max_concurrency": 2,
    }
    base.update(changes)
    return load_spec(base)


def store_for(home: Path) -> EventStore:
    return EventStore(f"sqlite:///{home / 'rungflow.db'}")


def test_digits_random_search_runs_and_finishes(rungflow_home: Path) -> None:
    summary = tune(spec())
    assert summary["state"] == "finished"
    assert summary["segments_run"] == 3
    assert 0.0 <= summary["best_metric"] < 0.5
    store = store_for(rungflow_home)
    status = experiment_status(store, "e2e")
    assert status["state"] == "finished"
    assert len(status["trials"]) == 3
    for trial in status["trials"]:
        assert [(s["start"], s["stop"]) for s in trial["segments"]] == [(0, 2)]
        assert "error" in trial["segments"][0]["metrics"]
    assert status["best"]["trial_id"] == summary["best_trial_id"]
    store.close()


def test_running_again_resumes_and_runs_nothing_new(rungflow_home: Path) -> None:
    tune(spec(name="again"))
    summary = tune(spec(name="again"))
    assert summary["state"] == "finished"
    assert summary["segments_run"] == 0


def test_changed_space_is_refused(rungflow_home: Path) -> None:
    tune(spec(name="refuse"))
    other = spec(name="refuse", space={"lr": {"type": "float", "low": 0.01, "high": 0.1}})
    with pytest.raises(ResumeRefusedError, match="lr"):
        tune(other)


_FAILS: dict[str, int] = {}


def _flaky(ctx: SegmentContext) -> None:
    """Raises on its first attempt for every trial, then succeeds."""
    _FAILS[ctx.trial_id] = _FAILS.get(ctx.trial_id, 0) + 1
    if _FAILS[ctx.trial_id] == 1:
        raise RuntimeError("transient")
    ctx.report(ctx.stop, loss=float(ctx.config["lr"]))


def _broken(ctx: SegmentContext) -> None:
    if ctx.config["lr"] > 0.01:
        raise ValueError("diverged")
    ctx.report(ctx.stop, loss=float(ctx.config["lr"]))


def _silent(ctx: SegmentContext) -> None:
    ctx.report(ctx.stop, accuracy=1.0)


register_trainable("test-flaky", _flaky)
register_trainable("test-broken", _broken)
register_trainable("test-silent", _silent)


def test_task_retries_recover_a_transient_failure(rungflow_home: Path) -> None:
    summary = tune(spec(name="flaky", trainable="test-flaky", metric="loss", segment_retries=1))
    assert summary["segments_run"] == 3
    assert summary["segments_failed"] == 0


def test_failing_trials_fail_alone(rungflow_home: Path) -> None:
    summary = tune(
        spec(
            name="broken", trainable="test-broken", metric="loss", budget={"max_trials": 6}, seed=3
        )
    )
    assert summary["state"] == "finished"
    store = store_for(rungflow_home)
    events = [r.event for r in store.read("broken")]
    failed = [e for e in events if isinstance(e, SegmentFailed)]
    finished = [e for e in events if isinstance(e, SegmentFinished)]
    assert failed and finished
    assert all("diverged" in e.error for e in failed)
    status = experiment_status(store, "broken")
    assert {t["status"] for t in status["trials"] if t.get("error")} == {"failed"}
    store.close()


def test_metric_never_reported_is_a_clear_error(rungflow_home: Path) -> None:
    with pytest.raises(MetricNotReportedError, match="without reporting metric 'loss'"):
        tune(spec(name="silent", trainable="test-silent", metric="loss"))
    store = store_for(rungflow_home)
    assert [e.state for e in store.list_experiments() if e.name == "silent"] == ["failed"]
    store.close()


@pytest.mark.postgres
def test_synchronous_commit_off_reaches_the_flows_writer_on_postgres(
    rungflow_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flows.hooks import PROGRESS_HOOKS
    from tests.pg import pg_schema_url

    url = pg_schema_url()
    monkeypatch.setenv("RUNGFLOW_DATABASE_URL", url)
    monkeypatch.setenv("RUNGFLOW_PG_SYNCHRONOUS_COMMIT", "off")
    seen: list[str] = []

    def show(runner: Any) -> None:  # a (writing-nothing) transaction of the flow's writer
        with runner.writer().transaction(runner.name, runner.seq) as tx:
            tx.catch_up()  # its first read sends BEGIN and the setting (storage.pg_pipeline)
            driver = tx._conn.connection.driver_connection
            seen.append(str(driver.execute("SHOW synchronous_commit").fetchone()[0]))

    monkeypatch.setattr("flows.hooks.PROGRESS_HOOKS", [*PROGRESS_HOOKS, show])
    summary = tune(spec(name="async-commit"))
    assert summary["state"] == "finished" and summary["segments_run"] == 3
    assert seen and set(seen) == {"off"}
    with EventStore(url) as store:
        assert len(store.results("async-commit")) == 3
