"""Runner snapshots: resume = snapshot + tail; stale or foreign snapshots are ignored."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

import examples.faults  # noqa: F401  (registers the trainable)
from flows.engine.runner import ExperimentRunner
from flows.spec import ExperimentSpec
from schedulers import SegmentFinished, SegmentStarted
from storage import EventStore, StoredEvent
from storage.snapshots import UnsafeSnapshotError, delete_snapshots, dumps, loads
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


def _runner_fold(runner: ExperimentRunner) -> tuple[object, ...]:
    """Everything a runner snapshot holds, and the decision it leads to."""
    return (
        runner.seq, runner.scheduler.trials, runner.scheduler.status_extras(),
        runner.scheduler.finished, runner.scheduler.ask(2), runner.claims.open,
        runner.ledger.order, runner.ledger.open_restores, runner.n_checkpoints,
        runner._metric_seen, runner._started_seq, runner.finished_event,
    )


#: Arguments per scheduler: small runs that keep segments open at many cut points.
_CUT_CASES: dict[str, tuple[dict[str, object], dict[str, object]]] = {
    "random": ({"max_t": 3}, {"max_trials": 6}),
    "fifo": ({"max_t": 2, "points_per_dim": 4}, {}),
    "hyperband": ({"max_t": 9, "reduction_factor": 3}, {"max_trials": 17}),
    "asha": ({"max_t": 9, "grace_period": 1, "reduction_factor": 3}, {"max_resource": 40}),
    "pbt": ({"perturbation_interval": 2, "population_size": 4, "max_generations": 3}, {}),
    "dyhpo": ({"max_t": 9, "grace_period": 1, "reduction_factor": 3, "num_init_random": 3,
               "num_candidates": 8, "max_gp_points": 16}, {"max_resource": 30}),
}


def _folded(
    store: EventStore, spec: ExperimentSpec, records: list[StoredEvent]
) -> ExperimentRunner:
    """A runner holding the fold of ``records`` (a prefix of the log), as a live one would."""
    runner = ExperimentRunner(store, spec, "", lease_settings=FAST, snapshots=False)
    for record in records:
        runner._fold(record.event, record.seq)
    return runner


@pytest.mark.parametrize("scheduler", sorted(_CUT_CASES))
def test_snapshot_at_a_random_cut_plus_tail_equals_full_fold(
    store: EventStore, tmp_path: Path, scheduler: str
) -> None:
    """Snapshot at a random cut + the tail up to a later point == a full fold
    to that point: scheduler, claim book (open segments) and checkpoint ledger."""
    sargs, budget = _CUT_CASES[scheduler]
    spec = ExperimentSpec.model_validate({
        "name": "coop", "trainable": "faults", "metric": "loss",
        "space": {"x": {"type": "float", "low": 0.0, "high": 1.0}},
        "scheduler": scheduler, "scheduler_args": sargs, "budget": budget,
        "max_concurrency": 3, "seed": 4,
    })
    done = ExperimentRunner(store, spec, str(tmp_path / "ckpt"), lease_settings=FAST)
    done.run(ThreadExecutor())
    records = store.read("coop")
    rng = np.random.default_rng(sum(map(ord, scheduler)))
    pairs = [(int(rng.integers(1, p + 1)), int(p))
             for p in rng.integers(2, len(records) + 1, size=5)]
    pairs.append((int(rng.integers(1, len(records) + 1)), len(records)))
    # And one cut inside a segment that restores a checkpoint (the ledger's open restores).
    restoring = next((r.seq for r in records if isinstance(r.event, SegmentStarted)
                      and r.event.restore_from is not None), None)
    if restoring is not None:
        pairs.append((restoring, restoring + 1))
    opened = 0
    for cut, point in pairs:
        with store._engine.begin() as conn:
            delete_snapshots(conn, "coop")
        head = _folded(store, spec, records[:cut])
        assert store.save_snapshot("coop", cut, done.snapshot_version,
                                   dumps(head._snapshot_state()))
        resumed = ExperimentRunner(store, spec, "", lease_settings=FAST)
        resumed._load_snapshot()
        assert resumed.seq == cut, f"cut {cut}: the snapshot was not used"
        for record in records[cut:point]:
            resumed._fold(record.event, record.seq)
        full = _folded(store, spec, records[:point])
        opened += bool(full.claims.open)
        assert _runner_fold(resumed) == _runner_fold(full), f"cut {cut}, point {point}"
    assert opened, "no point with open segments: the claim book went unchecked"


def test_a_forked_snapshot_is_the_state_at_its_seq_whatever_the_flow_folds_next(
    store: EventStore, tmp_path: Path
) -> None:
    """The periodic snapshot is pickled by a forked child and saved by a thread
    (flows.engine.forked_pickle): it holds the fold at the seq it names, though
    the flow commits and folds more events while the child pickles."""
    from flows.engine.commit import decide_and_commit

    runner = ExperimentRunner(store, make_spec(scheduler="asha", concurrency=3),
                              str(tmp_path / "ckpt"), lease_settings=FAST)
    runner.open()
    decide_and_commit(runner, runs=3)
    runner.snapshot_every_events, runner.snapshot_every_seconds = 1, 0.0
    runner._maybe_snapshot()
    child = runner._pickling
    assert child is not None and child.seq == runner.seq
    for trial_id, claim in list(runner.claims.open.items())[:2]:  # the flow moves on
        runner._record_result(
            runner.job_for(trial_id, claim.started.config, claim.start, claim.stop, None),
            SegmentFinished(trial_id, claim.start, claim.stop, ({"loss": 0.5},),
                            {"loss": 0.5}), runs=1,
        )
    assert runner.seq > child.seq
    child.join()
    assert runner.snapshots_saved == 1
    resumed = ExperimentRunner(store, runner.spec, "", lease_settings=FAST)
    resumed._load_snapshot()
    assert resumed.seq == child.seq
    full = _folded(store, runner.spec, store.read("coop", until_seq=child.seq))
    assert _runner_fold(resumed) == _runner_fold(full)
    runner.close()


def test_periodic_snapshots_are_saved_during_the_run(store: EventStore, tmp_path: Path) -> None:
    done = _run(store, tmp_path)
    assert done.snapshots_saved > 1  # forked ones during the run, then the last one


def test_snapshots_are_pickled_in_place_when_that_was_cheaper_than_forking(
    store: EventStore, tmp_path: Path
) -> None:
    """A small state (or a process far bigger than its state) pickles faster
    than it forks: the runner then pickles in place, on the flow thread."""
    from flows.engine.commit import decide_and_commit

    runner = ExperimentRunner(store, make_spec(scheduler="asha", concurrency=3),
                              str(tmp_path / "ckpt"), lease_settings=FAST)
    runner.open()
    decide_and_commit(runner, runs=3)
    runner.snapshot_every_events, runner.snapshot_every_seconds = 1, 0.0
    runner._fork_cost, runner._pickle_cost = 0.010, 0.002  # as measured last time
    runner._maybe_snapshot()
    assert runner._pickling is None and runner.snapshots_saved == 1  # saved in place
    runner._fork_cost = 0.0
    decide_and_commit(runner, runs=1)
    runner._maybe_snapshot()
    assert runner._pickling is not None  # pickling now costs more than forking did
    runner._pickling.join()
    assert runner.snapshots_saved == 2 and runner._pickling.pickle_seconds is not None
    runner.close()
