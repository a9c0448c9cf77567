"""Search quality of DyHPO against ASHA (+random, +TPE) and random search.

Every method gets the same total resource (``Budget(max_resource=...)``, the
sum of epochs over all segments) on a synthetic learning-curve benchmark whose
curves cross: large learning rates converge fast to a mediocre loss, small
ones start badly and end best, so a rule that judges at the first rung culls
the eventual winners. Runs use :func:`schedulers.simulate.simulate` with
asynchronous workers.

Final regret = true (noise-free) loss at ``max_t`` of the configuration each
method returns (``best_trial()``: highest resource, then best score), minus
the best loss at ``max_t`` over the space. Prints median and IQR over seeds.

Run: ``python benchmarks/dyhpo_quality.py [--seeds 5] [--budget-trials 30]``.
ASHA rows are included when ``schedulers.asha`` is importable.

Figures at the time of writing (10 seeds, 30 full trainings, 4 workers;
median final regret [IQR]): dyhpo 0.014 [0.013, 0.018]; dyhpo with
probability_sh=0.25 0.019 [0.014, 0.037]; dyhpo linear rungs (grace 9) 0.010
[0.006, 0.012]; random search 0.033 [0.014, 0.043]; asha+random 0.036
[0.029, 0.042]; asha+tpe 0.020 [0.015, 0.029]. DyHPO still has bad seeds
(one at 0.058, worse than every other method on that seed). The benchmark is
built to punish early judgement, so read it as "DyHPO recovers from crossing
curves", not as a general ranking; the SH mix (probability_sh > 0) inherits
SH's bias here and has the widest spread.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import hashlib  # noqa: E402
import math  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Mapping, Sequence  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

from schedulers import Budget, RandomScheduler, SearchSpace  # noqa: E402
from schedulers.base import Scheduler  # noqa: E402
from schedulers.dyhpo import DyHPOScheduler  # noqa: E402
from schedulers.simulate import simulate  # noqa: E402

SPACE = SearchSpace.parse(
    {
        "lr": {"type": "float", "low": 1e-4, "high": 1.0, "log": True},
        "width": {"type": "int", "low": 16, "high": 256, "log": True},
        "dropout": {"type": "float", "low": 0.0, "high": 0.5},
        "act": {"type": "categorical", "choices": ["relu", "tanh", "sigmoid"]},
    }
)
MAX_T = 81
NOISE = 0.01
_ACT = {"relu": 0.0, "tanh": 0.03, "sigmoid": 0.12}


def true_loss(config: Mapping[str, Any], r: float) -> float:
    """Noise-free validation loss after ``r`` epochs.

    ``final`` is best near lr = 10^-2.8; the convergence rate ``k`` grows with
    lr, so large learning rates lead early and small ones overtake later.
    """
    u = math.log10(float(config["lr"]))
    final = (
        0.05
        + 0.08 * (u + 2.8) ** 2
        + 0.2 * (float(config["dropout"]) - 0.2) ** 2
        + _ACT[str(config["act"])]
    )
    k = 0.02 * 10 ** (0.6 * (u + 4)) * (int(config["width"]) / 64) ** 0.3
    return final + (1.0 - final) / (1.0 + k * r) ** 0.8


def _noise(config: Mapping[str, Any], r: float) -> float:
    """Deterministic per-(config, epoch) noise, so every method sees the same."""
    key = repr(sorted(config.items())) + f"@{r}"
    seed = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "little")
    return NOISE * float(np.random.default_rng(seed).normal())


def objective(
    config: Mapping[str, Any], start: float, stop: float, state: Any
) -> tuple[Sequence[Mapping[str, Any]], Any]:
    reports = []
    r = math.floor(start) + 1
    while r <= stop:
        reports.append({"resource": float(r), "loss": true_loss(config, r) + _noise(config, r)})
        r += 1
    return reports, {"at": stop}


def optimum() -> float:
    lrs = np.logspace(-4, 0, 4001)
    widths = np.unique(np.round(np.logspace(np.log10(16), np.log10(256), 200)).astype(int))
    best = math.inf
    for w in widths:
        for lr in lrs[::4]:
            config = {"lr": lr, "width": w, "dropout": 0.2, "act": "relu"}
            best = min(best, true_loss(config, MAX_T))
    # Refine lr around the coarse optimum at the widest network (k grows with width).
    for lr in lrs:
        best = min(best, true_loss({"lr": lr, "width": 256, "dropout": 0.2, "act": "relu"}, MAX_T))
    return best


def methods(budget: Budget) -> dict[str, Callable[[int], Scheduler]]:
    common: dict[str, Any] = {"space": SPACE, "metric": "loss", "mode": "min", "budget": budget}
    out: dict[str, Callable[[int], Scheduler]] = {
        "dyhpo": lambda seed: DyHPOScheduler(
            max_t=MAX_T, grace_period=1, reduction_factor=3, seed=seed, **common
        ),
        "dyhpo p_sh=0.25": lambda seed: DyHPOScheduler(
            max_t=MAX_T, grace_period=1, reduction_factor=3, probability_sh=0.25, seed=seed,
            **common,
        ),
        "dyhpo linear g=9": lambda seed: DyHPOScheduler(
            max_t=MAX_T, grace_period=9, rung_spacing="linear", seed=seed, **common
        ),
        "random (full max_t)": lambda seed: RandomScheduler(max_t=MAX_T, seed=seed, **common),
    }
    try:
        from schedulers.asha import ASHAScheduler
    except ImportError:
        print("(schedulers.asha not importable: ASHA rows skipped)")
        return out
    for searcher in ("random", "tpe"):
        out[f"asha+{searcher}"] = lambda seed, searcher=searcher: ASHAScheduler(
            max_t=MAX_T, grace_period=1, reduction_factor=3, searcher=searcher, seed=seed, **common
        )
    return out


def regret_of(s: Scheduler, f_star: float) -> float:
    """True loss at max_t of the returned configuration, minus the optimum."""
    best = s.best_trial()
    if best is None:
        return math.inf
    return true_loss(best.config, MAX_T) - f_star


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--budget-trials", type=float, default=30.0,
                        help="total resource in units of max_t (full trainings)")
    parser.add_argument("--workers", type=int, default=4)
    args = parser.parse_args()
    budget = Budget(max_resource=args.budget_trials * MAX_T)
    f_star = optimum()
    print(
        f"synthetic crossing curves, max_t={MAX_T}, total resource {budget.max_resource:g} "
        f"(= {args.budget_trials:g} full trainings), {args.workers} workers, "
        f"{args.seeds} seeds, f*={f_star:.4f}"
    )
    print(
        f"{'method':<22}{'median regret':>14}{'IQR':>20}{'trials':>8}{'at max_t':>9}{'s/run':>7}"
    )
    rows: dict[str, list[float]] = {}
    for name, factory in methods(budget).items():
        regrets, trials, at_max, secs = [], [], [], []
        for seed in range(args.seeds):
            s = factory(seed)
            t0 = time.perf_counter()
            simulate(s, objective, max_concurrency=args.workers, seed=seed)
            secs.append(time.perf_counter() - t0)
            regret = regret_of(s, f_star)
            regrets.append(regret)
            trials.append(len(s.trials))
            at_max.append(sum(1 for t in s.trials.values() if t.resource >= MAX_T))
        q25, q50, q75 = np.percentile(regrets, [25, 50, 75])
        rows[name] = regrets
        print(
            f"{name:<22}{q50:>14.4f}{f'[{q25:.4f}, {q75:.4f}]':>20}"
            f"{np.median(trials):>8.0f}{np.median(at_max):>9.0f}{np.mean(secs):>7.1f}"
        )
    print("per-seed regrets:")
    for name, regrets in rows.items():
        print(f"  {name:<22}" + " ".join(f"{r:.4f}" for r in regrets))


if __name__ == "__main__":
    main()
