"""The held writer connection, catching up inside a transaction, the experiment lock
and the one retry after a dropped connection (SQLite and PostgreSQL)."""

from __future__ import annotations

import threading

import pytest
import sqlalchemy as sa

from schedulers.events import TrialCreated, TrialPaused
from storage import ConcurrencyError, EventStore
from tests.pg import _admin_connect
from tests.storage.conftest import BACKENDS
from tests.waiting import wait_for


def _seqs(store: EventStore, name: str = "e") -> list[int]:
    return [r.seq for r in store.read(name)]


def test_writer_appends_through_one_held_connection(store: EventStore) -> None:
    store.create_experiment("e", {})
    pool = store._engine.pool
    with store.writer() as writer:
        seq = writer.append("e", [TrialCreated("t0", {})], 1)
        held = writer._conn
        for i in range(3):
            seq = writer.append("e", [TrialPaused("t0", float(i))], seq)
            assert writer._conn is held  # no checkout per transaction
        assert pool.checkedout() == 1  # type: ignore[attr-defined]
        with pytest.raises(ConcurrencyError):
            writer.append("e", [TrialPaused("t0", 9.0)], seq - 1)
        assert writer.append("e", [], seq) == seq
    assert pool.checkedout() == 0  # type: ignore[attr-defined]
    assert _seqs(store) == [1, 2, 3, 4, 5]


def test_a_stale_transaction_catches_up_and_appends_in_the_same_transaction(
    store: EventStore,
) -> None:
    store.create_experiment("e", {})
    other = store.append("e", [TrialCreated("a", {}), TrialPaused("a", 1.0)], 1)
    with store.writer() as writer, writer.transaction("e", 1, lock=True) as tx:
        newer = tx.catch_up()
        assert [r.seq for r in newer] == [2, 3]
        assert tx.seq == other
        assert tx.append([TrialCreated("b", {})]) == 4
        assert tx.append([TrialPaused("b", 1.0)]) == 5
    assert [r.event.trial for r in store.read("e")][1:] == ["a", "a", "b", "b"]
    assert [t.trial_id for t in store.trials("e")] == ["a", "b"]  # projections follow


def test_catch_up_refuses_a_writer_ahead_of_the_log(store: EventStore) -> None:
    store.create_experiment("e", {})
    writer = store.writer()
    with pytest.raises(ConcurrencyError), writer.transaction("e", 5, lock=True) as tx:
        tx.catch_up()
    writer.close()
    assert _seqs(store) == [1]


def test_plain_appends_still_report_a_lost_race(store: EventStore) -> None:
    store.create_experiment("e", {})
    store.append("e", [TrialCreated("a", {})], 1)
    with pytest.raises(ConcurrencyError) as info:
        store.append("e", [TrialCreated("b", {})], 1)
    assert info.value.actual_seq == 2


def test_closing_the_store_closes_open_writers(store_url: str) -> None:
    store = EventStore(store_url)
    store.create_experiment("e", {})
    writer = store.writer()
    writer.append("e", [TrialCreated("a", {})], 1)
    store.close()
    assert writer._conn is None


# ------------------------------------------------------------------ PostgreSQL
pg_only = pytest.mark.parametrize("backend", [p for p in BACKENDS if p.id == "postgres"])


def _backend_pid(conn: sa.Connection) -> int:
    return int(conn.connection.dbapi_connection.info.backend_pid)  # type: ignore[union-attr]


@pg_only
def test_a_lost_race_found_at_commit_rolls_everything_back(store: EventStore) -> None:
    """After a catch-up a writer's appends skip the guard (with the psycopg
    driver they are only sent with COMMIT): a writer that does not take the
    lock and wrote the same seq meanwhile is stopped by the primary key, and
    nothing of the transaction stays. (On SQLite the transaction holds the
    database's write lock, so nobody can write meanwhile.)"""
    store.create_experiment("e", {})
    with store.writer() as writer:
        with pytest.raises(ConcurrencyError), writer.transaction("e", 1, lock=True) as tx:
            assert tx.catch_up() == []
            tx.append([TrialCreated("b", {}), TrialPaused("b", 1.0)])
            store.append("e", [TrialCreated("a", {})], 1)  # unlocked, on another connection
        assert writer.append("e", [TrialPaused("a", 1.0)], 2) == 3  # the writer goes on
    assert [r.event.trial for r in store.read("e")][1:] == ["a", "a"]
    assert [t.trial_id for t in store.trials("e")] == ["a"]


@pg_only
def test_the_experiment_lock_makes_a_second_writer_wait_then_catch_up(
    store: EventStore,
) -> None:
    store.create_experiment("e", {})
    a, b = store.writer(), store.writer()
    outcome: dict[str, object] = {}

    def second() -> None:
        with b.transaction("e", 1, lock=True) as tx:
            outcome["newer"] = [r.seq for r in tx.catch_up()]
            outcome["seq"] = tx.append([TrialCreated("b", {})])

    with a.transaction("e", 1, lock=True) as tx:
        tx.append([TrialCreated("a", {})])
        thread = threading.Thread(target=second)
        thread.start()

        def b_waits_for_the_lock() -> bool:
            with store._engine.connect() as conn:
                return conn.execute(sa.text(
                    "SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                    "AND wait_event = 'advisory'")).first() is not None

        wait_for(b_waits_for_the_lock, 30, "the second writer to wait for the experiment lock")
    thread.join(30)
    a.close()
    b.close()
    assert outcome == {"newer": [2], "seq": 3}
    assert _seqs(store) == [1, 2, 3]


@pg_only
def test_a_dropped_writer_connection_is_replaced_once(store: EventStore) -> None:
    store.create_experiment("e", {})
    with store.writer() as writer:
        seq = writer.append("e", [TrialCreated("a", {})], 1)
        assert writer._conn is not None
        pid = _backend_pid(writer._conn)
        with _admin_connect() as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        # The held connection is dead: the append fails on it, then runs on a fresh one.
        seq = writer.append("e", [TrialPaused("a", 1.0)], seq)
        assert _backend_pid(writer._conn) != pid
    # The store's own pooled connections recover the same way.
    with store._engine.connect() as conn:
        pids = [_backend_pid(conn)]
    with _admin_connect() as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (pids[0],))
    assert store.append("e", [TrialPaused("a", 2.0)], seq) == seq + 1
    assert _seqs(store) == [1, 2, 3, 4]

