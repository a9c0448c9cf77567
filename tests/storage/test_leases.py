"""Leases: register, heartbeat, age on the database clock, release, delete."""

from __future__ import annotations

import sqlalchemy as sa

from storage import EventStore
from tests.lease_clock import age_lease


def test_register_heartbeat_release(store: EventStore) -> None:
    store.create_experiment("e", {})
    store.register_lease("e", "host/1/a", "host", 1)
    store.register_lease("e", "host/2/b", "host", 2)
    leases = store.leases("e")
    assert set(leases) == {"host/1/a", "host/2/b"}
    assert leases["host/1/a"].pid == 1 and leases["host/1/a"].host == "host"
    assert store.heartbeat("e", "host/1/a") is True
    store.release_lease("e", "host/1/a")
    assert set(store.leases("e")) == {"host/2/b"}
    assert store.heartbeat("e", "host/1/a") is False  # released rows are not revived


def test_age_grows_until_the_next_heartbeat(store: EventStore) -> None:
    store.create_experiment("e", {})
    store.register_lease("e", "o", "h", 7)
    first = store.leases("e")["o"].age
    age_lease(store, "e", "o", 5)  # as if 5 s passed without a heartbeat
    later = store.leases("e")["o"]
    assert later.age >= first + 5
    store.heartbeat("e", "o")
    renewed = store.leases("e")["o"]
    assert renewed.heartbeat_at > later.heartbeat_at
    assert renewed.age < later.age
    assert renewed.started_at == later.started_at


def test_register_again_refreshes_the_same_row(store: EventStore) -> None:
    store.create_experiment("e", {})
    store.register_lease("e", "o", "h", 1)
    store.register_lease("e", "o", "h2", 2)
    (row,) = store.leases("e").values()
    assert (row.host, row.pid) == ("h2", 2)


def test_leases_are_per_experiment_and_deleted_with_it(store: EventStore) -> None:
    store.create_experiment("a", {})
    store.create_experiment("b", {})
    store.register_lease("a", "o", "h", 1)
    store.register_lease("b", "o", "h", 1)
    assert store.leases("unknown") == {}
    store.delete_experiment("a")  # leases are not a foreign key: deleting still works
    assert store.delete_leases("a") == 1
    assert store.leases("a") == {} and set(store.leases("b")) == {"o"}


def test_leases_table_is_created_by_migration(store_url: str) -> None:
    EventStore(store_url).close()
    engine = sa.create_engine(store_url)
    try:
        with engine.connect() as conn:
            cols = {c["name"] for c in sa.inspect(conn).get_columns("leases")}
    finally:
        engine.dispose()
    assert cols == {"experiment_id", "owner", "host", "pid", "started_at", "heartbeat_at"}
