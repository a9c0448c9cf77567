"""Fixtures for flow tests that need a served deployment."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.flows.served import Served, serve_deployment


@pytest.fixture(scope="session")
def served(prefect_api_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """``deployments/serve.py --only manual`` in a subprocess, shared by the session."""
    with serve_deployment(prefect_api_url, tmp_path_factory.mktemp("served")) as handle:
        yield handle
