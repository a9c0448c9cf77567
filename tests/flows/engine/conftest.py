"""Fixtures for the engine tests that run on every storage backend."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from storage import EventStore
from tests.storage.conftest import BACKENDS, make_url


@pytest.fixture(params=BACKENDS)
def store(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[EventStore]:
    """An open store on a fresh database of each backend (a module's own
    ``store`` fixture takes precedence)."""
    s = EventStore(make_url(str(request.param), tmp_path_factory))
    yield s
    s.close()
