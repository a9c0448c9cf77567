"""What one overhead variant costs: wall time, and CPU in every process it used.

A Prefect task is cheap at the call site and expensive in the API server that
records it, seconds later; Ray's trials run in worker processes next to a
raylet and a GCS. Timing the driver alone leaves most of the cost out, so a
variant is billed the CPU of this process and of all its other processes
(read from ``/proc``, see :func:`benchmarks._cpu.descendants_cpu`), and a
Prefect server's backlog is drained before a variant starts and again before
its CPU is read, so that one variant's backlog is never billed to the next.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from benchmarks._cpu import descendants_cpu, drain, spread

__all__ = ["Cost", "in_turn", "measure", "summarise"]

#: ``{"wall": s, "client": s, "others": s}`` for one run of one variant.
Cost = dict[str, float]


def _cpu() -> tuple[float, float]:
    t = os.times()
    return t.user + t.system, descendants_cpu()


def measure(run: Callable[[], Any]) -> Cost:
    """Run ``run`` once: its wall seconds, this process's CPU and the others' CPU."""
    drain()
    client0, others0 = _cpu()
    start = time.perf_counter()
    run()
    wall = time.perf_counter() - start
    drain()
    client1, others1 = _cpu()
    return {"wall": wall, "client": client1 - client0, "others": others1 - others0}


def in_turn(variants: Sequence[tuple[str, Callable[[], Any]]], repeat: int) -> dict[str, Cost]:
    """Measure ``variants`` in an order rotated by ``repeat``, so none always goes first."""
    k = repeat % len(variants)
    return {label: measure(run) for label, run in [*variants[k:], *variants[:k]]}


def summarise(runs: Sequence[Mapping[str, float]], results: int) -> dict[str, str]:
    """``min / median / max`` ms per result of wall time and of total CPU over ``runs``."""
    wall = [1000 * r["wall"] / results for r in runs]
    cpu = [1000 * (r["client"] + r["others"]) / results for r in runs]
    return {"wall": spread(wall), "cpu": spread(cpu)}
