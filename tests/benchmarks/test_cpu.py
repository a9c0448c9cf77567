"""benchmarks/_cpu: the CPU a benchmark's other processes used, exited ones included."""

from __future__ import annotations

import subprocess
import sys

from benchmarks._cpu import descendants_cpu

#: A child that starts a grandchild burning ``BURN`` s of CPU, waits for it
#: (its CPU moves to the child's "children" times), says so and stays alive.
_CHILD = """
import subprocess, sys
burn = "import time\\nwhile time.process_time() < {burn}: pass"
subprocess.run([sys.executable, "-c", burn], check=True)
print("reaped", flush=True)
sys.stdin.read()
"""
BURN = 0.3


def test_a_grandchild_reaped_by_a_live_child_is_still_billed() -> None:
    """A Ray worker reaped by the raylet, a Prefect server's subprocess: their CPU
    is in their live parent's children times, and must not vanish from the bill."""
    before = descendants_cpu()
    with subprocess.Popen(
        [sys.executable, "-c", _CHILD.format(burn=BURN)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    ) as child:
        assert child.stdout is not None and child.stdin is not None
        assert child.stdout.readline().strip() == "reaped"
        during = descendants_cpu()
        child.stdin.close()
    # (clock ticks: 10 ms on Linux)
    assert during - before >= BURN - 0.02
