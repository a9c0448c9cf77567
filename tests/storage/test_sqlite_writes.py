"""The SQLite writer's statements on the driver connection: same rows, same errors."""

from __future__ import annotations

import contextlib
import gc
import random
import sqlite3
import weakref
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from schedulers.events import (
    Event,
    ExperimentFinished,
    SegmentFailed,
    SegmentFinished,
    SegmentStarted,
    TrialCreated,
    TrialPaused,
    TrialPerturbed,
    TrialRetried,
    TrialStopped,
)
from storage import ConcurrencyError, DatabaseUnavailableError, EventStore
from storage import engine as engine_module
from storage.models import EVENTS, TRIALS
from storage.sqlite_writes import DirectWrites


@pytest.fixture
def store(tmp_path: Path) -> Iterator[EventStore]:
    s = EventStore(f"sqlite:///{tmp_path / 'db.sqlite'}")
    s.create_experiment("exp", {})
    yield s
    s.close()


def _events() -> list[list[object]]:
    return [
        [TrialCreated("t0", {"lr": 0.1}), SegmentStarted("t0", 0, 1, {"lr": 0.1})],
        [SegmentFinished("t0", 0, 1, ({"resource": 1, "loss": 0.5},), {"resource": 1, "loss": 0.5}),
         TrialStopped("t0", "max_t")],
        [TrialCreated("t1", {"lr": 0.2}), SegmentStarted("t1", 0, 1, {"lr": 0.2})],
    ]


def test_the_writer_stores_what_a_plain_append_stores(tmp_path: Path) -> None:
    """Rows written through the driver connection equal SQLAlchemy's, byte for byte."""
    stores = [EventStore(f"sqlite:///{tmp_path / f'{i}.sqlite'}") for i in range(2)]
    try:
        for s in stores:
            s.create_experiment("exp", {})
        seq = 1
        with stores[0].writer() as writer:
            for batch in _events():
                with writer.transaction("exp", seq, lock=True) as tx:
                    tx.catch_up()
                    seq = tx.append(batch)  # type: ignore[arg-type]
        seq = 1
        for batch in _events():
            seq = stores[1].append("exp", batch, seq)  # type: ignore[arg-type]
        dumps = []
        for s in stores:
            with s._engine.connect() as conn:
                events = conn.execute(
                    sa.select(EVENTS.c.seq, EVENTS.c.kind, EVENTS.c.trial_id,
                              sa.cast(EVENTS.c.payload, sa.Text)).order_by(EVENTS.c.seq)
                ).all()
                trials = conn.execute(
                    sa.select(TRIALS.c.trial_id, TRIALS.c.status, sa.cast(TRIALS.c.config, sa.Text),
                              TRIALS.c.resource, sa.cast(TRIALS.c.metrics, sa.Text),
                              TRIALS.c.n_segments).order_by(TRIALS.c.trial_id)
                ).all()
            dumps.append((events, trials, [r.metrics for r in s.results("exp")]))
        assert dumps[0] == dumps[1]
        assert [e.event for e in stores[0].read("exp")] == [e.event for e in stores[1].read("exp")]
    finally:
        for s in stores:
            s.close()


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


_CONFIGS: list[dict[str, object]] = [
    {}, {"lr": 0.1},
    {"é": "ü\u2028", "n": 2**62, "neg": -0.0, "b": True, "nil": None, "nest": {"a": [1, 2.5, "x"]}},
    {"big": 1e308, "tiny": 5e-324},
]


def _random_batches(rng: random.Random) -> list[list[Event]]:
    ids = [f"t{i}" for i in range(rng.randint(1, 6))]
    events: list[Event] = [TrialCreated(t, rng.choice(_CONFIGS)) for t in ids]
    for _ in range(rng.randint(5, 60)):
        t, kind = rng.choice(ids), rng.randrange(7)
        metrics = {"loss": rng.choice([0.5, float("nan"), 1, None])}
        events.append([
            SegmentStarted(t, 0, 1, rng.choice(_CONFIGS)),
            SegmentFinished(t, 0, rng.choice([1, 2.5]), (metrics,), metrics),
            SegmentFailed(t, 0, 1, "boom", final=rng.random() < 0.5),
            TrialPaused(t, 1.0),
            TrialStopped(t, rng.choice(["max_t", "early", "x"])),
            TrialPerturbed(t, ids[0], 2.0, {"a": 1}, rng.choice(_CONFIGS)),
            TrialRetried(t, 0, 1),
        ][kind])
    batches, i = [], 0
    while i < len(events):  # one event, a few, a bulk fold (more than 16)
        n = rng.choice([1, 1, 2, 3, 20, 40])
        batches.append(events[i : i + n])
        i += n
    if rng.random() < 0.3:
        batches.append([ExperimentFinished("done")])
    return batches


def _raw(store: EventStore) -> list[list[tuple[object, ...]]]:
    """Every stored value as SQLite holds it: its storage class and its text."""
    out = []
    with store._engine.connect() as conn:
        for table in ("events", "trials", "results", "experiments"):
            columns = [r[1] for r in conn.exec_driver_sql(f"PRAGMA table_info({table})")]
            shown = ", ".join(f"typeof({c}), quote({c})" for c in columns
                              if c not in ("created_at", "updated_at"))
            rows = conn.exec_driver_sql(f"SELECT {shown} FROM {table}")
            out.append(sorted((tuple(r) for r in rows), key=repr))
    return out


@pytest.mark.parametrize("seed", range(12))
def test_random_logs_are_stored_as_sqlalchemy_stores_them(tmp_path: Path, seed: int) -> None:
    """Every event kind, one event or a bulk fold, odd JSON values: the writer's
    rows equal a plain append's, storage class and text, and read back alike."""
    rng = random.Random(seed)
    batches = _random_batches(rng)
    stores = [EventStore(f"sqlite:///{tmp_path / f'{i}.sqlite'}") for i in range(2)]
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
