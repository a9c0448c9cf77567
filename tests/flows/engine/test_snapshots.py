"""Runner snapshots: resume = snapshot + tail; stale or foreign snapshots are ignored."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from flows.engine.runner import ExperimentRunner
from storage import EventStore
from storage.snapshots import UnsafeSnapshotError, dumps, loads
from tests.flows.engine.test_cooperation import FAST, ThreadExecutor, make_spec


def _state(runner: ExperimentRunner) -> tuple[object, ...]:
    return (
        runner.seq, runner.scheduler.trials, runner.scheduler.status_extras(),
        runner.scheduler.ask(1), {t: (c.owner, c.seq) for t, c in runner.claims.open.items()},
        runner.ledger.order, runner.n_checkpoints, runner.finished_event,
    )


@pytest.fixture
def store(tmp_path: Path) -> EventStore:
    s = EventStore(f"sqlite:///{tmp_path / 'snap.db'}")
    yield s
    s.close()


def _run(store: EventStore, tmp_path: Path, scheduler: str = "asha") -> ExperimentRunner:
    runner = ExperimentRunner(store, make_spec(scheduler=scheduler), str(tmp_path / "ckpt"),
                              lease_settings=FAST)
    runner.snapshot_every_events, runner.snapshot_every_seconds = 5, 0.0
    runner.run(ThreadExecutor())
    return runner


@pytest.mark.parametrize("scheduler", ["asha", "pbt"])
def test_resume_from_snapshot_equals_full_fold(
    store: EventStore, tmp_path: Path, scheduler: str
) -> None:
    done = _run(store, tmp_path, scheduler)
    snap = store.load_snapshot("coop", done._snapshot_version)
    assert snap is not None and snap.seq == done.seq
    from_snapshot = ExperimentRunner(store, done.spec, "", lease_settings=FAST)
    from_snapshot.replay()
    full = ExperimentRunner(store, done.spec, "", lease_settings=FAST, snapshots=False)
    full.replay()
    assert _state(from_snapshot) == _state(full)


def test_snapshot_of_other_code_is_ignored(store: EventStore, tmp_path: Path) -> None:
    done = _run(store, tmp_path)
    full = ExperimentRunner(store, done.spec, "", lease_settings=FAST, snapshots=False)
    full.replay()
    # Code that differs (another schedulers source, format or spec) has another
    # version: its snapshot, even a poisoned one, is never read.
    with store._engine.begin() as conn:
        conn.exec_driver_sql("DELETE FROM snapshots")
    store.save_snapshot("coop", done.seq, "0" * 40, b"not a pickle")
    runner = ExperimentRunner(store, done.spec, "", lease_settings=FAST)
    runner.replay()
    assert _state(runner) == _state(full)


def test_a_broken_snapshot_means_a_full_fold(store: EventStore, tmp_path: Path) -> None:
    done = _run(store, tmp_path)
    with store._engine.begin() as conn:
        conn.exec_driver_sql("DELETE FROM snapshots")
    store.save_snapshot("coop", done.seq, done._snapshot_version, b"garbage")
    runner = ExperimentRunner(store, done.spec, "", lease_settings=FAST)
    runner.replay()
    full = ExperimentRunner(store, done.spec, "", lease_settings=FAST, snapshots=False)
    full.replay()
    assert _state(runner) == _state(full)


class _Evil:
    def __reduce__(self) -> tuple[object, ...]:
        import os

        return (os.system, ("echo pwned",))


def test_snapshots_cannot_name_arbitrary_code() -> None:
    with pytest.raises(UnsafeSnapshotError):
        loads(pickle.dumps(_Evil()))
    with pytest.raises(UnsafeSnapshotError):
        loads(pickle.dumps(ExperimentRunner))  # only scheduler classes, not ours
    assert loads(dumps({"a": [1, 2.0, (3, None)]})) == {"a": [1, 2.0, (3, None)]}
