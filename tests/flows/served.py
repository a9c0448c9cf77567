"""A served ``tune`` deployment in a subprocess, against the session's real server.

``deployments/serve.py --only manual`` is started from the repository root with
its own RUNGFLOW_HOME, exactly as README tells users to run it; tests create
flow runs with ``run_deployment`` and drive them through the Prefect client the
way the UI does (Retry = set the run back to Scheduled; Cancel = Cancelling).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

from storage import EventStore
from tests.processes import stop_group

REPO = Path(__file__).resolve().parents[2]
DEPLOYMENT = "tune/manual"


@dataclass
class Served:
    """Handles to a served deployment: API URL, storage home, DB URL, log file."""

    api_url: str
    home: Path
    log: Path

    @property
    def db_url(self) -> str:
        return f"sqlite:///{self.home / 'rungflow.db'}"

    def store(self) -> EventStore:
        return EventStore(self.db_url)

    def has_experiment(self, name: str) -> bool:
        if not (self.home / "rungflow.db").exists():
            return False
        store = self.store()
        try:
            return store.has_experiment(name)
        finally:
            store.close()

    def events(self, name: str) -> list[Any]:
        store = self.store()
        try:
            return [r.event for r in store.read(name)]
        finally:
            store.close()


@contextmanager
def serve_deployment(api_url: str, root: Path, timeout: float = 120) -> Iterator[Served]:
    """Run ``deployments/serve.py --only manual`` until the context exits."""
    root.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env.update(
        PREFECT_API_URL=api_url,
        PREFECT_HOME=str(root / "prefect"),
        RUNGFLOW_HOME=str(root / "home"),
        # The runner polls for scheduled (and re-scheduled) runs; 10 s by default.
        PREFECT_RUNNER_POLL_FREQUENCY="1",
        PREFECT_LOGGING_LEVEL="INFO",
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
    )
    env.pop("RUNGFLOW_DATABASE_URL", None)
    env.pop("RUNGFLOW_CHECKPOINTS", None)
    log = root / "serve.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "deployments/serve.py", "--only", "manual", "--no-schedules"],
            cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
        try:
            deadline = time.monotonic() + timeout
            while not _deployment_exists(api_url):
                if proc.poll() is not None:
                    raise RuntimeError(f"serve.py exited:\n{log.read_text()[-3000:]}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"deployment not served:\n{log.read_text()[-3000:]}")
                time.sleep(0.5)
            yield Served(api_url=api_url, home=root / "home", log=log)
        finally:
            stop_group(proc, signal.SIGINT)


def _deployment_exists(api_url: str) -> bool:
    from prefect.exceptions import ObjectNotFound

    async def check(client: Any) -> bool:
        try:
            await client.read_deployment_by_name(DEPLOYMENT)
        except ObjectNotFound:
            return False
        return True

    return bool(run(check, api_url))


@contextmanager
def _api(api_url: str) -> Iterator[None]:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: api_url}):
        yield


def run(coro_fn: Any, api_url: str, *args: Any) -> Any:
    """Run ``coro_fn(client, *args)`` with a client on ``api_url``."""
    from prefect.client.orchestration import get_client

    async def main() -> Any:
        async with get_client() as client:
            return await coro_fn(client, *args)

    with _api(api_url):
        return asyncio.run(main())


def start(api_url: str, parameters: dict[str, Any]) -> UUID:
    """Create a flow run of the served deployment (like the UI's Run button)."""

    async def create(client: Any) -> UUID:
        deployment = await client.read_deployment_by_name(DEPLOYMENT)
        flow_run = await client.create_flow_run_from_deployment(
            deployment.id, parameters=parameters
        )
        return flow_run.id

    return run(create, api_url)


def wait_final(api_url: str, flow_run_id: UUID, timeout: float = 120) -> Any:
    """Poll until the flow run is in a final state; return the flow run."""

    async def poll(client: Any) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            flow_run = await client.read_flow_run(flow_run_id)
            if flow_run.state is not None and flow_run.state.is_final():
                return flow_run
            if time.monotonic() > deadline:
                raise TimeoutError(f"flow run still {flow_run.state!r}")
            await asyncio.sleep(0.5)

    return run(poll, api_url)


def retry_like_the_ui(api_url: str, flow_run_id: UUID) -> None:
    """What the UI's Retry button does: put the run back to Scheduled (AwaitingRetry)."""
    from prefect.states import Scheduled

    async def retry(client: Any) -> None:
        result = await client.set_flow_run_state(
            flow_run_id, Scheduled(name="AwaitingRetry", message="Retry from the UI")
        )
        assert result.status.value == "ACCEPT", result

    run(retry, api_url)


def cancel_like_the_ui(api_url: str, flow_run_id: UUID) -> None:
    """What the UI's Cancel button does: propose Cancelling; the runner kills the run."""
    from prefect.states import Cancelling

    async def cancel(client: Any) -> None:
        await client.set_flow_run_state(flow_run_id, Cancelling(), force=True)

    run(cancel, api_url)


def task_runs(api_url: str, flow_run_id: UUID) -> list[Any]:
    """All task runs of a flow run (every attempt)."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    async def read(client: Any) -> list[Any]:
        return await client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])), limit=200
        )

    return run(read, api_url)


def logs_and_artifacts(api_url: str, flow_run_ids: list[UUID]) -> str:
    """Every log message and artifact (data + description) of the flow runs, as text."""
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        LogFilter,
        LogFilterFlowRunId,
    )

    async def read(client: Any) -> str:
        log_filter = LogFilter(flow_run_id=LogFilterFlowRunId(any_=flow_run_ids))
        logs: list[Any] = []
        while True:  # the API serves at most 200 per page
            page = await client.read_logs(log_filter=log_filter, limit=200, offset=len(logs))
            logs += page
            if len(page) < 200:
                break
        artifacts = await client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=flow_run_ids))
        )
        parts = [log.message for log in logs]
        parts += [f"{a.key} {a.description} {a.data}" for a in artifacts]
        return "\n".join(parts)

    return run(read, api_url)
