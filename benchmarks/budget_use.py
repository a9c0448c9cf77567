"""Budget left unspent by HyperBand and asynchronous HyperBand (ASHA with brackets).

A ``Budget(max_resource=B)`` should buy search: a scheduler that ends with
part of ``B`` unspent has searched less than it was allowed to. For each
budget and seed this runs the scheduler in the simulator (4 workers) on the
informative multi-fidelity Hartmann problem and prints min/median/max of
``B - resource used`` and the share of the budget spent by trials that started
at full fidelity (HyperBand's s = 0 bracket, ASHA's last bracket).

Run: ``python benchmarks/budget_use.py [--seeds 10]``.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import argparse
from collections.abc import Callable
from typing import Any

import numpy as np

from benchmarks.mf_hartmann import PRESETS, SPACE
from schedulers import Budget
from schedulers.asha import ASHAScheduler
from schedulers.base import Scheduler
from schedulers.events import SegmentFinished
from schedulers.hyperband import HyperBandScheduler
from schedulers.simulate import simulate

PROBLEM = PRESETS["hartmann-informative"]


def _common(seed: int, budget: float) -> dict[str, Any]:
    return {"space": SPACE, "metric": "loss", "mode": "min", "seed": seed,
            "budget": Budget(max_resource=budget)}


CASES: dict[str, Callable[[int, float], Scheduler]] = {
    "hyperband R=81": lambda seed, b: HyperBandScheduler(
        **_common(seed, b), max_t=81, reduction_factor=3),
    "asha 5 br. budget-weighted": lambda seed, b: ASHAScheduler(
        **_common(seed, b), max_t=81, grace_period=1, reduction_factor=3, brackets=5),
    "asha 5 br. Ray weights": lambda seed, b: ASHAScheduler(
        **_common(seed, b), max_t=81, grace_period=1, reduction_factor=3, brackets=5,
        bracket_weights="exponential"),
    "asha 5 br. round robin": lambda seed, b: ASHAScheduler(
        **_common(seed, b), max_t=81, grace_period=1, reduction_factor=3, brackets=5,
        bracket_weights="round_robin"),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--budgets", type=float, nargs="+", default=[2430.0, 8100.0, 8000.0])
    args = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.2f}; {args.seeds} seeds, 4 workers")
    print(f"{'case':<28}{'budget':>8}{'unspent min/median/max':>26}{'top-rung share':>16}")
    for name, make in CASES.items():
        for budget in args.budgets:
            unspent, share = [], []
            for seed in range(args.seeds):
                scheduler = make(seed, budget)
                result = simulate(scheduler, PROBLEM.objective, max_concurrency=4, seed=seed)
                unspent.append(budget - result.resource_used)
                top = sum(float(e.stop - e.start) for e in result.events
                          if isinstance(e, SegmentFinished) and e.stop >= 81 and e.start == 0)
                share.append(top / max(result.resource_used, 1.0))
            lo, med, hi = np.min(unspent), np.median(unspent), np.max(unspent)
            print(f"{name:<28}{budget:>8.0f}{f'{lo:.0f} / {med:.0f} / {hi:.0f}':>26}"
                  f"{np.median(share):>16.3f}")


if __name__ == "__main__":
    main()
