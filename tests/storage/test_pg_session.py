"""The writer's PostgreSQL transactions: BEGIN, the durability choice and the
experiment lock in one round trip (storage.pg_session), on the real server; and
a client killed with ``synchronous_commit`` off loses nothing it was told was
committed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

from schedulers.events import TrialCreated, TrialPaused
from storage import EventStore
from storage.event_store import AppendTransaction
from storage.pg_session import begin_statement, begin_statements
from tests.log_checks import assert_log_integrity
from tests.pg import _admin_connect
from tests.storage.conftest import BACKENDS

pg_only = pytest.mark.parametrize("backend", [p for p in BACKENDS if p.id == "postgres"])
ROOT = Path(__file__).resolve().parents[2]


def test_the_begin_statement_holds_fixed_words_and_the_key_only() -> None:
    assert begin_statement(None) == "BEGIN"
    assert begin_statement(-7) == "BEGIN; SELECT pg_advisory_xact_lock(-7)"
    assert begin_statement(42, synchronous_commit=False) == (
        "BEGIN; SET LOCAL synchronous_commit TO off; SELECT pg_advisory_xact_lock(42)"
    )


def test_the_pipelined_begin_holds_fixed_words_and_binds_the_key() -> None:
    assert begin_statements(None) == [("BEGIN", None)]
    assert begin_statements(-7) == [
        ("BEGIN", None), ("SELECT pg_advisory_xact_lock(%(key)s::bigint)", {"key": -7})
    ]
    assert begin_statements(42, synchronous_commit=False) == [
        ("BEGIN", None),
        ("SELECT set_config('synchronous_commit', 'off', true), "
         "pg_advisory_xact_lock(%(key)s::bigint)", {"key": 42}),
    ]
    assert begin_statements(None, synchronous_commit=False) == [
        ("BEGIN", None), ("SELECT set_config('synchronous_commit', 'off', true)", None)
    ]


def _show(conn: sa.Connection) -> str:
    return str(conn.exec_driver_sql("SHOW synchronous_commit").scalar_one())


def _show_in(tx: AppendTransaction) -> str:
    """The setting inside ``tx``, once it has read (a pipelined transaction
    sends nothing before): on the writer's psycopg connection itself."""
    tx.catch_up()
    row = tx._conn.connection.driver_connection.execute("SHOW synchronous_commit").fetchone()
    return str(row[0])


def _advisory_locks(pid: int) -> int:
    with _admin_connect() as admin:
        row = admin.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted AND pid = %s",
            (pid,),
        ).fetchone()
    return int(row[0]) if row else 0


@pg_only
def test_synchronous_commit_off_reaches_the_writers_transactions_only(store: EventStore) -> None:
    store.create_experiment("e", {})
    with store.writer(synchronous_commit=False) as fast:
        with fast.transaction("e", 1, lock=True) as tx:
            assert _show_in(tx) == "off"
            tx.append([TrialCreated("a", {})])
        assert fast._conn is not None
        with fast._conn.begin():  # SET LOCAL: the session keeps the server's setting
            assert _show(fast._conn) == "on"
        seq = fast.append("e", [TrialPaused("a", 1.0)], 2)  # unlocked appends too
    with store.writer() as durable, durable.transaction("e", seq) as tx:
        assert _show_in(tx) == "on"
        tx.append([TrialPaused("a", 2.0)])
    with store._engine.connect() as conn:  # other connections: untouched
        assert _show(conn) == "on"
    assert [r.seq for r in store.read("e")] == [1, 2, 3, 4]


@pg_only
def test_the_lock_goes_with_the_first_read_and_ends_with_the_transaction(
    store: EventStore,
) -> None:
    """BEGIN and the lock are queued, sent with the transaction's first read
    (the catch-up) in one round trip, and released by its end."""
    store.create_experiment("e", {})
    with store.writer() as writer:
        with writer.transaction("e", 1, lock=True) as tx:
            pid = int(tx._conn.connection.dbapi_connection.info.backend_pid)  # type: ignore[union-attr]
            assert _advisory_locks(pid) == 0  # nothing sent yet
            assert tx.catch_up() == []
            assert _advisory_locks(pid) == 1
            tx.append([TrialCreated("a", {})])
        assert _advisory_locks(pid) == 0
        with pytest.raises(RuntimeError), writer.transaction("e", 2, lock=True) as tx:
            tx.catch_up()
            raise RuntimeError("the caller fails")  # rolled back: the lock goes too
        assert _advisory_locks(pid) == 0
    assert store.last_seq("e") == 2


_CHILD = """
import sys
from flows.engine.commit import decide_and_commit
from flows.engine.runner import ExperimentRunner
from flows.spec import ExperimentSpec
from schedulers import RunSegment, SegmentFinished
from storage import EventStore

spec = ExperimentSpec.model_validate(
    {"name": "k", "trainable": "bench", "metric": "loss",
     "space": {"x": {"type": "float", "low": 0.0, "high": 1.0}},
     "scheduler": "random", "scheduler_args": {"max_t": 1},
     "budget": {"max_trials": 100000}, "max_concurrency": 1},
    context={"check_trainable": False})
runner = ExperimentRunner(EventStore(sys.argv[1]), spec, "", synchronous_commit=False,
                          snapshots=False)
runner.open()
assert runner.writer().synchronous_commit is False
(action,) = decide_and_commit(runner, runs=1).actions
while True:
    report = {"resource": action.stop, "loss": 0.5}
    result = SegmentFinished(action.trial_id, action.start, action.stop, (report,), report)
    actions = decide_and_commit(runner, [result], runs=1).actions
    action = actions[-1]
    assert isinstance(action, RunSegment)
    print(runner.seq, flush=True)  # committed: the parent may kill us from here on
"""


@pg_only
def test_a_client_killed_with_synchronous_commit_off_loses_no_committed_result(
    store: EventStore, store_url: str
) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-c", _CHILD, store_url],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        cwd=ROOT,
        start_new_session=True,
    )
    told = []
    try:
        assert proc.stdout is not None
        while len(told) < 40:
            line = proc.stdout.readline()
            assert line, f"the child exited early with {proc.wait()}"
            told.append(int(line))
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    # Everything the client was told was committed is there (the server has it,
    # flushed or not), and the log is whole: the open claim just waits for a resume.
    events = [r.event for r in store.read("k")]
    assert store.last_seq("k") >= told[-1]
    assert len(store.results("k")) >= len(told)
    assert_log_integrity(events, finished=False)
