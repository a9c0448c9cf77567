"""Stopping the process groups tests start (servers, `serve.py`, clusters), and
seeing whether a process is still alive."""

from __future__ import annotations

import os
import signal
import subprocess


def stop_group(
    proc: subprocess.Popen[bytes] | subprocess.Popen[str],
    sig: int = signal.SIGTERM,
    timeout: float = 20.0,
) -> None:
    """Send ``sig`` to ``proc``'s process group and wait; SIGKILL it after ``timeout`` s.

    ``proc`` must have been started with ``start_new_session=True``. A group
    that is already gone is fine.
    """
    try:
        os.killpg(proc.pid, sig)
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    except ProcessLookupError:
        pass


def alive(pid: int) -> bool:
    """Whether ``pid`` is running (a zombie, exited but not reaped, is not)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
