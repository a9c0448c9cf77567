"""Engine settings: SQLite pragmas, transaction modes, URL masking and engine reuse."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa

from storage import EventStore, display_url
from storage.engine import (
    BUSY_TIMEOUT_S,
    IDLE_ENGINES,
    READ_ONLY,
    close_engine,
    create_store_engine,
    open_engine,
)


def test_display_url_masks_password() -> None:
    url = "postgresql+psycopg://alice:s3cr%40t@db.example:5432/tune"
    shown = display_url(url)
    assert "s3cr" not in shown
    assert shown == "postgresql+psycopg://alice:***@db.example:5432/tune"
    assert display_url("sqlite:///x.db") == "sqlite:///x.db"


def test_store_never_shows_the_raw_url(tmp_path: Path) -> None:
    with EventStore(f"sqlite:///{tmp_path / 'a.db'}") as store:
        assert store.url_for_display == f"sqlite:///{tmp_path / 'a.db'}"
        assert repr(store) == f"EventStore({store.url_for_display!r})"


def test_sqlite_pragmas_and_parent_dir(tmp_path: Path) -> None:
    db = tmp_path / "deep" / "er" / "r.db"
    engine = create_store_engine(f"sqlite:///{db}")
    try:
        with engine.connect() as conn:
            pragma = {
                name: conn.exec_driver_sql(f"PRAGMA {name}").scalar()
                for name in ("journal_mode", "busy_timeout", "foreign_keys")
            }
    finally:
        engine.dispose()
    assert db.parent.is_dir()
    assert pragma == {
        "journal_mode": "wal",
        "busy_timeout": int(BUSY_TIMEOUT_S * 1000),
        "foreign_keys": 1,
    }


def test_sqlite_writes_begin_immediate_and_reads_deferred(tmp_path: Path) -> None:
    engine = create_store_engine(f"sqlite:///{tmp_path / 'r.db'}")
    seen: list[str] = []
    # SQLite's own trace: the writers' BEGIN IMMEDIATE goes to the driver directly.
    sa.event.listen(engine, "connect", lambda dbapi, _rec: dbapi.set_trace_callback(seen.append))
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql("SELECT 1")
        with engine.execution_options(**{READ_ONLY: True}).connect() as conn:
            conn.exec_driver_sql("SELECT 2")
    finally:
        engine.dispose()
    begins = [s for s in seen if s.startswith("BEGIN")]
    assert begins == ["BEGIN IMMEDIATE", "BEGIN"]


def test_in_memory_sqlite_works_single_threaded() -> None:
    with EventStore("sqlite://") as store:
        store.create_experiment("m", {})
        assert store.last_seq("m") == 1


def test_a_closed_stores_engine_serves_the_next_store_on_its_url(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'reuse.db'}"
    first = EventStore(url)
    first.create_experiment("e", {"scheduler": "random"})
    engine = first._engine
    second = EventStore(url)  # both open: never one engine for two stores
    assert second._engine is not engine
    first.close()
    first.close()  # a second close hands nothing on twice
    third, fourth = EventStore(url), EventStore(url)
    try:
        assert third._engine is engine
        assert fourth._engine is not engine
        # The engine kept no connection: the reused store works like a new one.
        assert [s.event.kind for s in third.read("e")] == ["ExperimentCreated"]
    finally:
        for store in (second, third, fourth):
            store.close()


def test_closing_an_engine_closes_its_connections(tmp_path: Path) -> None:
    engine = open_engine(f"sqlite:///{tmp_path / 'c.db'}")
    with engine.connect() as conn:
        conn.exec_driver_sql("SELECT 1")
    assert engine.pool.checkedin() == 1
    close_engine(engine)
    assert engine.pool.checkedin() == 0
    assert open_engine(f"sqlite:///{tmp_path / 'c.db'}") is engine
    close_engine(engine)


def test_in_memory_engines_and_other_timeouts_are_not_reused(tmp_path: Path) -> None:
    memory = open_engine("sqlite://")
    close_engine(memory)
    assert open_engine("sqlite://") is not memory
    url = f"sqlite:///{tmp_path / 't.db'}"
    engine = open_engine(url, connect_timeout=5)
    close_engine(engine)
    assert open_engine(url, connect_timeout=7) is not engine
    assert open_engine(url, connect_timeout=5) is engine


def test_only_the_latest_closed_engines_are_kept(tmp_path: Path) -> None:
    engines = [open_engine(f"sqlite:///{tmp_path / f'{i}.db'}") for i in range(IDLE_ENGINES + 1)]
    for engine in engines:
        close_engine(engine)
    assert open_engine(f"sqlite:///{tmp_path / '0.db'}") is not engines[0]
    last = IDLE_ENGINES
    assert open_engine(f"sqlite:///{tmp_path / f'{last}.db'}") is engines[last]
