"""The SQLite writer's statements on the driver connection: same rows, same errors."""

from __future__ import annotations

import contextlib
import gc
import sqlite3
import weakref
from collections.abc import Iterator, Sequence
from itertools import count
from pathlib import Path

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schedulers.events import Event, SegmentFinished, SegmentStarted, TrialCreated, TrialRetried
from storage import ConcurrencyError, DatabaseUnavailableError, EventStore, projections
from storage import engine as engine_module
from storage.models import EVENTS
from storage.sqlite_writes import DirectWrites
from tests.storage.events_factory import draw_batches, event_sequences, one_of_each


@pytest.fixture
def store(tmp_path: Path) -> Iterator[EventStore]:
    s = EventStore(f"sqlite:///{tmp_path / 'db.sqlite'}")
    s.create_experiment("exp", {})
    yield s
    s.close()


#: JSON a config may hold that a serializer could get wrong: non-ASCII, a line
#: separator JSON allows and JavaScript does not, big and signed numbers, null.
_ODD = {"é": "ü\u2028", "n": 2**62, "neg": -0.0, "b": True, "nil": None,
        "nest": {"a": [1, 2.5, "x"]}, "big": 1e308, "tiny": 5e-324}


def _assert_written_alike(paths: Sequence[Path], batches: Sequence[Sequence[Event]]) -> None:
    """``batches`` into a store at ``paths[0]`` through its writer (the driver
    connection) and into one at ``paths[1]`` through plain appends (SQLAlchemy's
    execution): what they store and read back is the same."""
    stores = [EventStore(f"sqlite:///{path}") for path in paths]
    try:
        for s in stores:
            s.create_experiment("exp", {})
        seq = 1
        with stores[0].writer() as writer:
            for batch in batches:
                with writer.transaction("exp", seq, lock=True) as tx:
                    tx.catch_up()
                    seq = tx.append(batch)
        seq = 1
        for batch in batches:
            seq = stores[1].append("exp", batch, seq)
        assert _raw(stores[0]) == _raw(stores[1])
        assert repr([e.event for e in stores[0].read("exp")]) == repr(
            [e.event for e in stores[1].read("exp")])
    finally:
        for s in stores:
            s.close()


def _raw(store: EventStore) -> list[list[tuple[object, ...]]]:
    """Every stored value as SQLite holds it: its storage class and its text
    (timestamps aside: the two stores write at different times)."""
    out = []
    with store._engine.connect() as conn:
        for table in ("events", "trials", "results", "experiments"):
            columns = [r[1] for r in conn.exec_driver_sql(f"PRAGMA table_info({table})")]
            shown = ", ".join(f"typeof({c}), quote({c})" for c in columns
                              if c not in ("created_at", "updated_at"))
            rows = conn.exec_driver_sql(f"SELECT {shown} FROM {table}")
            out.append(sorted((tuple(r) for r in rows), key=repr))
    return out


def test_the_writer_stores_what_a_plain_append_stores(tmp_path: Path) -> None:
    """Every event kind, odd JSON, one event, a few and a bulk fold (more than
    16: multi-row INSERTs, an UPDATE list): the rows written through the driver
    connection equal SQLAlchemy's, storage class and text, and read back alike."""
    events: list[Event] = [
        *one_of_each()[:-1],
        TrialRetried("t0000", 1, 3.5),
        TrialCreated("odd", _ODD),
        SegmentStarted("odd", 0, 1, _ODD),
        SegmentFinished("odd", 0, 1, (_ODD,), _ODD),
    ]
    bulk: list[Event] = [TrialCreated(f"b{i}", _ODD) for i in range(projections.BULK_THRESHOLD + 1)]
    restarted: list[Event] = [SegmentStarted(f"b{i}", 0, 1, {"i": i}) for i in range(20)]
    batches: list[list[Event]] = [
        events[:1], events[1:3], events[3:6], *[[e] for e in events[6:]], bulk, restarted,
        one_of_each()[-1:],
    ]
    _assert_written_alike([tmp_path / "writer.sqlite", tmp_path / "append.sqlite"], batches)


_names = count()


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(events=event_sequences(), data=st.data())
def test_random_logs_are_stored_as_sqlalchemy_stores_them(
    tmp_path: Path, events: list[Event], data: st.DataObject
) -> None:
    """Logs a scheduler could write (NaN, infinite, text and boolean metrics),
    appended in random batch sizes, now and then a bulk one."""
    n = next(_names)
    _assert_written_alike([tmp_path / f"{n}-writer.sqlite", tmp_path / f"{n}-append.sqlite"],
                          draw_batches(events, data))


def test_a_failed_statement_raises_sqlalchemys_error(store: EventStore) -> None:
    """A key violation comes out as SQLAlchemy's IntegrityError (a lost race), and
    the transaction rolls back whole."""
    with store._engine.connect() as conn, pytest.raises(sa.exc.IntegrityError), conn.begin():
        writes = DirectWrites(conn)
        row = {"experiment_id": "exp", "seq": 1, "kind": "TrialPaused", "trial_id": "t0",
               "payload": {}, "created_at": None}
        writes.write(sa.insert(EVENTS), row)
    assert store.last_seq("exp") == 1


def test_a_lost_race_through_the_writer_is_a_concurrency_error(store: EventStore) -> None:
    with store.writer() as writer:
        store.append("exp", [TrialCreated("t9", {})], 1)  # another writer, unlocked
        with pytest.raises(ConcurrencyError), writer.transaction("exp", 1) as tx:
            tx.append([TrialCreated("t0", {})])
    assert [e.seq for e in store.read("exp")] == [1, 2]


def test_a_closed_stores_compiled_statements_are_freed(tmp_path: Path) -> None:
    """The statements compiled for an engine's dialect live as long as that dialect:
    a process that opens store after store (tests, a long-lived worker on several
    databases) does not keep every engine's dialect and statements for good."""
    dialects = []
    for i in range(3):
        s = EventStore(f"sqlite:///{tmp_path / f'{i}.sqlite'}")
        s.create_experiment("exp", {})
        with s.writer() as writer:
            writer.append("exp", [TrialCreated("t0", {})], 1)
        dialects.append(weakref.ref(s._engine.dialect))
        s.close()
        del s, writer
        # close() keeps a few engines for reuse (storage.engine.open_engine): drop them.
        engine_module._idle.clear()
    gc.collect()
    assert [d() for d in dialects] == [None, None, None]


def test_a_read_that_fails_past_its_first_row_says_what_is_wrong(tmp_path: Path) -> None:
    """sqlite3 steps a SELECT to its first row in execute() and the rest while
    rows are fetched: an error there (a corrupt page) is the store's error too,
    the same one SQLAlchemy's execution gives, not sqlite3's exception."""
    db = tmp_path / "db.sqlite"
    s = EventStore(f"sqlite:///{db}")
    s.create_experiment("exp", {})
    seq = 1
    for i in range(12):  # an event a page
        seq = s.append("exp", [TrialCreated(f"t{i}", {"pad": "x" * 3000})], seq)
    s.close()
    engine_module._idle.clear()
    with contextlib.closing(sqlite3.connect(db)) as raw:
        raw.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        page_size = raw.execute("PRAGMA page_size").fetchone()[0]
        leaves = [p for (p,) in raw.execute(
            "SELECT pageno FROM dbstat WHERE name = 'events' AND pagetype = 'leaf' "
            "ORDER BY pageno")]
    with db.open("r+b") as f:  # a page in the middle of the log: not the first row's
        f.seek((leaves[len(leaves) // 2] - 1) * page_size)
        f.write(b"\xff" * page_size)
    for writer in (True, False):
        s = EventStore(f"sqlite:///{db}")
        try:
            with pytest.raises(DatabaseUnavailableError, match="corrupt"):
                if writer:
                    with s.writer() as w, w.transaction("exp", 1, lock=True) as tx:
                        tx.catch_up()
                else:
                    with s.transaction("exp", 1) as tx:  # SQLAlchemy's execution
                        tx.catch_up()
        finally:
            s.close()

