"""Contract every EventStore backend must meet; runs on SQLite and PostgreSQL."""

from __future__ import annotations

import math
import pickle
import threading
import uuid
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from functools import partial
from itertools import count
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schedulers.base import Scheduler
from schedulers.events import (
    Event,
    ExperimentCreated,
    ExperimentFinished,
    SegmentFailed,
    SegmentFinished,
    SegmentStarted,
    TrialCreated,
    TrialPaused,
    TrialRetried,
    TrialStopped,
)
from schedulers.space import SearchSpace
from storage import (
    ConcurrencyError,
    EventStore,
    ExperimentExistsError,
    ExperimentNotFoundError,
    ResultRow,
    TrialRow,
)
from tests.storage._workers import append_with_retry, process_worker
from tests.storage.events_factory import draw_batches, event_sequences, one_of_each

SPEC = {"scheduler": "asha", "space": {"lr": {"type": "float", "low": 0.001, "high": 1}}}


@pytest.fixture
def exp(store: EventStore) -> str:
    store.create_experiment("exp", SPEC)
    return "exp"


# ------------------------------------------------------------------ basics
def test_create_writes_experiment_created_at_seq_1(store: EventStore) -> None:
    assert not store.has_experiment("exp")
    assert store.last_seq("exp") == 0
    store.create_experiment("exp", SPEC)
    assert store.has_experiment("exp")
    (stored,) = store.read("exp")
    assert (stored.experiment, stored.seq) == ("exp", 1)
    assert stored.event == ExperimentCreated(spec=SPEC)
    assert stored.created_at.tzinfo is not None


def test_spec_key_order_survives(store: EventStore) -> None:
    # Parameter order decides sampling order; the store must not reorder JSON keys.
    spec = {"zeta": 1, "alpha": {"y": 1, "b": 2, "a": 3}, "mid": [3, 1]}
    store.create_experiment("exp", spec)
    stored = store.read("exp")[0].event
    assert isinstance(stored, ExperimentCreated)
    assert list(stored.spec) == ["zeta", "alpha", "mid"]
    assert list(stored.spec["alpha"]) == ["y", "b", "a"]


def test_create_twice_raises_and_writes_nothing(store: EventStore, exp: str) -> None:
    with pytest.raises(ExperimentExistsError, match="exp"):
        store.create_experiment(exp, {"other": 1})
    assert [s.event for s in store.read(exp)] == [ExperimentCreated(spec=SPEC)]


@pytest.mark.parametrize("name", ["../x", "a/b", "", ".hidden", "x" * 200, "a..b"])
def test_create_rejects_unsafe_names(store: EventStore, name: str) -> None:
    with pytest.raises(ValueError, match="experiment"):
        store.create_experiment(name, SPEC)
    assert store.list_experiments() == []


def test_round_trip_of_every_event_kind(store: EventStore, exp: str) -> None:
    events = one_of_each()
    assert {e.kind for e in events} | {"ExperimentCreated"} == {
        "ExperimentCreated",
        "TrialCreated",
        "SegmentStarted",
        "SegmentFinished",
        "SegmentFailed",
        "TrialPaused",
        "TrialStopped",
        "TrialPerturbed",
        "ExperimentFinished",
    }
    assert store.append(exp, events, expected_seq=1) == 1 + len(events)
    stored = store.read(exp)
    assert [s.seq for s in stored] == list(range(1, len(events) + 2))
    assert [s.event for s in stored[1:]] == events
    assert all(type(s.event) is type(e) for s, e in zip(stored[1:], events, strict=True))


def test_nan_metrics_are_stored_as_null(store: EventStore, exp: str) -> None:
    store.append(exp, [TrialCreated("t0", {})], 1)
    store.append(exp, [SegmentFinished("t0", 0, 1, ({"loss": math.nan},), {"loss": math.inf})], 2)
    finished = store.read(exp, after_seq=2)[0].event
    assert isinstance(finished, SegmentFinished)
    assert finished.metrics == {"loss": None}
    assert store.results(exp)[0].metrics == {"loss": None}


def test_read_after_seq(store: EventStore, exp: str) -> None:
    store.append(exp, [TrialPaused(f"t{i}", float(i)) for i in range(5)], 1)
    assert [s.seq for s in store.read(exp, after_seq=3)] == [4, 5, 6]
    assert store.read(exp, after_seq=6) == []
    assert store.read("nope") == []


def test_append_empty_is_checked_no_op(store: EventStore, exp: str) -> None:
    assert store.append(exp, [], expected_seq=1) == 1
    with pytest.raises(ConcurrencyError):
        store.append(exp, [], expected_seq=0)


def test_append_to_unknown_experiment(store: EventStore) -> None:
    with pytest.raises(ExperimentNotFoundError, match="nope"):
        store.append("nope", [TrialCreated("t0", {})], expected_seq=0)


@pytest.mark.parametrize(
    "bad",
    [
        ExperimentCreated(spec={}),
        TrialCreated("../../etc", {}),
        TrialCreated("t0", {"x": object()}),
    ],
    ids=["experiment-created", "unsafe-trial-id", "not-json"],
)
def test_append_rejects_bad_events_and_writes_nothing(
    store: EventStore, exp: str, bad: Event
) -> None:
    with pytest.raises((ValueError, TypeError)):
        store.append(exp, [TrialCreated("ok", {}), bad], expected_seq=1)
    assert store.last_seq(exp) == 1
    assert store.trials(exp) == []


# -------------------------------------------------------------- concurrency
def test_stale_expected_seq_raises_and_writes_nothing(store: EventStore, exp: str) -> None:
    store.append(exp, [TrialCreated("t0", {"lr": 0.1})], expected_seq=1)
    for stale in (0, 1, 3):
        with pytest.raises(ConcurrencyError) as info:
            store.append(exp, [TrialCreated("t1", {}), ExperimentFinished("x")], stale)
        err = info.value
        assert (err.experiment, err.expected_seq, err.actual_seq) == (exp, stale, 2)
        assert f"expected last seq {stale}" in str(err) and "seq 2" in str(err)
    assert store.last_seq(exp) == 2
    assert [t.trial_id for t in store.trials(exp)] == ["t0"]
    assert store.list_experiments()[0].state == "running"


def test_primary_key_rejects_a_second_event_at_the_same_seq(store_url: str) -> None:
    store = EventStore(store_url)
    store.create_experiment("exp", SPEC)
    store.close()
    engine = sa.create_engine(store_url)
    try:
        with pytest.raises(sa.exc.IntegrityError), engine.begin() as conn:
            conn.execute(
                sa.text(
                    "INSERT INTO events (experiment_id, seq, kind, trial_id, payload, created_at)"
                    " VALUES ('exp', 1, 'TrialPaused', 't0', '{}', CURRENT_TIMESTAMP)"
                )
            )
    finally:
        engine.dispose()


def _racing_append(
    store: EventStore, exp: str, expected: int, barrier: threading.Barrier, i: int
) -> str:
    barrier.wait()
    try:
        store.append(exp, [TrialPaused(f"w{i}", float(expected))], expected)
    except ConcurrencyError:
        return "lost"
    return "won"


def test_two_racing_writers_exactly_one_wins(store: EventStore, exp: str) -> None:
    for _ in range(10):
        expected = store.last_seq(exp)
        race = partial(_racing_append, store, exp, expected, threading.Barrier(2))
        with ThreadPoolExecutor(2) as pool:
            outcomes = sorted(pool.map(race, range(2)))
        assert outcomes == ["lost", "won"]
        assert store.last_seq(exp) == expected + 1


def _assert_contiguous_per_writer(store: EventStore, exp: str, writers: int, n: int) -> None:
    stored = store.read(exp)
    assert [s.seq for s in stored] == list(range(1, writers * n + 2))
    per_writer: dict[str, list[float]] = {}
    for s in stored[1:]:
        assert s.event.trial is not None
        resource = s.event.resource if isinstance(s.event, TrialPaused) else 0.0
        per_writer.setdefault(s.event.trial, []).append(resource)
    assert per_writer == {f"w{w}": [float(i) for i in range(n)] for w in range(writers)}
    assert sorted(t.trial_id for t in store.trials(exp)) == sorted(per_writer)


def test_eight_threads_appending_with_retry(store: EventStore, exp: str) -> None:
    writers, n = 8, 50
    barrier = threading.Barrier(writers)

    def run(worker: int) -> int:
        barrier.wait()
        tid = f"w{worker}"
        conflicts = append_with_retry(store, exp, TrialCreated(tid, {"worker": worker}))
        for i in range(1, n):
            conflicts += append_with_retry(store, exp, TrialPaused(tid, float(i)))
        return conflicts

    # Any OperationalError ("database is locked") propagates and fails the test.
    with ThreadPoolExecutor(writers) as pool:
        list(pool.map(run, range(writers)))
    _assert_contiguous_per_writer(store, exp, writers, n)


def test_three_processes_appending_with_retry(store_url: str) -> None:
    # The workers also race to create the schema and the experiment.
    writers, n = 3, 60
    with ProcessPoolExecutor(writers, mp_context=get_context("spawn")) as pool:
        futures = [pool.submit(process_worker, store_url, "exp", w, n) for w in range(writers)]
        for f in futures:
            f.result()
    with EventStore(store_url) as store:
        _assert_contiguous_per_writer(store, "exp", writers, n)


# -------------------------------------------------------------- experiments
def test_list_experiments_and_states(store: EventStore) -> None:
    for name in ("a", "b", "c"):
        store.create_experiment(name, SPEC)
    store.append("a", [TrialCreated("t0", {}), TrialCreated("t1", {})], 1)
    store.append("b", [TrialCreated("t0", {}), ExperimentFinished("budget", "t0")], 1)
    store.set_state("c", "failed")
    summaries = {s.name: s for s in store.list_experiments()}
    assert {n: (s.state, s.last_seq, s.n_trials) for n, s in summaries.items()} == {
        "a": ("running", 3, 2),
        "b": ("finished", 3, 1),
        "c": ("failed", 1, 0),
    }
    assert all(s.created_at.tzinfo is not None for s in summaries.values())
    store.set_state("c", "running")
    assert {s.name: s.state for s in store.list_experiments()}["c"] == "running"
    store.set_state("c", "interrupted")  # a stopped run: resumable, not failed
    assert {s.name: s.state for s in store.list_experiments()}["c"] == "interrupted"
    # One experiment's state alone: what the end of a flow run reads.
    assert [store.experiment_state(n) for n in ("a", "b", "c")] == [
        "running", "finished", "interrupted",
    ]
    assert store.experiment_state("nope") is None


def test_set_state_validates(store: EventStore, exp: str) -> None:
    with pytest.raises(ValueError, match="'paused'"):
        store.set_state(exp, "paused")
    with pytest.raises(ExperimentNotFoundError):
        store.set_state("nope", "failed")


def test_delete_experiment(store: EventStore, exp: str) -> None:
    store.create_experiment("other", SPEC)
    store.append(exp, one_of_each(), 1)
    store.delete_experiment(exp)
    assert not store.has_experiment(exp)
    assert (store.read(exp), store.trials(exp), store.results(exp)) == ([], [], [])
    assert [s.name for s in store.list_experiments()] == ["other"]
    with pytest.raises(ExperimentNotFoundError):
        store.delete_experiment(exp)
    store.create_experiment(exp, SPEC)  # the name is free again
    assert store.last_seq(exp) == 1


def test_store_pickles_by_url(store: EventStore, exp: str) -> None:
    clone = pickle.loads(pickle.dumps(store))
    try:
        assert clone.last_seq(exp) == 1
        assert repr(clone) == repr(store)
    finally:
        clone.close()


# -------------------------------------------------------------- projections
def test_projections_of_a_short_log(store: EventStore, exp: str) -> None:
    store.append(exp, one_of_each(), 1)
    assert store.trials(exp) == [
        TrialRow(
            exp,
            "t0000",
            "paused",
            {"lr": 0.01, "act": "relu", "width": 32},
            1.0,
            {"resource": 1, "loss": 0.7, "note": "ok", "flag": True},
            1,
        ),
        TrialRow(exp, "t0001", "pruned", {"lr": 0.02, "act": "relu", "width": 32}, 1.0, None, 0),
    ]
    expected = [
        ResultRow(
            exp, "t0000", 5, 0.0, 1.0, {"resource": 1, "loss": 0.7, "note": "ok", "flag": True}
        )
    ]
    assert store.results(exp) == expected
    assert store.results(exp, trial_id="t0000") == expected
    assert store.results(exp, trial_id="t0001") == []


class _FoldOnly(Scheduler):
    """A scheduler that only folds, to compare with the store's projection."""

    name = "fold-only"

    def ask(self, n: int = 1) -> list[Any]:
        return []


_names = count()


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(events=event_sequences(), data=st.data())
@pytest.mark.parametrize("through", ["store", "writer"])
def test_projections_equal_rebuild_and_scheduler_fold(
    store: EventStore, events: list[Event], data: st.DataObject, through: str
) -> None:
    """Through the store's own connection and through a writer (on PostgreSQL
    with psycopg: pipelined), in short appends and bulk ones."""
    name = f"h{next(_names)}-{uuid.uuid4().hex[:6]}"
    store.create_experiment(name, SPEC)
    seq = 1
    with store.writer() as writer:
        append = writer.append if through == "writer" else store.append
        for batch in draw_batches(events, data):
            seq = append(name, batch, seq)
    incremental = (store.trials(name), store.results(name))
    store.rebuild_projections(name)
    assert (store.trials(name), store.results(name)) == incremental

    # Same status/config/resource rules as the schedulers' common fold.
    fold = _FoldOnly(
        space=SearchSpace.parse({"lr": {"type": "float", "low": 0.1, "high": 1}}), metric="loss"
    )
    for stored in store.read(name):
        trial = stored.event.trial
        if trial is None or trial in fold.trials or isinstance(stored.event, TrialCreated):
            fold.tell(stored.event)
    assert {t.trial_id: (t.status, t.config, t.resource) for t in incremental[0]} == {
        t.trial_id: (t.status, t.config, t.resource) for t in fold.trials.values()
    }
    n_finished = sum(isinstance(e, SegmentFinished) and e.trial_id != "ghost" for e in events)
    assert len(incremental[1]) == n_finished == sum(t.n_segments for t in incremental[0])


def _result_then_decisions(seq: int) -> tuple[list[Event], list[Event]]:
    """What the flow appends per result: the result, then its decisions (stop, next trial)."""
    report = {"resource": 1.0, "loss": 0.5}
    result: list[Event] = [SegmentFinished("t0", 0, 1, (report,), report)]
    decided: list[Event] = [
        TrialStopped("t0", "completed"),
        TrialCreated(f"t{seq}", {"lr": 0.2}),
        SegmentStarted(f"t{seq}", 0, 1, {"lr": 0.2}),
    ]
    return result, decided


@pytest.mark.parametrize("through", ["store", "writer"])
def test_appends_in_one_transaction_equal_separate_appends_and_rebuild(
    store: EventStore, exp: str, through: str
) -> None:
    """Later appends of a transaction skip the guard; seqs, events and projections agree."""
    seq = store.append(exp, [TrialCreated("t0", {"lr": 0.1}),
                             SegmentStarted("t0", 0, 1, {"lr": 0.1})], 1)
    result, decided = _result_then_decisions(seq)
    writer = store.writer() if through == "writer" else None
    begin = writer.transaction if writer is not None else store.transaction
    with begin(exp, seq) as tx:
        assert tx.append(result) == seq + 1
        assert tx.append(decided) == seq + 4
        assert tx.append([SegmentFinished(f"t{seq}", 0, 1, ({"loss": 1},), {"loss": 1})]) == seq + 5
    if writer is not None:
        writer.close()
    assert [s.seq for s in store.read(exp)] == list(range(1, seq + 6))
    assert [s.event for s in store.read(exp, after_seq=seq)] == [
        *result, *decided, SegmentFinished(f"t{seq}", 0, 1, ({"loss": 1},), {"loss": 1})
    ]
    incremental = (store.trials(exp), store.results(exp))
    assert [(t.trial_id, t.status, t.n_segments) for t in incremental[0]] == [
        ("t0", "completed", 1), (f"t{seq}", "paused", 1)
    ]
    store.rebuild_projections(exp)
    assert (store.trials(exp), store.results(exp)) == incremental


def _protocol(trace: str) -> tuple[list[str], int]:
    """First words of the statements a libpq trace shows parsed, and its round
    trips (each time the client sent and then waited for the server)."""
    words, round_trips, last = [], 0, ""
    for line in trace.splitlines():
        side, _, message, rest = [*line.split("\t"), "", "", "", ""][:4]
        if side == "F" and message == "Parse":
            words.append(rest.split('"')[3].split()[0])
        round_trips += side == "B" and last == "F"
        last = side or last
    return words, round_trips


def test_the_statements_of_a_result_and_its_decisions(
    store: EventStore, exp: str, tmp_path: Path
) -> None:
    """The flow's hot transaction: guarded insert of the result, its two projection
    rows, one insert of the decisions' events, the stopped trial and the new trial.
    On PostgreSQL (psycopg) the two projection rows are one statement, and with
    BEGIN, the lock and COMMIT it takes two round trips."""
    seq = store.append(exp, [TrialCreated("t0", {"lr": 0.1}),
                             SegmentStarted("t0", 0, 1, {"lr": 0.1})], 1)
    result, decided = _result_then_decisions(seq)
    statements: list[str] = []
    hot = ["INSERT", "UPDATE", "INSERT", "INSERT", "UPDATE", "INSERT"]
    if store._engine.dialect.name == "sqlite":
        with store.writer() as writer, writer.transaction(exp, seq, lock=True) as tx:
            # What reaches SQLite (the writer runs its statements on the driver
            # connection, see storage.sqlite_writes).
            driver = tx._conn.connection.driver_connection
            driver.set_trace_callback(lambda stmt: statements.append(stmt.split()[0]))
            tx.append(result)
            tx.append(decided)
            driver.set_trace_callback(None)
        assert statements == hot
        assert [s.seq for s in store.read(exp, after_seq=seq)] == [seq + i for i in (1, 2, 3, 4)]
        return
    from psycopg import pq

    trace = tmp_path / "trace"
    with store.writer() as writer, trace.open("w") as out:
        with writer.transaction(exp, seq, lock=True) as tx:
            pgconn = tx._conn.connection.driver_connection.pgconn  # type: ignore[union-attr]
            pgconn.trace(out.fileno())
            pgconn.set_trace_flags(pq.Trace.SUPPRESS_TIMESTAMPS | pq.Trace.REGRESS_MODE)
            tx.append(result)
            tx.append(decided)
        pgconn.untrace()
    words, round_trips = _protocol(trace.read_text())
    # The finished segment's trial row and result row are one statement.
    assert words == ["BEGIN", "SELECT", "INSERT", "WITH", "INSERT", "UPDATE", "INSERT", "COMMIT"]
    # BEGIN, lock and the guarded insert (whose row says whether the log moved
    # on); then everything else with COMMIT.
    assert round_trips == 2
    assert [s.seq for s in store.read(exp, after_seq=seq)] == [seq + 1, seq + 2, seq + 3, seq + 4]


def test_a_retry_reopens_a_failed_trial_in_the_projection(store: EventStore, exp: str) -> None:
    # One event per append: the short path, which once left the trial "failed".
    events = [
        TrialCreated("t0", {"lr": 0.1}),
        SegmentStarted("t0", 0, 1, {"lr": 0.1}),
        SegmentFailed("t0", 0, 1, "KeyError: 'width'"),
        TrialRetried("t0", 0, 1, retries=1),
    ]
    seq = 1
    for event in events:
        seq = store.append(exp, [event], expected_seq=seq)
    assert [row.status for row in store.trials(exp)] == ["paused"]
    store.rebuild_projections(exp)
    assert [row.status for row in store.trials(exp)] == ["paused"]


def test_rebuild_unknown_experiment(store: EventStore) -> None:
    with pytest.raises(ExperimentNotFoundError):
        store.rebuild_projections("nope")


def test_segment_started_updates_config_and_status(store: EventStore, exp: str) -> None:
    store.append(exp, [TrialCreated("t0", {"lr": 0.1}), SegmentStarted("t0", 0, 1, {"lr": 0.2})], 1)
    (row,) = store.trials(exp)
    assert (row.status, row.config, row.n_segments, row.metrics) == (
        "running",
        {"lr": 0.2},
        0,
        None,
    )
