"""Fixtures for the storage tests: one store per test on each real backend."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from storage import EventStore
from tests.pg import drop_databases, pg_schema_url

BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
]


def make_url(backend: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A URL to a fresh, empty database of ``backend``."""
    if backend == "sqlite":
        return f"sqlite:///{tmp_path_factory.mktemp('db') / 'nested' / 'rungflow.db'}"
    return pg_schema_url()


@pytest.fixture(scope="session", autouse=True)
def _drop_pg_databases() -> Iterator[None]:
    yield
    drop_databases()


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """Name of the backend under test."""
    return str(request.param)


@pytest.fixture
def store_url(backend: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    """URL of a fresh database on the backend under test."""
    return make_url(backend, tmp_path_factory)


@pytest.fixture
def store(store_url: str) -> Iterator[EventStore]:
    """An open :class:`EventStore` on a fresh database, closed after the test."""
    s = EventStore(store_url)
    yield s
    s.close()
