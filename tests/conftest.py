"""Session-wide fixtures: one Prefect test harness per session (it costs ~10 s)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

# Register the bundled trainables for in-process flows.
import examples.digits
import examples.noop  # noqa: F401


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    """A temporary Prefect API (its own SQLite) shared by every flow test."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture
def rungflow_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point RUNGFLOW_* settings at a fresh directory for this test."""
    home = tmp_path / "rungflow-home"
    monkeypatch.setenv("RUNGFLOW_HOME", str(home))
    monkeypatch.delenv("RUNGFLOW_DATABASE_URL", raising=False)
    monkeypatch.delenv("RUNGFLOW_CHECKPOINTS", raising=False)
    return home


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


@pytest.fixture(scope="session")
def prefect_api_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real `prefect server start` on 127.0.0.1 for CLI subprocesses."""
    from tests.prefect_server import prefect_server

    with prefect_server(tmp_path_factory.mktemp("prefect-server")) as url:
        yield url


@pytest.fixture(autouse=True)
def _no_settings_leak() -> Iterator[None]:
    """Restore ``RUNGFLOW_*`` variables after every test.

    An in-process CLI call (``CliRunner``) sets ``RUNGFLOW_DATABASE_URL`` and
    ``RUNGFLOW_CHECKPOINTS`` from ``--db``/``--checkpoints``, as the real CLI
    does for its own process; in the test process that would point every later
    test's subprocesses at another test's store.
    """
    saved = {k: v for k, v in os.environ.items() if k.startswith("RUNGFLOW_")}
    yield
    for key in [k for k in os.environ if k.startswith("RUNGFLOW_") and k not in saved]:
        del os.environ[key]
    os.environ.update(saved)
