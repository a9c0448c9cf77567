"""Processes die with their parent, even one killed by SIGKILL.

Real processes, a real SIGKILL. The test waits for the event itself: the
watched process and the test share a pipe, and the pipe reaches end-of-file
only once every process holding it has exited; each wait is bounded.
"""

from __future__ import annotations

import os
import selectors
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.processes import alive
from tests.waiting import wait_for

ROOT = Path(__file__).resolve().parents[2]

#: Starts ``CHILD`` (with this process's pid filled in), then waits forever.
MIDDLE = """
import os, subprocess, sys, threading
subprocess.Popen([sys.executable, "-c", sys.argv[1].replace("PARENT", str(os.getpid()))])
threading.Event().wait()
"""
#: Watches its parent, says so on stdout (the test's pipe), then waits forever.
CHILD = """
import os, threading
from flows.parent_watch import die_with_parent
die_with_parent(PARENT, use_prctl=False)
print("ready", os.getpid(), flush=True)
threading.Event().wait()
"""
#: A pool on WatchedSpawnContext whose worker's initializer never returns and
#: never watches anything itself.
POOL = """
import threading
from concurrent.futures import ProcessPoolExecutor
from flows.parent_watch import WatchedSpawnContext
from tests.flows.test_parent_watch import announce_and_block
pool = ProcessPoolExecutor(1, mp_context=WatchedSpawnContext(), initializer=announce_and_block)
pool.submit(print)
threading.Event().wait()
"""


def announce_and_block() -> None:
    """A worker initializer still busy (as one importing Prefect is) when its parent dies."""
    print("ready", os.getpid(), flush=True)
    threading.Event().wait()


def read(fd: int, timeout: float, until: bytes | None = None) -> bytes:
    """Read ``fd`` until ``until`` appears, or (None) until end-of-file; bounded."""
    data = b""
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        while until is None or until not in data:
            left = deadline - time.monotonic()
            if left <= 0 or not selector.select(left):
                raise AssertionError(f"timed out after {timeout:g} s; read {data!r}")
            chunk = os.read(fd, 4096)
            if not chunk:
                if until is not None:
                    raise AssertionError(f"end of file before {until!r}; read {data!r}")
                return data
            data += chunk
    return data


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize(
    ("script", "arg"), [(MIDDLE, CHILD), (POOL, "")], ids=["die_with_parent", "pool-worker"]
)
def test_a_watched_process_exits_when_its_parent_is_killed(
    tmp_path: Path, script: str, arg: str
) -> None:
    errors = tmp_path / "stderr"
    with errors.open("wb") as stderr:
        middle = subprocess.Popen(
            [sys.executable, "-c", script, arg], cwd=ROOT, stdout=subprocess.PIPE,
            stderr=stderr, env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
    assert middle.stdout is not None
    fd = middle.stdout.fileno()
    try:
        line = read(fd, 120, until=b"\n")
        watched = int(line.split()[1])
        middle.kill()  # SIGKILL: nothing in the parent gets to clean up
        middle.wait()
        # End-of-file: every process holding the pipe (the watched one, and a
        # pool's resource tracker, which exits after its clients) has exited.
        read(fd, 30)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\nstderr: {errors.read_text()[-2000:]}") from None
    finally:
        if middle.poll() is None:
            middle.kill()
            middle.wait()
        middle.stdout.close()
    # Its files close a moment before its exit completes.
    wait_for(lambda: not alive(watched), 10, f"{watched} to finish exiting")

