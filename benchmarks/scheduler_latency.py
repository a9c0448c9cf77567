"""Decision latency (ask + tell) of HyperBand and ASHA with 10,000 trials in history.

Each scheduler is driven like the flow drives it (ask(1), tell the action's
events, tell results as simulated workers finish) until it holds
``--history`` trials; then the next ``--decisions`` decisions are timed. A
decision's cost is its ``ask`` plus every ``tell`` it causes (its own events
and the result that later comes back). The baseline is RandomScheduler
measured the same way in the same run. Goal: <= 1 ms per decision.

Run: ``python benchmarks/scheduler_latency.py [--history 10000] [--decisions 3000]``.
"""

from __future__ import annotations

import argparse
import heapq
import time
from collections.abc import Callable
from typing import Any

import numpy as np

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


def drive(scheduler: Scheduler, history: int, decisions: int, workers: int = 8) -> np.ndarray:
    """Per-decision seconds for ``decisions`` decisions taken after ``history`` trials."""
    jitter = np.random.default_rng(0)
    heap: list[tuple[float, int, RunSegment]] = []
    now, counter = 0.0, 0
    costs: list[float] = []
    timing = False
    while len(costs) < decisions:
        timing = timing or len(scheduler.trials) >= history
        while len(heap) < workers:
            t0 = time.perf_counter()
            action = scheduler.ask(1)[0]
            if not isinstance(action, Wait):
                for event in action_events(action):
                    scheduler.tell(event)
            elapsed = time.perf_counter() - t0
            if isinstance(action, Wait):
                break
            if timing:
                costs.append(elapsed)
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
        t0 = time.perf_counter()
        scheduler.tell(event)
        if timing and costs:
            costs[-1] += time.perf_counter() - t0  # results are part of the decision loop
    return np.array(costs)


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
    args = parser.parse_args()
    print(f"{args.history} trials in history, {args.decisions} timed decisions, 8 workers")
    print(f"{'scheduler':<28}{'mean ms':>9}{'p99 ms':>9}{'x random':>10}{'setup s':>9}")
    baseline = None
    for name, make in SCHEDULERS.items():
        t0 = time.perf_counter()
        costs = drive(make(), args.history, args.decisions) * 1e3
        setup = time.perf_counter() - t0 - costs.sum() / 1e3
        mean, p99 = float(costs.mean()), float(np.percentile(costs, 99))
        baseline = mean if baseline is None else baseline
        print(f"{name:<28}{mean:>9.3f}{p99:>9.3f}{mean / baseline:>10.1f}{setup:>9.1f}")


if __name__ == "__main__":
    main()
