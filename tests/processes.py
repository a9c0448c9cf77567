"""Stopping the process groups tests start (servers, `serve.py`, clusters)."""

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
