"""Decision latency (ask + tell) of HyperBand and ASHA with 10,000 trials in history.

Each scheduler is driven like the flow drives it (ask(1), tell the action's
events, tell results as simulated workers finish) until it holds
``--history`` trials; then the next ``--decisions`` decisions are timed. A
decision's cost is its ``ask`` plus every ``tell`` it causes (its own events
and the result that later comes back). The baseline is RandomScheduler
measured the same way in the same run. Goals: <= 1 ms per decision on
average, max <= 5 ms.

The loop is live, collector included, so the max shows its pauses. Each
decision is timed twice: wall time and the thread's CPU time. On a shared
machine the wall max also counts the moments the OS ran someone else; the
CPU max does not, so it is the figure to hold against the goal there. ``--gc``
compares collector policies (see ``benchmarks/pbt_latency.py``): ``default``
(main's live run), ``freeze-once`` (one freeze when the history is built: main
after a resume) and ``runner`` (:class:`flows.engine.gc_policy.HeapFreezer`
as the runner uses it), repeated ``--repeats`` times with the order rotated.

Run: ``python benchmarks/scheduler_latency.py [--history 10000] [--decisions 3000]
[--gc default freeze-once runner] [--repeats 2]``.
"""

from __future__ import annotations

import argparse
import gc
import heapq
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from _gcprobe import GCProbe

from examples.synthetic import SPACE, synthetic_curve
from schedulers import (
    Budget,
    Done,
    RandomScheduler,
    RunSegment,
    SegmentFinished,
    Wait,
    action_events,
)
from schedulers.asha import ASHAScheduler
from schedulers.base import Scheduler
from schedulers.events import CheckpointRef
from schedulers.hyperband import HyperBandScheduler

COMMON: dict[str, Any] = {"space": SPACE, "metric": "loss", "mode": "min", "seed": 0}


def drive(scheduler: Scheduler, history: int, decisions: int, workers: int = 8,
          policy: str = "default") -> tuple[np.ndarray, np.ndarray]:
    """Per-decision seconds, (wall, thread CPU), for ``decisions`` decisions taken
    after ``history`` trials."""
    from flows.engine.gc_policy import HeapFreezer

    freezer = HeapFreezer() if policy == "runner" else None
    frozen = False
    jitter = np.random.default_rng(0)
    heap: list[tuple[float, int, RunSegment]] = []
    now, counter = 0.0, 0
    costs: list[float] = []
    cpu: list[float] = []
    timing = False
    while len(costs) < decisions:
        timing = timing or len(scheduler.trials) >= history
        if timing and not frozen and policy != "default":
            gc.freeze()  # the history exists: what a resume (or the runner) froze
            frozen = True
        while len(heap) < workers:
            t0, c0 = time.perf_counter(), time.thread_time()
            action = scheduler.ask(1)[0]
            events = [] if isinstance(action, Wait) else action_events(action)
            for event in events:
                scheduler.tell(event)
            elapsed, used = time.perf_counter() - t0, time.thread_time() - c0
            if freezer is not None:
                freezer.tick(len(events))
            if isinstance(action, Wait):
                break
            if timing:
                costs.append(elapsed)
                cpu.append(used)
            if not isinstance(action, RunSegment):
                if isinstance(action, Done):
                    raise RuntimeError(f"{scheduler.name} finished before the measurement")
                continue
            counter += 1
            duration = (action.stop - action.start) * float(jitter.lognormal(0, 0.3))
            heapq.heappush(heap, (now + duration, counter, action))
        now, _, action = heapq.heappop(heap)
        loss = synthetic_curve(action.config, action.stop)
        report = {"resource": action.stop, "loss": loss}
        ref = CheckpointRef(f"b/{action.trial_id}/{action.stop}", 0, "", action.trial_id, 0.0)
        event = SegmentFinished(action.trial_id, action.start, action.stop, (report,), report, ref)
        t0, c0 = time.perf_counter(), time.thread_time()
        scheduler.tell(event)
        if timing and costs:
            costs[-1] += time.perf_counter() - t0  # results are part of the decision loop
            cpu[-1] += time.thread_time() - c0
        if freezer is not None:
            freezer.tick(1)
    return np.array(costs), np.array(cpu)


SCHEDULERS: dict[str, Callable[[], Scheduler]] = {
    "random (baseline)": lambda: RandomScheduler(**COMMON, max_t=81, budget=Budget()),
    "hyperband": lambda: HyperBandScheduler(**COMMON, max_t=81, reduction_factor=3),
    "asha promotion": lambda: ASHAScheduler(
        **COMMON, max_t=81, grace_period=1, reduction_factor=3
    ),
    "asha stopping": lambda: ASHAScheduler(
        **COMMON, max_t=81, grace_period=1, reduction_factor=3, variant="stopping"
    ),
    "asha promotion, 3 brackets": lambda: ASHAScheduler(
        **COMMON, max_t=81, grace_period=1, reduction_factor=3, brackets=3
    ),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--history", type=int, default=10_000)
    parser.add_argument("--decisions", type=int, default=3_000)
    parser.add_argument("--gc", nargs="+", default=["default"],
                        choices=["default", "freeze-once", "runner"])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--only", nargs="+", help="scheduler names to run (default: all)")
    args = parser.parse_args()
    print(f"{args.history} trials in history, {args.decisions} timed decisions, 8 workers; "
          "ms per decision")
    print(f"{'scheduler / gc policy':<40}{'mean':>8}{'p50':>8}{'p95':>8}{'p99':>8}{'max':>9}"
          f"{'cpu p95':>8}{'cpu max':>8}{'x random':>9}{'setup s':>8}")
    baseline = None
    maxes: dict[str, list[float]] = {}
    cpu_maxes: dict[str, list[float]] = {}
    for rep in range(args.repeats):
        policies = args.gc if rep % 2 == 0 else list(reversed(args.gc))
        for name, make in SCHEDULERS.items():
            if args.only and name not in args.only:
                continue
            for policy in policies:
                gc.collect()
                t0 = time.perf_counter()
                probe = GCProbe().start()
                costs, cpu = drive(make(), args.history, args.decisions, policy=policy)
                costs, cpu = costs * 1e3, cpu * 1e3
                probe.stop()
                gc.unfreeze()
                setup = time.perf_counter() - t0 - costs.sum() / 1e3
                mean = float(costs.mean())
                p50, p95, p99 = (float(np.percentile(costs, q)) for q in (50, 95, 99))
                baseline = mean if baseline is None else baseline
                label = f"{name} / {policy}"
                maxes.setdefault(label, []).append(float(costs.max()))
                cpu_maxes.setdefault(label, []).append(float(cpu.max()))
                print(f"{label:<40}{mean:>8.3f}{p50:>8.3f}{p95:>8.3f}{p99:>8.3f}"
                      f"{costs.max():>9.2f}{float(np.percentile(cpu, 95)):>8.3f}"
                      f"{cpu.max():>8.2f}{mean / baseline:>9.1f}{setup:>8.1f}   "
                      f"{probe.summary()}", flush=True)
    for label, values in maxes.items():
        print(f"max ms over repeats, {label}: min {min(values):.2f} median "
              f"{statistics.median(values):.2f} max {max(values):.2f}; CPU max: min "
              f"{min(cpu_maxes[label]):.2f} median {statistics.median(cpu_maxes[label]):.2f} "
              f"max {max(cpu_maxes[label]):.2f}")
    print(f"load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
