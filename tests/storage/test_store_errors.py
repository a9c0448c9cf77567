"""Opening a store fails fast, in one sentence that names the problem and the fix.

Real SQLite files, a real PostgreSQL (tests/pg.py) and a real TCP server that
accepts and never answers (what a hung proxy or a wrong port looks like).
"""

from __future__ import annotations

import pickle
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from schedulers.events import TrialCreated
from storage import (
    DatabaseUnavailableError,
    DatabaseURLError,
    EventStore,
    StoreUnavailableError,
)
from storage.engine import CONNECT_TIMEOUT_S, check_url
from tests.pg import require_pg

SECRET = "pw-s3cr3t"


@pytest.mark.parametrize(
    ("url", "needle"),
    [
        ("", "does not parse"),
        ("::::", "does not parse"),
        ("foo://h/d", "uses 'foo'"),
        ("mysql+pymysql://u@h/d", "supports only SQLite and PostgreSQL"),
        ("oracle://u@h/d", "supports only SQLite and PostgreSQL"),
        ("postgresql+asyncpg://u@h/d", "driver 'asyncpg'"),
        ("sqlite+aiosqlite:///x.db", "driver 'aiosqlite'"),
    ],
)
def test_bad_urls_are_refused_before_anything_is_contacted(url: str, needle: str) -> None:
    with pytest.raises(DatabaseURLError, match=needle):
        EventStore(url)


def test_good_urls_pass() -> None:
    assert check_url("sqlite:///x.db").get_backend_name() == "sqlite"
    assert check_url("postgresql+psycopg://u:p@h/d").get_driver_name() == "psycopg"


def test_sqlite_corrupt_directory_and_read_only(tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.db"
    corrupt.write_bytes(b"not a database at all " * 100)
    with pytest.raises(DatabaseUnavailableError, match="corrupt or not a SQLite file"):
        EventStore(f"sqlite:///{corrupt}")
    (tmp_path / "dir.db").mkdir()
    with pytest.raises(DatabaseUnavailableError, match="is a directory"):
        EventStore(f"sqlite:///{tmp_path / 'dir.db'}")
    fresh = tmp_path / "ro.db"
    EventStore(f"sqlite:///{fresh}").close()
    with pytest.raises(DatabaseUnavailableError, match="read-only"):
        EventStore(f"sqlite:///file:{fresh}?mode=ro&uri=true").create_experiment("x", {})
    parent_is_a_file = tmp_path / "afile"
    parent_is_a_file.write_text("x")
    with pytest.raises(DatabaseUnavailableError, match="cannot create the directory"):
        EventStore(f"sqlite:///{parent_is_a_file / 'x.db'}")


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def silent_port() -> Iterator[int]:
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)
    held: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                held.append(srv.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield int(srv.getsockname()[1])
    finally:
        srv.close()
        for c in held:
            c.close()


def test_postgres_that_never_answers_times_out(silent_port: int) -> None:
    url = f"postgresql+psycopg://u:{SECRET}@127.0.0.1:{silent_port}/d"
    with pytest.raises(DatabaseUnavailableError) as info:
        EventStore(url, connect_timeout=2)
    assert "did not answer within 2 s" in str(info.value)
    assert "RUNGFLOW_CONNECT_TIMEOUT" in str(info.value)
    assert SECRET not in str(info.value)
    assert CONNECT_TIMEOUT_S == 10


def test_postgres_refused_missing_database_and_unknown_user() -> None:
    require_pg()
    with pytest.raises(DatabaseUnavailableError, match="refused the connection") as info:
        EventStore(f"postgresql+psycopg://postgres:{SECRET}@127.0.0.1:{_closed_port()}/test")
    assert SECRET not in str(info.value)
    with pytest.raises(DatabaseUnavailableError, match="createdb rungflow_nowhere"):
        EventStore("postgresql+psycopg://postgres@127.0.0.1:5432/rungflow_nowhere")
    with pytest.raises(DatabaseUnavailableError, match="refused user 'nobody_here'") as info:
        EventStore(f"postgresql+psycopg://nobody_here:{SECRET}@127.0.0.1:5432/test")
    assert SECRET not in str(info.value)
    assert issubclass(DatabaseUnavailableError, StoreUnavailableError)


def test_read_one_and_pickling_keep_the_timeout(tmp_path: Path) -> None:
    with EventStore(f"sqlite:///{tmp_path / 'a.db'}", connect_timeout=3) as store:
        store.create_experiment("e", {"k": 1})
        store.append("e", [TrialCreated("t0000", {"x": 1})], expected_seq=1)
        first, last = store.read_one("e", 1), store.read_one("e", 2)
        assert first is not None and first.event.kind == "ExperimentCreated"
        assert last is not None and last.event.kind == "TrialCreated"
        assert store.read_one("e", 3) is None and store.read_one("nope", 1) is None
        again = pickle.loads(pickle.dumps(store))
        try:
            assert again._connect_timeout == 3 and again.last_seq("e") == 2
        finally:
            again.close()
