"""Wait for something to happen, bounded: the one way tests synchronise.

A test never sleeps a fixed time hoping that something happened meanwhile;
it names the condition, checks it until it holds, and fails with what it
was waiting for when the bound runs out (a loaded 2-core machine makes
things slower, never wrong).
"""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_for(predicate: Callable[[], object], timeout: float, what: str,
             interval: float = 0.05) -> None:
    """Return once ``predicate()`` is true; raise AssertionError after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)  # a poll interval, not a guess at how long things take
