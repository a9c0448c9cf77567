"""One owned Prefect API per ``rungflow run``, gone with it; clean stops.

Real ``rungflow run`` subprocesses with no ``PREFECT_API_URL`` (so each run
starts the API it owns), real signals, real SQLite and Prefect databases.
Tests wait for events (a segment started, the process exited, a pid gone),
each bounded, never for fixed times.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from flows.prefect_api import MARKER
from storage import EventStore
from tests.log_checks import assert_log_integrity
from tests.processes import alive
from tests.waiting import wait_for

pytestmark = pytest.mark.slow

CLI = [sys.executable, "-m", "flows.cli"]
#: What a Prefect API server has on its command line (ours or Prefect's own).
SERVER_SIGNS = ("prefect.server.api.server:create_app", MARKER)
NOISE = ("Traceback", "EventsWorker", "ws://", "httpx", "Error flushing", "Crash detected")


@pytest.fixture(scope="module")
def prefect_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One PREFECT_HOME for the module: its database is migrated once."""
    return tmp_path_factory.mktemp("prefect-home")


def write_spec(path: Path, task_runner: str = "thread", trials: int = 6) -> Path:
    path.write_text(json.dumps({
        "name": "life",
        "trainable": "faults",
        "metric": "loss",
        "space": {"x": {"type": "float", "low": 0.0, "high": 1.0}},
        "scheduler": "random",
        "scheduler_args": {"max_t": 2},
        "budget": {"max_trials": trials},
        "max_concurrency": 2,
        "task_runner": task_runner,
        # Slow enough that a signal lands mid-segment.
        "trainable_args": {"seconds_per_unit": 0.5},
    }))
    return path


def env_for(tmp: Path, prefect_home: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PREFECT_API_URL", None)  # the run must start (and own) its API
    env.update(
        PREFECT_HOME=str(prefect_home),
        RUNGFLOW_HOME=str(tmp / "home"),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="300",
        COLUMNS="200",
    )
    env.pop("RUNGFLOW_DATABASE_URL", None)
    env.pop("RUNGFLOW_CHECKPOINTS", None)
    return env


def count(db: Path, kind: str) -> int:
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
            row = conn.execute("select count(*) from events where kind = ?", (kind,))
            return int(row.fetchone()[0])
    except sqlite3.OperationalError:
        return 0


def started_segments(db: Path) -> int:
    return count(db, "SegmentStarted")


def processes() -> dict[int, tuple[int, str]]:
    """pid -> (ppid, command line) for every process we can see."""
    out: dict[int, tuple[int, str]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, IndexError, ValueError):
            continue
        out[int(entry)] = (ppid, cmd)
    return out


def descendants(pid: int) -> dict[int, str]:
    table = processes()
    found: dict[int, str] = {}
    frontier = [pid]
    while frontier:
        parent = frontier.pop()
        for child, (ppid, cmd) in table.items():
            if ppid == parent and child not in found:
                found[child] = cmd
                frontier.append(child)
    return found


def servers_of(pid: int) -> list[int]:
    """API servers in ``pid``'s tree, plus any still naming it as the parent it owns."""
    tree = descendants(pid)
    mine = [p for p, cmd in tree.items() if any(s in cmd for s in SERVER_SIGNS)]
    orphans = [
        p for p, (_, cmd) in processes().items()
        if MARKER in cmd and f"--parent {pid} " in cmd and p not in mine
    ]
    return mine + orphans


@pytest.fixture
def runs() -> Iterator[list[subprocess.Popen[str]]]:
    """Started runs; whatever a test leaves running is killed with its tree."""
    started: list[subprocess.Popen[str]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            tree = list(descendants(proc.pid))
            os.killpg(proc.pid, signal.SIGKILL)
            for pid in tree:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
            proc.wait()


def start(runs: list[subprocess.Popen[str]], spec: Path, tmp: Path,
          prefect_home: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [*CLI, "run", str(spec)], env=env_for(tmp, prefect_home), cwd=tmp,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )
    runs.append(proc)
    return proc


def state_of(tmp: Path) -> str:
    store = EventStore(f"sqlite:///{tmp / 'home' / 'rungflow.db'}")
    try:
        return {e.name: e.state for e in store.list_experiments()}["life"]
    finally:
        store.close()


@pytest.mark.parametrize("task_runner", ["thread", "process"])
def test_sigkill_leaves_no_server_and_workers_share_the_runs_api(
    tmp_path: Path, prefect_home: Path, runs: list[subprocess.Popen[str]], task_runner: str
) -> None:
    spec = write_spec(tmp_path / "spec.json", task_runner)
    proc = start(runs, spec, tmp_path, prefect_home)
    db = tmp_path / "home" / "rungflow.db"
    # A result means the workers are up, so the tree below holds them (a
    # worker watches its parent from its first moment: see flows.parent_watch).
    # When Prefect's threads start a server of their own is a race with this
    # check: test_threads_without_the_flows_context_use_the_runs_api_too pins it.
    wait_for(lambda: count(db, "SegmentFinished") >= 1 or proc.poll() is not None, 300,
             "a result")
    assert proc.poll() is None, proc.communicate()[1][-3000:]
    # Exactly one API for the whole run: the workers use it, none boots its own.
    servers = servers_of(proc.pid)
    assert len(servers) == 1, descendants(proc.pid)
    tree = list(descendants(proc.pid))
    os.kill(proc.pid, signal.SIGKILL)  # the main pid only: nothing gets to clean up
    proc.wait()
    wait_for(lambda: not any(alive(p) for p in tree), 10, f"{tree} to exit after SIGKILL")
    assert not servers_of(proc.pid)


@pytest.mark.parametrize(
    ("signum", "to_group", "twice"),
    [(signal.SIGINT, True, False), (signal.SIGTERM, False, False), (signal.SIGINT, True, True)],
    ids=["ctrl-c-to-group", "sigterm-to-pid", "second-ctrl-c"],
)
def test_a_stop_signal_exits_cleanly_interrupted_and_resume_finishes(
    tmp_path: Path, prefect_home: Path, runs: list[subprocess.Popen[str]],
    signum: int, to_group: bool, twice: bool,
) -> None:
    spec = write_spec(tmp_path / "spec.json")
    proc = start(runs, spec, tmp_path, prefect_home)
    db = tmp_path / "home" / "rungflow.db"
    wait_for(lambda: started_segments(db) >= 1 or proc.poll() is not None, 300, "a segment")
    assert proc.poll() is None, proc.communicate()[1][-3000:]
    tree = list(descendants(proc.pid))

    def send() -> None:
        (os.killpg if to_group else os.kill)(proc.pid, signum)

    def gone_or_pressed_again() -> bool:
        if proc.poll() is not None:
            return True
        send()
        return False

    send()
    if twice:
        # Two signals sent back to back can reach Python as one (a signal that
        # arrives while the first is still pending is merged into it): that
        # would test the first-signal path. Press again, as a person does,
        # until the run is gone; every press after the first is a second one.
        wait_for(gone_or_pressed_again, 10, "the run to exit after a second signal",
                 interval=0.2)
    _, err = proc.communicate(timeout=10)
    assert proc.returncode == 128 + signum, err[-3000:]
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines[-1].startswith("interrupted: "), err[-3000:]
    assert "will be re-run; resume with rungflow run" in lines[-1]
    assert str(spec) in lines[-1]
    assert not [n for n in NOISE if n in err], err[-3000:]
    assert state_of(tmp_path) == "interrupted"
    wait_for(lambda: not any(alive(p) for p in tree), 10, "the run's processes to exit")

    again = start(runs, spec, tmp_path, prefect_home)
    out, err = again.communicate(timeout=600)
    assert again.returncode == 0, err[-3000:]
    assert not [n for n in NOISE if n in err + out], (out + err)[-3000:]
    assert state_of(tmp_path) == "finished"
    store = EventStore(f"sqlite:///{db}")
    try:
        assert_log_integrity([r.event for r in store.read("life")])
    finally:
        store.close()


def test_a_finished_run_leaves_its_final_states_in_prefects_database(
    tmp_path: Path, prefect_home: Path, runs: list[subprocess.Popen[str]]
) -> None:
    spec = write_spec(tmp_path / "spec.json", trials=3)
    proc = start(runs, spec, tmp_path, prefect_home)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    assert not [n for n in NOISE if n in err + out], (out + err)[-3000:]
    assert not servers_of(proc.pid)
    with sqlite3.connect(prefect_home / "prefect.db") as conn:
        (flow_run_id, state), = conn.execute(
            "select id, state_type from flow_run order by created desc limit 1"
        ).fetchall()
        states = conn.execute(
            "select state_type from task_run where flow_run_id = ?", (flow_run_id,)
        ).fetchall()
    assert state == "COMPLETED"
    assert len(states) == 3
    assert {s for (s,) in states} == {"COMPLETED"}


def test_under_a_configured_api_nothing_is_started(prefect_harness: None) -> None:
    from flows.prefect_api import owned_prefect_api

    before = descendants(os.getpid())
    with owned_prefect_api() as url:
        assert url is None
        assert descendants(os.getpid()).keys() <= before.keys()


def test_threads_without_the_flows_context_use_the_runs_api_too(
    tmp_path: Path, prefect_home: Path
) -> None:
    # Prefect's own threads (the process pool's event forwarder) start with an
    # empty context: one that read settings without the run's URL would boot
    # a Prefect API server of its own.
    script = """if True:
        import threading
        from prefect.settings import get_current_settings
        from flows.prefect_api import owned_prefect_api

        def in_a_new_thread():
            seen = []
            thread = threading.Thread(target=lambda: seen.append(get_current_settings().api.url))
            thread.start()
            thread.join()
            return seen[0]

        with owned_prefect_api() as url:
            inside = in_a_new_thread()
        print(url, inside, in_a_new_thread())
    """
    done = subprocess.run(
        [sys.executable, "-c", script], env=env_for(tmp_path, prefect_home), cwd=tmp_path,
        capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    url, inside, after = done.stdout.split()
    assert url.startswith("http://127.0.0.1:")
    assert inside == url
    assert after == "None"
