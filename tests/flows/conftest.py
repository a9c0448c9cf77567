"""Fixtures for flow tests that need a served deployment."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.flows.served import Served, serve_deployment


@pytest.fixture(scope="session")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """``deployments/serve.py --only manual`` in a subprocess, on its own real server.

    The server runs with its services: Prefect 3 clients report task runs as
    events, and only the task-run recorder service turns them into the task
    runs the tests count.
    """
    from tests.prefect_server import prefect_server

    root = tmp_path_factory.mktemp("served")
    with (
        prefect_server(root / "server", services=True) as api_url,
        serve_deployment(api_url, root / "runner") as handle,
    ):
        yield handle
