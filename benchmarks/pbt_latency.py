"""PBT decision latency with a population of 1,000, against RandomScheduler.

Drives each scheduler through the flow's protocol with simulated, instant
training (no objective cost): for every decision it times ``ask(1)`` plus the
``tell`` of the action's events, and separately the ``tell`` of the
``SegmentFinished`` that comes back. A PBT decision at a boundary ranks the
member among 1,000 latest scores (a bisect in a list kept sorted by ``tell``),
draws a donor and explores its config.

RandomScheduler is timed in the same run on the same number of decisions (each
a new trial trained 0 -> max_t in one segment) as the floor for "a decision".

Run: ``python benchmarks/pbt_latency.py [--population 1000] [--generations 5]``.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
import zlib
from typing import Any

from schedulers import (
    Budget,
    CheckpointRef,
    Done,
    RandomScheduler,
    RunSegment,
    SearchSpace,
    SegmentFinished,
    Wait,
    action_events,
)
from schedulers.base import Scheduler
from schedulers.pbt import PopulationBasedTraining

SPACE = SearchSpace.parse(
    {
        "lr": {"type": "float", "low": 1e-5, "high": 1.0, "log": True},
        "width": {"type": "int", "low": 16, "high": 512, "step": 16},
        "dropout": {"type": "float", "low": 0.0, "high": 0.5, "step": 0.05},
        "act": {"type": "categorical", "choices": ["relu", "tanh", "gelu"]},
        "momentum": {"type": "float", "low": 0.8, "high": 0.99},
    }
)
# Every parameter explores with its distribution, momentum over a list (Ray style).
MUTATIONS: dict[str, Any] = {**SPACE, "momentum": [0.8, 0.9, 0.95, 0.99]}


def loss(config: dict[str, Any], stop: float, tid: str) -> float:
    # crc32, not hash(): str hashes change per process and the runs must repeat.
    noise = (zlib.crc32(f"{tid}/{stop}".encode()) % 1000) / 1e5
    return (math.log10(config["lr"]) + 2.5) ** 2 + config["dropout"] + 1.0 / (1 + stop) + noise


def drive(s: Scheduler, workers: int) -> tuple[list[float], list[float], int]:
    """(decision ms, result-tell ms, exploits); in-flight kept at ``workers``."""
    decide: list[float] = []
    result: list[float] = []
    inflight: list[RunSegment] = []
    exploits = 0
    while True:
        while len(inflight) < workers:
            t0 = time.perf_counter()
            action = s.ask(1)[0]
            for e in action_events(action):
                s.tell(e)
            decide.append(time.perf_counter() - t0)
            if isinstance(action, Wait):
                decide.pop()
                break
            if isinstance(action, Done):
                return [1e3 * x for x in decide], [1e3 * x for x in result], exploits
            if isinstance(action, RunSegment):
                exploits += action.perturbation is not None
                inflight.append(action)
        a = inflight.pop(0)
        metrics = {"resource": a.stop, "loss": loss(dict(a.config), a.stop, a.trial_id)}
        ref = CheckpointRef(f"b/{a.trial_id}/{a.start:g}-{a.stop:g}", 1, "", a.trial_id, a.stop)
        event = SegmentFinished(a.trial_id, a.start, a.stop, (metrics,), metrics, ref)
        t0 = time.perf_counter()
        s.tell(event)
        result.append(time.perf_counter() - t0)


def summary(name: str, decide: list[float], result: list[float]) -> str:
    q = statistics.quantiles(decide, n=100)
    return (
        f"{name:<22} {len(decide):>8} {statistics.mean(decide):>9.3f} {q[49]:>8.3f} "
        f"{q[98]:>8.3f} {statistics.mean(result):>10.3f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--population", type=int, default=1000)
    parser.add_argument("--generations", type=int, default=5)
    parser.add_argument("--workers", type=int, default=64)
    args = parser.parse_args()
    n = args.population
    print(f"population {n}, {args.generations} generations, {args.workers} segments in flight")
    print(f"{'scheduler':<22} {'decisions':>8} {'mean ms':>9} {'p50 ms':>8} {'p99 ms':>8} "
          f"{'tell ms':>10}")
    means = {}
    for name, factory in [
        ("pbt async truncation", lambda: PopulationBasedTraining(
            space=SPACE, metric="loss", perturbation_interval=1, population_size=n,
            max_generations=args.generations, hyperparam_mutations=MUTATIONS)),
        ("pbt async tournament", lambda: PopulationBasedTraining(
            space=SPACE, metric="loss", perturbation_interval=1, population_size=n,
            max_generations=args.generations, exploit="binary_tournament")),
        ("pbt sync truncation", lambda: PopulationBasedTraining(
            space=SPACE, metric="loss", perturbation_interval=1, population_size=n,
            max_generations=args.generations, synch=True)),
        ("random", lambda: RandomScheduler(
            space=SPACE, metric="loss", max_t=1,
            budget=Budget(max_trials=n * args.generations))),
    ]:
        decide, result, exploits = drive(factory(), args.workers)
        means[name] = statistics.mean(decide)
        print(summary(name, decide, result) + (f"   exploits {exploits}" if exploits else ""))
    base = means["random"]
    for name, m in means.items():
        if name != "random":
            print(f"{name}: {m / base:.1f}x random per decision")


if __name__ == "__main__":
    main()
