"""The runner's write path: one held connection, catching up inside a transaction
(under the experiment lock) instead of losing a race, and one retry after the
database dropped the connection."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from flows.engine.commit import decide_and_commit
from flows.engine.leases import LeaseSettings
from flows.engine.runner import ExperimentRunner
from flows.spec import ExperimentSpec
from schedulers import RunSegment, SegmentFinished
from storage import EventStore
from tests.log_checks import assert_log_integrity
from tests.pg import _admin_connect, drop_databases, pg_url

FAST = LeaseSettings(lease_timeout=30, poll_interval=0.05)


def _spec() -> ExperimentSpec:
    return ExperimentSpec.model_validate(
        {"name": "w", "trainable": "bench", "metric": "loss",
         "space": {"x": {"type": "float", "low": 0.0, "high": 1.0}},
         "scheduler": "random", "scheduler_args": {"max_t": 1},
         "budget": {"max_trials": 20}, "max_concurrency": 2},
        context={"check_trainable": False},
    )


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[EventStore]:
    url = f"sqlite:///{tmp_path / 'w.db'}" if request.param == "sqlite" else pg_url()
    s = EventStore(url)
    yield s
    s.close()
    if request.param != "sqlite":
        drop_databases()


def _runner(store: EventStore) -> ExperimentRunner:
    runner = ExperimentRunner(store, _spec(), "", lease_settings=FAST, snapshots=False)
    runner.replay()
    runner.lease.acquire()
    return runner


def _result(action: RunSegment) -> SegmentFinished:
    report = {"resource": action.stop, "loss": 0.5}
    return SegmentFinished(action.trial_id, action.start, action.stop, (report,), report)


def test_a_stale_runner_catches_up_inside_its_transaction(store: EventStore) -> None:
    a, b = _runner(store), _runner(store)
    try:
        first = decide_and_commit(a, runs=1).actions
        # b has not seen a's claim: it finds it at its first append, folds it,
        # decides again and claims another trial, with nothing rolled back.
        second = decide_and_commit(b, runs=1).actions
        assert b.lost_races == 0 and b.caught_up_in_transaction == 1
        (x,), (y,) = first, second
        assert isinstance(x, RunSegment) and isinstance(y, RunSegment)
        assert x.trial_id != y.trial_id
        # a's result lands after b's claim: recorded after a catch-up, still valid.
        done = decide_and_commit(a, [_result(x)], runs=1, valid=lambda: a.claims.holds(
            a.owner.id, x.trial_id, x.start, x.stop, a._started_seq[x.trial_id]))
        assert done.recorded and a.lost_races == 0 and a.caught_up_in_transaction == 1
        assert a.seq == store.last_seq("w") > b.seq
        assert_log_integrity([r.event for r in store.read("w")], finished=False)
    finally:
        a.close()
        b.close()


def test_a_result_made_invalid_by_newer_events_is_not_recorded(store: EventStore) -> None:
    a, b = _runner(store), _runner(store)
    try:
        (x,) = decide_and_commit(a, runs=1).actions
        b.catch_up()
        decide_and_commit(b, runs=1)  # a has not seen this yet
        done = decide_and_commit(a, [_result(x)], runs=None, valid=lambda: a.seq < b.seq)
        assert not done.recorded and a.seq == b.seq and a.lost_races == 0
    finally:
        a.close()
        b.close()


def test_the_runner_appends_through_the_connection_it_holds(store: EventStore) -> None:
    runner = _runner(store)
    (x,) = decide_and_commit(runner, runs=1).actions
    held = runner.writer()._conn
    assert held is not None
    decide_and_commit(runner, [_result(x)], runs=2)
    assert runner.writer()._conn is held
    runner.close()
    assert runner.writer()._conn is None


@pytest.mark.postgres
def test_a_dropped_connection_is_retried_once_by_the_runner(tmp_path: Path) -> None:
    with EventStore(pg_url()) as store:
        runner = _runner(store)
        try:
            (x,) = decide_and_commit(runner, runs=1).actions
            conn = runner.writer()._conn
            assert conn is not None
            pid = conn.connection.dbapi_connection.info.backend_pid  # type: ignore[union-attr]
            with _admin_connect() as admin:  # a server restart, as far as this runner sees
                admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
            done = decide_and_commit(runner, [_result(x)], runs=1)
            assert done.recorded
            assert [type(a).__name__ for a in done.actions] == ["Stop", "RunSegment"]
            assert runner.seq == store.last_seq("w")
            assert_log_integrity([r.event for r in store.read("w")], finished=False)
        finally:
            runner.close()
    drop_databases()
