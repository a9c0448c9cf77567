"""``task_runner: process``: segments train in a process pool, checkpoints on a shared path."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from prefect.task_runners import ThreadPoolTaskRunner

from flows.dask_runner import WorkerTrainableError, worker_modules
from flows.spec import ExperimentSpec, load_spec
from flows.trainable import _REGISTRY
from flows.tune import make_task_runner, run_experiment, tune
from schedulers import SegmentFailed, SegmentFinished, SegmentStarted
from storage import EventStore
from tests.log_checks import assert_log_integrity

SPACE = {"lr": {"type": "float", "low": 1e-3, "high": 0.2, "log": True}}


def spec_for(name: str, trainable: str, task_runner: str = "process") -> ExperimentSpec:
    return load_spec(
        {"name": name, "trainable": trainable, "metric": "error", "space": SPACE,
         "scheduler": "asha",
         "scheduler_args": {"max_t": 9, "grace_period": 1, "reduction_factor": 3},
         "budget": {"max_resource": 30}, "max_concurrency": 2, "seed": 2,
         "task_runner": task_runner}
    )


@pytest.mark.usefixtures("prefect_harness")
def test_asha_on_digits_in_a_process_pool(
    rungflow_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tests.flows.worker_trainables  # noqa: F401  (the pool imports it too)

    shared = tmp_path / "second-disk"
    monkeypatch.setenv("RUNGFLOW_CHECKPOINTS", f"file://{shared}")
    spec = spec_for("pool-asha", "digits-pid")
    summary = tune(spec)
    assert summary["state"] == "finished" and summary["segments_failed"] == 0
    store = EventStore(f"sqlite:///{rungflow_home / 'rungflow.db'}")
    try:
        events = [r.event for r in store.read(spec.name)]
    finally:
        store.close()
    assert_log_integrity(events)
    assert not [e for e in events if isinstance(e, SegmentFailed)]
    pids = {int(e.metrics["pid"]) for e in events if isinstance(e, SegmentFinished)}
    assert pids and os.getpid() not in pids
    assert [e for e in events if isinstance(e, SegmentStarted) and e.restore_from]
    assert list(shared.rglob("*.ckpt")), "checkpoints did not go to the configured root"


def test_worker_modules_name_the_trainables_module(monkeypatch: pytest.MonkeyPatch) -> None:
    import tests.flows.worker_trainables  # noqa: F401

    spec = spec_for("mods", "digits-pid")
    assert worker_modules(spec, ["pkg.extra", "pkg.extra"]) == (
        "pkg.extra", "tests.flows.worker_trainables",
    )


def test_a_trainable_in_main_is_refused_before_anything_runs(
    rungflow_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def train(ctx: object) -> None:  # pragma: no cover - never runs
        raise AssertionError

    train.__module__ = "__main__"
    monkeypatch.setitem(_REGISTRY, "in-main", train)
    with pytest.raises(WorkerTrainableError, match="__main__"):
        make_task_runner(spec_for("in-main", "in-main"))
    with pytest.raises(WorkerTrainableError, match="__main__"):
        make_task_runner(spec_for("in-main-dask", "in-main", "dask"))
    # Threads share the flow's registry: nothing to import.
    assert isinstance(make_task_runner(spec_for("t", "in-main", "thread")), ThreadPoolTaskRunner)


def test_memory_checkpoints_are_refused_for_worker_processes(
    rungflow_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RUNGFLOW_CHECKPOINTS", "memory://not-shared")
    with pytest.raises(ValueError, match="in this process's memory"):
        run_experiment(spec_for("mem", "digits"))
