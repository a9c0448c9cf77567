"""The Jaderberg et al. toy: how often PBT reaches the optimum, asynchronous vs synchronous.

Runs :mod:`examples.pbt_toy` in the simulator (two workers, jittered segment
durations) with the issue-16 setup: population 2, ``Q = 1.2 - theta0^2 -
theta1^2``, perturbation interval 4, 200 steps (50 generations). For each of
``--seeds`` seeds and each mode (asynchronous ranking members by their
latest scores as Ray does, asynchronous ranking them at the same resource,
rungflow's default, and synchronous) it records the best final Q and how many boundaries ended in an
exploit. Prints, per mode, how many seeds reach Q >= 1.19 (the paper's setup
reaches it in ~97 of 100), min/median/max final Q and exploits per run; then
the best-Q-per-generation trace of ``--seed`` for both modes and the two
members alone (exploit/explore off).

Run: ``python benchmarks/pbt_toy.py [--seeds 100] [--interval 4] [--steps 200]``.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import argparse
from typing import Any

import numpy as np

from examples.pbt_toy import THETA0, make_pbt, q, toy_step
from schedulers import SegmentFinished, TrialPerturbed
from schedulers.simulate import SimulationResult, simulate


def q_by_boundary(result: SimulationResult) -> dict[str, dict[float, float]]:
    """``trial -> boundary -> Q`` at the end of each finished segment."""
    out: dict[str, dict[float, float]] = {}
    for e in result.events:
        if isinstance(e, SegmentFinished):
            out.setdefault(e.trial_id, {})[float(e.stop)] = float(e.metrics["Q"])
    return out


def best_at(curves: dict[str, dict[float, float]], b: float) -> float | None:
    values = [c[b] for c in curves.values() if b in c]
    return max(values) if values else None


def fmt(x: float | None) -> str:
    return f"{x:>9.4f}" if x is not None else f"{'-':>9}"


STEP_SIZE = [0.01]


def objective(
    config: Any, start: float, stop: float, state: Any
) -> tuple[list[dict[str, float]], Any]:
    """:func:`examples.pbt_toy.objective` with ``--step-size``."""
    theta = THETA0 if state is None else tuple(state)
    thetas = toy_step(theta, (float(config["h0"]), float(config["h1"])), round(stop - start),
                      STEP_SIZE[0])
    reports = [{"resource": float(start) + i + 1, "Q": q(t)} for i, t in enumerate(thetas)]
    return reports, list(thetas[-1] if thetas else theta)


def run(seed: int, interval: int, generations: int, **overrides: Any) -> SimulationResult:
    pbt = make_pbt(seed, perturbation_interval=interval, max_generations=generations,
                   **overrides)
    return simulate(pbt, objective, max_concurrency=2, seed=seed)


def summary(results: list[SimulationResult]) -> dict[str, Any]:
    finals = []
    exploits = []
    for result in results:
        curves = q_by_boundary(result)
        finals.append(max(c[max(c)] for c in curves.values()))
        exploits.append(sum(isinstance(e, TrialPerturbed) for e in result.events))
    return {
        "reached": sum(f >= 1.19 for f in finals),
        "final": (min(finals), float(np.median(finals)), max(finals)),
        "exploits": float(np.median(exploits)),
    }


MODES: dict[str, dict[str, Any]] = {
    "async, compare=latest (Ray's rule)": {"compare": "latest"},
    "async, compare=matched (default)": {},
    "sync": {"synch": True},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--seeds", type=int, default=100)
    parser.add_argument("--interval", type=int, default=4)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--step-size", type=float, default=0.01,
                        help="gradient step on the surrogate (the example's default is 0.05)")
    parser.add_argument("--every", type=int, default=5, help="trace: print every N generations")
    args = parser.parse_args()
    generations = args.steps // args.interval
    STEP_SIZE[0] = args.step_size
    print(f"load average {os.getloadavg()[0]:.2f}; population 2, interval {args.interval}, "
          f"{args.steps} steps ({generations} generations), step size {args.step_size:g}, "
          f"{args.seeds} seeds, 2 workers")
    print(f"{'mode':<36}{'Q >= 1.19':>10}{'final Q min / median / max':>30}{'exploits':>10}")
    for name, overrides in MODES.items():
        s = summary([run(seed, args.interval, generations, **overrides)
                     for seed in range(args.seeds)])
        lo, med, hi = s["final"]
        reached = f"{s['reached']}/{args.seeds}"
        finals = f"{lo:.4f} / {med:.4f} / {hi:.4f}"
        print(f"{name:<36}{reached:>10}{finals:>30}{s['exploits']:>10.0f}")
    print()
    traces = {name: q_by_boundary(run(args.seed, args.interval, generations, **o))
              for name, o in MODES.items()}
    baseline = q_by_boundary(run(args.seed, args.interval, generations, baseline=True))
    traces["h=(1,0) alone"] = {"t0000": baseline["t0000"]}
    traces["h=(0,1) alone"] = {"t0001": baseline["t0001"]}
    print(f"seed {args.seed}: best Q per generation")
    print(f"{'gen':>4} {'step':>5} " + " ".join(f"{name:>17}" for name in traces))
    for g in range(1, generations + 1):
        if g % args.every and g != 1:
            continue
        b = float(g * args.interval)
        print(f"{g:>4} {int(b):>5} "
              + " ".join(f"{fmt(best_at(c, b)):>17}" for c in traces.values()))


if __name__ == "__main__":
    main()
