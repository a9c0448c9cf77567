"""ASHA's rules against Optuna's SuccessiveHalvingPruner, decision by decision, same trials.

Optuna's ``SuccessiveHalvingPruner`` (min_resource 1, reduction_factor 3) is
run on the informative multi-fidelity Hartmann problem with
``RandomSampler``, one trial at a time, until the resource budget is spent.
At every rung decision Optuna takes (a trial reporting at 1, 3, 9 or 27
epochs), the same rung history -- the values Optuna had recorded there
before -- is handed to the two rules rungflow's ASHA uses, so all three
rules judge the same trial against the same rivals:

* ``optuna``: continue iff the value is within the top ``floor(n / eta)`` of
  the ``n`` values at the rung *including its own*; while ``n < eta`` only
  if it is the best so far (Optuna cannot pause a trial).
* ``ray`` (rungflow ``variant="stopping"``): continue iff the value is not
  worse than ``np.percentile`` of the values recorded *before it* at
  ``(1 - r_k / r_{k+1}) * 100``; the first trial of a rung always continues.
* ``promotion`` (rungflow's default): promotable at arrival iff it is in the
  top ``floor(n * r_k / r_{k+1})`` of the ``n`` values including its own;
  a trial that is not may still be promoted later, when the rung has grown.

Prints, per rung, how often each rule lets the trial go on and how often the
rungflow rules disagree with Optuna, split into the first ``eta - 1`` trials
of a rung and the rest.

Run: ``python benchmarks/asha_vs_optuna.py [--seeds 5] [--budget-trainings 30]``.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import argparse
import math
from collections import defaultdict
from typing import Any

import numpy as np
import optuna

from benchmarks.mf_hartmann import PRESETS, SPACE
from schedulers._rungs import percentile

ETA = 3
RUNGS = (1, 3, 9, 27, 81)


def optuna_rule(value: float, prior: list[float]) -> bool:
    competing = sorted([*prior, value])
    idx = max(len(competing) // ETA - 1, 0)
    return value <= competing[idx]


def ray_rule(value: float, prior: list[float], fraction: float = 1 / ETA) -> bool:
    cutoff = percentile(sorted(-v for v in prior), (1 - fraction) * 100)
    return cutoff is None or not -value < cutoff


def promotion_rule(value: float, prior: list[float], fraction: float = 1 / ETA) -> bool:
    quota = math.floor((len(prior) + 1) * fraction)
    rank = sum(v < value for v in prior)  # ties go to the earlier trial
    return rank < quota


def run_seed(problem: Any, seed: int, budget: float) -> list[tuple[int, int, bool, bool, bool]]:
    """Optuna's run; per rung decision ``(rung, n_before, optuna, ray, promotion)``."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        direction="minimize",
        sampler=optuna.samplers.RandomSampler(seed=seed),
        pruner=optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=ETA),
    )
    history: dict[int, list[float]] = defaultdict(list)
    decisions = []
    spent = 0
    while spent < budget:
        trial = study.ask()
        config = {name: trial.suggest_float(name, 0.0, 1.0) for name in SPACE}
        pruned = False
        for epoch in range(1, problem.max_t + 1):
            if spent >= budget:
                pruned = True
                break
            spent += 1
            value = problem.value(config, epoch)
            trial.report(value, epoch)
            if epoch in RUNGS[:-1]:
                prior = list(history[epoch])
                keep = not trial.should_prune()
                decisions.append((epoch, len(prior), keep, ray_rule(value, prior),
                                  promotion_rule(value, prior)))
                history[epoch].append(value)
                if not keep:
                    pruned = True
                    break
        if pruned:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        else:
            study.tell(trial, value)
    return decisions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--budget-trainings", type=float, default=30.0)
    parser.add_argument("--problem", default="hartmann-informative", choices=list(PRESETS))
    args = parser.parse_args()
    problem = PRESETS[args.problem]
    budget = args.budget_trainings * problem.max_t
    rows = []
    for seed in range(args.seeds):
        rows.extend(run_seed(problem, seed, budget))
    data = np.array(rows, dtype=float)
    print(f"{args.problem}, budget {budget:g} epochs, {args.seeds} seeds, Optuna's trials")
    print(f"{'rung':>5}{'trials':>8}{'group':>12}{'optuna goes on':>16}{'ray':>8}"
          f"{'promotion':>11}{'ray != optuna':>15}{'promo != optuna':>17}")
    for rung in RUNGS[:-1]:
        for label, mask in (
            ("n < eta", (data[:, 0] == rung) & (data[:, 1] < ETA - 1 + 1e-9)),
            ("n >= eta", (data[:, 0] == rung) & (data[:, 1] >= ETA - 1 + 1e-9)),
        ):
            sub = data[mask]
            if not len(sub):
                continue
            opt, ray, promo = sub[:, 2], sub[:, 3], sub[:, 4]
            print(f"{rung:>5}{len(sub):>8}{label:>12}{opt.mean():>16.3f}{ray.mean():>8.3f}"
                  f"{promo.mean():>11.3f}{(ray != opt).mean():>15.3f}"
                  f"{(promo != opt).mean():>17.3f}")


if __name__ == "__main__":
    main()
