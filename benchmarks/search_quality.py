"""Search quality at equal total resource on ``examples/synthetic.py``.

Compares ASHA (random and TPE searchers; grace period 1 and 9; the
promotion and stopping variants), HyperBand (random and TPE, i.e. BOHB) and
full-budget random search, each given the same
``Budget(max_resource=...)`` and run by the in-memory simulator with 4
workers, over several seeds. Prints median and interquartile range of the
final regret: the true loss at ``MAX_T`` of the trial each scheduler returns
as best, minus the known optimum.

Run: ``python benchmarks/search_quality.py [--seeds 7] [--budget 3000]``.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from examples.synthetic import MAX_T, SPACE, objective, regret
from schedulers import Budget, RandomScheduler
from schedulers.asha import ASHAScheduler
from schedulers.base import Scheduler
from schedulers.hyperband import HyperBandScheduler
from schedulers.simulate import simulate

Factory = Callable[[int, Budget], Scheduler]
COMMON: dict[str, Any] = {"space": SPACE, "metric": "loss", "mode": "min"}


def _asha(searcher: str, grace_period: int = 1, variant: str = "promotion") -> Factory:
    def make(seed: int, budget: Budget) -> Scheduler:
        return ASHAScheduler(
            **COMMON, seed=seed, budget=budget, max_t=MAX_T, grace_period=grace_period,
            reduction_factor=3, searcher=searcher, variant=variant,
        )

    return make


def _hyperband(searcher: str) -> Factory:
    def make(seed: int, budget: Budget) -> Scheduler:
        return HyperBandScheduler(
            **COMMON, seed=seed, budget=budget, max_t=MAX_T, reduction_factor=3,
            searcher=searcher,
        )

    return make


def _random(seed: int, budget: Budget) -> Scheduler:
    return RandomScheduler(**COMMON, seed=seed, budget=budget, max_t=MAX_T)


METHODS: dict[str, Factory] = {
    "asha+random": _asha("random"),
    "asha+tpe": _asha("tpe"),
    "asha+random, r=9": _asha("random", grace_period=9),
    "asha-stopping+random": _asha("random", variant="stopping"),
    "hyperband+random": _hyperband("random"),
    "hyperband+tpe (BOHB)": _hyperband("tpe"),
    "random (full budget)": _random,
}


def run(make: Factory, seed: int, budget: float) -> tuple[float, float, int]:
    scheduler = make(seed, Budget(max_resource=budget))
    result = simulate(scheduler, objective, max_concurrency=4, seed=seed)
    assert result.done is not None and result.done.best_trial_id is not None
    best = scheduler.trials[result.done.best_trial_id]
    return regret(best.config), result.resource_used, len(scheduler.trials)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=7)
    parser.add_argument("--budget", type=float, default=3000.0, help="total resource (epochs)")
    args = parser.parse_args()
    print(
        f"synthetic benchmark, MAX_T={MAX_T}, budget={args.budget:g} epochs "
        f"(= {args.budget / MAX_T:.0f} full trainings), {args.seeds} seeds, 4 workers"
    )
    header = f"{'method':<22}{'median regret':>14}{'IQR':>22}"
    print(f"{header}{'resource':>10}{'trials':>8}{'s/run':>7}")
    for name, make in METHODS.items():
        regrets, used, trials = [], [], []
        start = time.perf_counter()
        for seed in range(args.seeds):
            r, u, n = run(make, seed, args.budget)
            regrets.append(r)
            used.append(u)
            trials.append(n)
        per_run = (time.perf_counter() - start) / args.seeds
        q1, med, q3 = np.percentile(regrets, [25, 50, 75])
        print(
            f"{name:<22}{med:>14.4f}{f'[{q1:.4f}, {q3:.4f}]':>22}"
            f"{np.mean(used):>10.0f}{np.mean(trials):>8.0f}{per_run:>7.1f}"
        )


if __name__ == "__main__":
    main()
