"""PBT decision latency with a population of 1,000, against RandomScheduler.

Drives each scheduler through the flow's protocol with simulated, instant
training (no objective cost): for every decision it times ``ask(1)`` plus the
``tell`` of the action's events, and separately the ``tell`` of the
``SegmentFinished`` that comes back. A PBT decision at a boundary ranks the
member among 1,000 latest scores (a bisect in a list kept sorted by ``tell``),
draws a donor and explores its config.

RandomScheduler is timed in the same run on the same number of decisions (each
a new trial trained 0 -> max_t in one segment) as the floor for "a decision".

The loop is live: the collector runs as it would in the flow, so the max
shows its pauses; on a loaded machine it also shows the OS preempting the
process, so each decision's thread CPU time is printed next to its wall time
(``cpu p95``, ``cpu max``: what the decision itself costs). The experiment's
last decision (``Done``, which names the best of all trials) is timed on its
own (``done``) and left out of the percentiles. ``--gc`` picks the collector policies compared, each
repeated ``--repeats`` times, interleaved: ``default`` (nothing: main's live
run), ``freeze-once`` (one ``gc.freeze()`` once the population exists: main
after a resume), ``runner`` (the runner's :class:`flows.engine.gc_policy.HeapFreezer`,
a freeze every 1,000 events folded). It prints p50/p95/max per decision.

Run: ``python benchmarks/pbt_latency.py [--population 10000] [--generations 3]
[--gc default freeze-once runner] [--repeats 2] [--json figures.json]``;
``benchmarks/pbt_latency_ab.py`` runs it against older source trees in one run.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import statistics
import time
import zlib
from collections.abc import Callable
from typing import Any

from _gcprobe import GCProbe

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


class Run:
    """Figures of one drive: per decision wall and thread CPU ms, per result-tell ms."""

    def __init__(self) -> None:
        self.decide: list[float] = []
        self.cpu: list[float] = []
        self.result: list[float] = []
        self.done = 0.0  # wall ms of the last decision (Done)
        self.exploits = 0

    def figures(self) -> dict[str, float]:
        wall = statistics.quantiles(self.decide, n=100)
        cpu = statistics.quantiles(self.cpu, n=100)
        return {
            "decisions": len(self.decide), "mean": statistics.mean(self.decide),
            "p50": wall[49], "p95": wall[94], "max": max(self.decide),
            "cpu_p50": cpu[49], "cpu_p95": cpu[94], "cpu_max": max(self.cpu),
            "done": self.done, "tell": statistics.mean(self.result),
            "tell_max": max(self.result), "exploits": self.exploits,
        }


def drive(s: Scheduler, workers: int, tick: Callable[[int], None] = lambda n: None) -> Run:
    """Time every decision and result tell; in-flight kept at ``workers``.

    ``tick(n)`` is told how many events were folded after each decision and
    result (the runner's collector policy hooks there, outside the timing).
    """
    run = Run()
    inflight: list[RunSegment] = []
    while True:
        while len(inflight) < workers:
            t0, c0 = time.perf_counter(), time.thread_time()
            action = s.ask(1)[0]
            events = action_events(action)
            for e in events:
                s.tell(e)
            wall, cpu = 1e3 * (time.perf_counter() - t0), 1e3 * (time.thread_time() - c0)
            tick(len(events))
            if isinstance(action, Wait):
                break
            if isinstance(action, Done):
                run.done = wall
                return run
            run.decide.append(wall)
            run.cpu.append(cpu)
            if isinstance(action, RunSegment):
                run.exploits += action.perturbation is not None
                inflight.append(action)
        a = inflight.pop(0)
        metrics = {"resource": a.stop, "loss": loss(dict(a.config), a.stop, a.trial_id)}
        ref = CheckpointRef(f"b/{a.trial_id}/{a.start:g}-{a.stop:g}", 1, "", a.trial_id, a.stop)
        event = SegmentFinished(a.trial_id, a.start, a.stop, (metrics,), metrics, ref)
        t0 = time.perf_counter()
        s.tell(event)
        run.result.append(1e3 * (time.perf_counter() - t0))
        tick(1)


def summary(name: str, f: dict[str, float]) -> str:
    return (
        f"{name:<34} {f['decisions']:>8} {f['mean']:>7.3f} {f['p50']:>7.3f} {f['p95']:>7.3f} "
        f"{f['max']:>8.2f} {f['cpu_p95']:>7.3f} {f['cpu_max']:>7.2f} {f['done']:>7.2f} "
        f"{f['tell']:>7.3f} {f['tell_max']:>8.2f}"
    )


def gc_tick(policy: str, population: int) -> Callable[[int], None]:
    """The collector policy ``policy`` as a per-fold hook (see the module doc)."""
    if policy == "default":
        return lambda n: None
    if policy == "freeze-once":
        seen = [0]

        def once(n: int) -> None:
            seen[0] += n
            if seen[0] >= 2 * population and seen[0] - n < 2 * population:
                gc.freeze()  # the population's trials exist: what a resume would have built

        return once
    from flows.engine.gc_policy import HeapFreezer

    return HeapFreezer().tick


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--population", type=int, default=1000)
    parser.add_argument("--generations", type=int, default=5)
    parser.add_argument("--workers", type=int, default=64)
    parser.add_argument("--gc", nargs="+", default=["default"],
                        choices=["default", "freeze-once", "runner"])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--only", nargs="+", help="scheduler names to run (default: all)")
    parser.add_argument("--json", help="also write the figures per run to this file")
    args = parser.parse_args()
    n = args.population
    print(f"population {n}, {args.generations} generations, {args.workers} segments in flight; "
          "ms per decision (ask + its events' tells; wall, and thread CPU) and per result tell")
    print(f"{'scheduler / gc policy':<34} {'decisions':>8} {'mean':>7} {'p50':>7} "
          f"{'p95':>7} {'max':>8} {'cpu p95':>7} {'cpu max':>7} {'done':>7} {'tell':>7} "
          f"{'tell max':>8}")
    means = {}
    variants = [
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
    ]
    variants = [v for v in variants if not args.only or v[0] in args.only]
    maxes: dict[str, list[float]] = {}
    runs: dict[str, list[dict[str, float]]] = {}
    for rep in range(args.repeats):
        policies = args.gc if rep % 2 == 0 else list(reversed(args.gc))
        for name, factory in variants:
            for policy in policies:
                gc.collect()
                probe = GCProbe().start()
                run = drive(factory(), args.workers, gc_tick(policy, n))
                probe.stop()
                gc.unfreeze()
                label = f"{name} / {policy}"
                fig = run.figures()
                runs.setdefault(label, []).append(fig)
                means.setdefault(name, fig["mean"])
                maxes.setdefault(label, []).append(fig["max"])
                print(summary(label, fig)
                      + (f"   exploits {run.exploits}" if run.exploits else "")
                      + f"   {probe.summary()}", flush=True)
    if "random" in means:
        base = means["random"]
        for name, m in means.items():
            if name != "random":
                print(f"{name}: {m / base:.1f}x random per decision")
    for label, values in maxes.items():
        print(f"max ms over repeats, {label}: min {min(values):.2f} median "
              f"{statistics.median(values):.2f} max {max(values):.2f}")
    print(f"load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(runs, fh)


if __name__ == "__main__":
    main()
