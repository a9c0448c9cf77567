"""Cron schedules fire: a real ``prefect server start`` (with its scheduler
service) and ``deployments/serve.py`` serving a per-minute cron.

With SQLAlchemy 2.1 the scheduler service fails every loop ("Can't evaluate
bulk DML statement", only in the server log) and no scheduled run ever exists;
pyproject pins 2.0.x. This test waits for the first scheduled flow run to be
created, to run, and to write its experiment (each wait bounded, none fixed).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC
from pathlib import Path
from typing import Any

import pytest
import yaml

from storage import EventStore
from tests.flows.served import REPO, run
from tests.processes import stop_group

pytestmark = pytest.mark.slow

SPEC = {
    "name": "every-minute",
    "trainable": "faults",
    "metric": "loss",
    "space": {"x": {"type": "float", "low": 0.0, "high": 1.0}},
    "scheduler": "random",
    "scheduler_args": {"max_t": 1},
    "budget": {"max_trials": 2},
}


def prefect_yaml(path: Path) -> Path:
    path.write_text(yaml.safe_dump({
        "name": "schedules-test",
        "deployments": [
            {
                "name": "every-minute",
                "entrypoint": "flows/tune.py:tune",
                "schedules": [{"cron": "* * * * *", "timezone": "UTC", "active": True}],
                "parameters": {"spec": SPEC, "experiment_suffix": "datetime"},
            },
            {
                "name": "paused",
                "entrypoint": "flows/tune.py:tune",
                "schedules": [{"cron": "* * * * *", "timezone": "UTC", "active": False}],
                "parameters": {"spec": {**SPEC, "name": "never"}, "experiment_suffix": "none"},
            },
        ],
    }))
    return path


@pytest.fixture
def scheduling_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    from tests.prefect_server import prefect_server

    # The scheduler looks for deployments to schedule every 60 s by default.
    monkeypatch.setenv("PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS", "2")
    with prefect_server(tmp_path / "server", services=True) as url:
        yield url


@pytest.fixture
def serving(scheduling_server: str, tmp_path: Path) -> Iterator[Path]:
    """serve.py on the test prefect.yaml; yields the RUNGFLOW_HOME its runs use."""
    env = dict(os.environ)
    env.update(
        PREFECT_API_URL=scheduling_server,
        PREFECT_HOME=str(tmp_path / "prefect"),
        RUNGFLOW_HOME=str(tmp_path / "home"),
        PREFECT_RUNNER_POLL_FREQUENCY="1",
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
    )
    env.pop("RUNGFLOW_DATABASE_URL", None)
    env.pop("RUNGFLOW_CHECKPOINTS", None)
    spec_file = prefect_yaml(tmp_path / "prefect.yaml")
    with open(tmp_path / "serve.log", "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "deployments/serve.py", "--file", str(spec_file)],
            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        try:
            yield tmp_path / "home"
        finally:
            stop_group(proc, signal.SIGINT)


def poll(read: Any, api_url: str, ok: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = run(read, api_url)
        if ok(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}: {value!r}")
        time.sleep(1)


def test_a_served_per_minute_cron_gets_a_run_that_writes_its_experiment(
    scheduling_server: str, serving: Path
) -> None:
    async def deployments(client: Any) -> dict[str, Any]:
        out = {}
        for name in ("every-minute", "paused"):
            try:
                out[name] = await client.read_deployment_by_name(f"tune/{name}")
            except Exception:
                return {}
        return out

    found = poll(deployments, scheduling_server, bool, 300, "serve.py to register")
    assert [s.active for s in found["every-minute"].schedules] == [True]
    assert [s.active for s in found["paused"].schedules] == [False]

    async def completed_scheduled_runs(client: Any) -> list[Any]:
        from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

        runs = await client.read_flow_runs(
            deployment_filter=DeploymentFilter(
                id=DeploymentFilterId(any_=[found["every-minute"].id])
            )
        )
        return [r for r in runs if r.state is not None and r.state.is_final()]

    # The first minute boundary, plus a cold flow-run start on a loaded machine.
    done = poll(completed_scheduled_runs, scheduling_server, bool, 420, "a scheduled run")
    flow_run = done[0]
    assert flow_run.state.is_completed(), flow_run.state
    assert flow_run.auto_scheduled
    when = flow_run.expected_start_time
    name = f"every-minute-{when.astimezone(UTC):%Y%m%dT%H%M}"
    store = EventStore(f"sqlite:///{serving / 'rungflow.db'}")
    try:
        states = {e.name: e.state for e in store.list_experiments()}
    finally:
        store.close()
    assert states.get(name) == "finished", states
    assert "never" not in states  # the paused schedule fired nothing

    async def paused_runs(client: Any) -> list[Any]:
        from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

        return await client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[found["paused"].id]))
        )

    assert run(paused_runs, scheduling_server) == []
