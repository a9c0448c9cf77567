"""One Prefect API per ``rungflow run``, owned by it and gone with it.

Without ``PREFECT_API_URL`` Prefect boots an ephemeral API server in every
process that creates a client: the flow process, and again in each process-pool
or Dask worker (~225 MB each). Those servers are stopped only by ``atexit``,
so a killed run leaves them behind, and they share the terminal's process
group, so a Ctrl-C kills the API before the flow has reported its last states.

:func:`owned_prefect_api` starts one server instead (the same uvicorn app
Prefect's ephemeral mode runs, on a free local port), points this process's
settings and ``PREFECT_API_URL`` at it so every worker the flow starts uses
it too, and stops it after Prefect's event and log workers have drained. The
server runs in its own session (a Ctrl-C to the terminal does not reach it)
and cannot outlive its parent: ``PR_SET_PDEATHSIG`` kills it when the parent
dies, even by SIGKILL, and a watch on the parent does the same where prctl is
unavailable (:func:`flows.parent_watch.die_with_parent`). Its output goes to
``$PREFECT_HOME/rungflow-api.log``. The URL also reaches Prefect's global
settings, so threads without this thread's settings context use the same API.

Run as a script (``python -m flows.prefect_api --parent PID --port N``) it is
that server; the command line carries :data:`MARKER`.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["MARKER", "SERVER_DEFAULTS", "OwnedServer", "drain_prefect_workers", "owned_prefect_api"]

#: On the owned server's command line: how tests and people find it in ``ps``.
MARKER = "rungflow-owned-prefect-api"
_APP = "prefect.server.api.server:create_app"
#: Server settings that halve its CPU per task without changing what the UI
#: shows (``benchmarks/prefect_settings.py``): task runs and events are
#: written in batches instead of one transaction each. A user's own value wins.
SERVER_DEFAULTS = {
    "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_BATCH_SIZE": "200",
    "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_READ_BATCH_SIZE": "50",
    "PREFECT_SERVER_SERVICES_EVENT_PERSISTER_BATCH_SIZE": "500",
    "PREFECT_SERVER_SERVICES_EVENT_PERSISTER_READ_BATCH_SIZE": "50",
}
#: uvicorn's exit code when the port is taken (another process won the race).
_PORT_IN_USE = 3


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class OwnedServer:
    """A Prefect API server subprocess that dies with this process.

    Args:
        startup_timeout: Seconds to wait for ``/health`` (a cold start migrates
            the database: slow on a loaded machine).
        log_path: Where the server's output goes.
    """

    def __init__(self, startup_timeout: float = 120.0, log_path: Path | None = None) -> None:
        self.startup_timeout = startup_timeout
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    def _spawn(self) -> subprocess.Popen[bytes]:
        from prefect.settings import get_current_settings

        self.port = _free_port()
        env = {
            **SERVER_DEFAULTS,
            **os.environ,
            **get_current_settings().to_environment_variables(exclude_unset=True),
            # What Prefect's own ephemeral server sets: no UI, ephemeral services.
            "PREFECT_UI_ENABLED": "0",
            "PREFECT_SERVER_UI_ENABLED": "0",
            "PREFECT__SERVER_EPHEMERAL": "1",
            "PREFECT__SERVER_FINAL": "1",
        }
        env.pop("PREFECT_API_URL", None)
        out: Any = subprocess.DEVNULL
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            out = open(self.log_path, "ab")  # noqa: SIM115 - the child holds it
        try:
            return subprocess.Popen(
                [sys.executable, "-m", "flows.prefect_api", "--parent", str(os.getpid()),
                 "--port", str(self.port), "--pdeathsig",
                 "1" if threading.current_thread() is threading.main_thread() else "0",
                 MARKER, _APP],
                env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                # Own session: a Ctrl-C or `kill -TERM -PGID` to the run's group must
                # not stop the API before the flow has reported its final states.
                start_new_session=True,
            )
        finally:
            if not isinstance(out, int):
                out.close()

    def start(self) -> str:
        """Start the server and wait until it answers; return its API URL.

        Raises:
            RuntimeError: it exited or did not answer within ``startup_timeout``.
        """
        self.proc = self._spawn()
        deadline = time.monotonic() + self.startup_timeout
        while True:
            code = self.proc.poll()
            if code == _PORT_IN_USE:
                self.proc = self._spawn()
                continue
            if code is not None:
                raise RuntimeError(
                    f"the Prefect API server exited with code {code}; see {self.log_path}"
                )
            try:
                with urllib.request.urlopen(f"{self.api_url}/health", timeout=2) as r:
                    if r.status == 200:
                        return self.api_url
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(
                    f"the Prefect API server did not answer within {self.startup_timeout:g} s; "
                    f"see {self.log_path}"
                )
            time.sleep(0.1)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop gracefully (its services flush what they hold), then kill."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def drain_prefect_workers(timeout: float = 10.0) -> None:
    """Send what Prefect's event and log workers still hold, before the API goes.

    Task-run states travel as events: stopping the API first loses the last
    ones (and prints ``EventsWorker failed to process item`` floods).
    """
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    for worker in (APILogWorker, EventsWorker):
        with contextlib.suppress(Exception):
            worker.drain_all(timeout=timeout)


@contextlib.contextmanager
def owned_prefect_api(startup_timeout: float | None = None) -> Iterator[str | None]:
    """Use the configured Prefect API, or start one owned by this process.

    ``startup_timeout`` defaults to Prefect's
    ``PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS``.

    Yields the API URL, or None when ``PREFECT_API_URL`` was already set (a
    real server, or the test harness): then nothing is started or stopped.
    On exit, Prefect's event and log workers are drained first, then the owned
    server is stopped, so the run's final states reach Prefect's database.
    """
    from prefect.settings import PREFECT_API_URL, get_current_settings, temporary_settings

    if PREFECT_API_URL.value():
        yield None
        return
    settings = get_current_settings()
    if startup_timeout is None:
        startup_timeout = float(settings.server.ephemeral.startup_timeout_seconds)
    server = OwnedServer(startup_timeout, log_path=Path(settings.home) / "rungflow-api.log")
    url = server.start()
    previous = os.environ.get("PREFECT_API_URL")
    # Workers (process pool, Dask LocalCluster) inherit the environment; Prefect
    # also ships this process's settings to them with each task.
    os.environ["PREFECT_API_URL"] = url
    _refresh_global_settings()
    try:
        with temporary_settings(updates={PREFECT_API_URL: url}):
            try:
                yield url
            finally:
                drain_prefect_workers()
    finally:
        server.stop()
        if previous is None:
            os.environ.pop("PREFECT_API_URL", None)
        else:
            os.environ["PREFECT_API_URL"] = previous
        _refresh_global_settings()


def _refresh_global_settings() -> None:
    """Rebuild Prefect's process-global settings from the environment.

    ``temporary_settings`` reaches only this thread's context and contexts
    copied from it. A thread started without one (Prefect's own: the process
    pool's message forwarder, which sends the workers' task-run events) reads
    the global settings Prefect built when it was imported, before
    ``PREFECT_API_URL`` was set, and would boot an ephemeral API server of its
    own: a second server per run, outside the owned one's parent-death watch,
    which then outlives a killed run.
    """
    from prefect.context import refresh_global_settings_context

    refresh_global_settings_context()


# --------------------------------------------------------------- the child side
def _serve(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="rungflow's owned Prefect API server.")
    parser.add_argument("--parent", type=int, required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--pdeathsig", default="1")
    parser.add_argument("rest", nargs="*")
    args = parser.parse_args(argv)
    from flows.parent_watch import die_with_parent

    die_with_parent(args.parent, use_prctl=args.pdeathsig == "1")
    import uvicorn

    uvicorn.run(
        _APP, factory=True, host="127.0.0.1", port=args.port, log_level="error", lifespan="on"
    )


if __name__ == "__main__":
    _serve()
