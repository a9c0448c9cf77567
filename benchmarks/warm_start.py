"""Warm-started vs cold ASHA+TPE on ``examples/synthetic.py``: budget to a target regret.

For each seed, an earlier experiment with another seed (by default a
full-fidelity random search of 20 trials, like an Optuna study run without
pruning; ``--source asha`` for an ASHA+random run) is turned into prior
observations with the same code the CLI uses
(:func:`flows.interop.warm_start.observations_from_experiment`). Then ASHA+TPE runs
twice in the in-memory simulator with 4 workers and the same seed: cold, and
told the imported observations first. Both grace periods 9 and 1 are shown:
with grace period 1 the crossing learning curves make rung 1 rank fast
learners first, and priors at that rung push the bar up for exactly the slow,
good configurations TPE learns to propose, so warm start gains little there. A run's *budget to
regret r* is the resource it had spent when a trial it trained to ``MAX_T``
first had a true regret (loss at ``MAX_T`` minus the known optimum) <= r;
the imported source's own spending is not counted (it was spent last month).
Runs that never get there count as the whole budget and are marked ``>``.

Run: ``python benchmarks/warm_start.py [--seeds 7] [--budget 3000] [--source random|asha]``.
"""

from __future__ import annotations

import argparse
import math
import time
from typing import Any

import numpy as np

import examples.objectives  # noqa: F401 - registers the "synthetic" trainable for the spec
from examples.synthetic import MAX_T, SPACE, objective, regret
from flows.interop.warm_start import WarmStartSource, observations_from_experiment
from flows.spec import load_spec
from schedulers import Budget, RandomScheduler, SegmentFinished, TrialCreated
from schedulers.asha import ASHAScheduler
from schedulers.events import Event, ExperimentCreated, ObservationImported
from schedulers.simulate import simulate

TARGETS = (0.05, 0.02, 0.01)
COMMON: dict[str, Any] = {"space": SPACE, "metric": "loss", "mode": "min"}


def asha(searcher: str, seed: int, budget: float, grace_period: int = 9) -> ASHAScheduler:
    return ASHAScheduler(
        **COMMON, seed=seed, budget=Budget(max_resource=budget), max_t=MAX_T,
        grace_period=grace_period, reduction_factor=3, searcher=searcher,
    )


def priors(seed: int, budget: float, kind: str = "random") -> list[ObservationImported]:
    """An earlier experiment with another seed, imported as the CLI would import it.

    ``kind`` is ``"random"`` (full-fidelity random search: every trial trained
    to MAX_T, like an Optuna study without pruning) or ``"asha"`` (ASHA with
    random search: many short curves, few trials at MAX_T).
    """
    if kind == "random":
        source: Any = RandomScheduler(**COMMON, seed=1000 + seed, max_t=MAX_T,
                                      budget=Budget(max_resource=budget))
    else:
        source = asha("random", 1000 + seed, budget, grace_period=1)
    events = simulate(source, objective, max_concurrency=4, seed=seed).events
    spec = load_spec({
        "name": "warm", "trainable": "synthetic", "metric": "loss", "space": SPACE.to_json(),
        "scheduler": "asha", "scheduler_args": {"max_t": MAX_T}, "budget": {"max_trials": 1},
    })
    log: list[Event] = [ExperimentCreated(spec.to_json()), *events]
    plan = observations_from_experiment(WarmStartSource("experiment", "old"), spec, log)
    return [
        ObservationImported(f"i{i:04d}", "experiment:old", d.config, tuple(d.reports),
                            d.source_trial)
        for i, d in enumerate(plan.drafts)
    ]


def budget_to(
    seed: int, budget: float, prior: list[ObservationImported], grace_period: int
) -> dict[float, float]:
    """Resource spent until a MAX_T trial first reached each target regret (inf: never)."""
    scheduler = asha("tpe", seed, budget, grace_period)
    for observation in prior:
        scheduler.tell(observation)
    result = simulate(scheduler, objective, max_concurrency=4, seed=seed)
    configs: dict[str, Any] = {}
    spent = 0.0
    found = dict.fromkeys(TARGETS, math.inf)
    for event in result.events:
        if isinstance(event, TrialCreated):
            configs[event.trial_id] = event.config
        elif isinstance(event, SegmentFinished):
            # Resource is charged when a segment starts; count it when it ends
            # (a result cannot be known earlier).
            spent += event.stop - event.start
            if event.stop >= MAX_T:
                r = regret(configs[event.trial_id])
                for target in TARGETS:
                    if r <= target and found[target] == math.inf:
                        found[target] = spent
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=7)
    parser.add_argument("--budget", type=float, default=3000.0)
    parser.add_argument("--source", choices=["random", "asha"], default="random")
    parser.add_argument("--source-budget", type=float, default=20 * MAX_T)
    args = parser.parse_args()
    start = time.perf_counter()
    sources = [priors(seed, args.source_budget, args.source) for seed in range(args.seeds)]
    print(
        f"synthetic benchmark, ASHA+TPE (max_t={MAX_T}, eta=3, 4 workers), budget "
        f"{args.budget:g} epochs, {args.seeds} seeds; warm = "
        f"{np.mean([len(p) for p in sources]):.0f} observations imported from a "
        f"{args.source_budget:g}-epoch {args.source} run with another seed"
    )
    print("budget (epochs) until a trial trained to MAX_T has regret <= target; "
          "'>' = not within the budget")
    print(f"{'grace':>6}{'target':>8}{'cold median':>13}{'warm median':>13}"
          f"{'cold reached':>14}{'warm reached':>14}{'warm first':>12}")
    for grace in (9, 1):
        cold: dict[float, list[float]] = {t: [] for t in TARGETS}
        warm: dict[float, list[float]] = {t: [] for t in TARGETS}
        for seed, prior in enumerate(sources):
            for runs, p in ((cold, []), (warm, prior)):
                for target, value in budget_to(seed, args.budget, p, grace).items():
                    runs[target].append(value)
        for target in TARGETS:
            c, w = np.array(cold[target]), np.array(warm[target])

            def med(x: np.ndarray) -> str:
                value = float(np.median(np.where(np.isinf(x), args.budget, x)))
                return f"{'>' if value >= args.budget else ''}{value:.0f}"

            print(
                f"{grace:>6}{target:>8g}{med(c):>13}{med(w):>13}"
                f"{int(np.isfinite(c).sum()):>11}/{args.seeds}"
                f"{int(np.isfinite(w).sum()):>11}/{args.seeds}"
                f"{int(np.sum(w < c)):>9}/{args.seeds}"
            )
    print(f"({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
