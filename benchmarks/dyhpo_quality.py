"""Search quality and CPU cost of DyHPO against ASHA + random and random search.

Every method gets the same total resource (``Budget(max_resource=...)``, the
sum of epochs over all segments) and runs in the in-memory simulator with
asynchronous workers, over the same seeds. Problems:

* ``synthetic``: ``examples/synthetic.py``, crossing learning curves (large
  learning rates lead early, small ones end best), the problem of
  ``benchmarks/search_quality.py``;
* ``crossing``: this file's older crossing-curves problem (noise 0.01);
* ``hartmann``: a multi-fidelity Hartmann-6 (Kandasamy et al. 2017, BoTorch's
  ``AugmentedHartmann``) as a learning curve: the report after ``r`` epochs is
  the Hartmann-6 of ``x`` at fidelity ``z = r / max_t`` with a bias that
  moves weight between two basins, ``alpha'(z) = alpha + b (1 - z) [0, 0, 1, -1]``,
  plus noise whose standard deviation falls from 0.3 at ``z = 0`` to 0.05 at
  ``z = 1``. Low fidelities are weakly informative (``--bias 1``) or
  misleading (``--bias 2``).

Final regret = true (noise-free) loss at ``max_t`` of the configuration each
method returns (``best_trial()``: highest resource, then best score) minus the
optimum. Prints median and IQR over seeds, CPU seconds per run, and the
trials / full trainings each method used.

Run: ``python benchmarks/dyhpo_quality.py [--seeds 20] [--problems synthetic hartmann]``.
``--dyhpo-args '{"surrogate": "gp"}'`` adds a DyHPO variant row.
"""

from __future__ import annotations

import os
import sys

# Run as a script the repository root is not on the path, and
# benchmarks.mf_hartmann must be importable.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Mapping, Sequence  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

from benchmarks.mf_hartmann import ALPHA, hartmann6  # noqa: E402
from benchmarks.mf_hartmann import SPACE as HARTMANN_SPACE  # noqa: E402
from examples import synthetic  # noqa: E402
from schedulers import Budget, RandomScheduler, SearchSpace  # noqa: E402
from schedulers.base import Scheduler  # noqa: E402
from schedulers.dyhpo import DyHPOScheduler  # noqa: E402
from schedulers.simulate import Objective, simulate  # noqa: E402


@dataclass(frozen=True)
class Problem:
    space: SearchSpace
    max_t: int
    budget: float
    objective: Objective
    regret: Callable[[Mapping[str, Any]], float]


def _hash_normal(key: str) -> float:
    """Deterministic N(0, 1) per key, so every method sees the same noise."""
    seed = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "little")
    return float(np.random.default_rng(seed).normal())


# ------------------------------------------------------------ crossing (old)
CROSS_SPACE = SearchSpace.parse(
    {
        "lr": {"type": "float", "low": 1e-4, "high": 1.0, "log": True},
        "width": {"type": "int", "low": 16, "high": 256, "log": True},
        "dropout": {"type": "float", "low": 0.0, "high": 0.5},
        "act": {"type": "categorical", "choices": ["relu", "tanh", "sigmoid"]},
    }
)
_ACT = {"relu": 0.0, "tanh": 0.03, "sigmoid": 0.12}


def cross_loss(config: Mapping[str, Any], r: float) -> float:
    u = math.log10(float(config["lr"]))
    final = (
        0.05
        + 0.08 * (u + 2.8) ** 2
        + 0.2 * (float(config["dropout"]) - 0.2) ** 2
        + _ACT[str(config["act"])]
    )
    k = 0.02 * 10 ** (0.6 * (u + 4)) * (int(config["width"]) / 64) ** 0.3
    return final + (1.0 - final) / (1.0 + k * r) ** 0.8


def _cross_objective(
    config: Mapping[str, Any], start: float, stop: float, state: Any
) -> tuple[Sequence[Mapping[str, Any]], Any]:
    reports = []
    r = math.floor(start) + 1
    while r <= stop:
        noise = 0.01 * _hash_normal(repr(sorted(config.items())) + f"@{r}")
        reports.append({"resource": float(r), "loss": cross_loss(config, r) + noise})
        r += 1
    return reports, {"at": stop}


def _cross_optimum() -> float:
    best = math.inf
    for lr in np.logspace(-4, 0, 4001):
        best = min(best, cross_loss({"lr": lr, "width": 256, "dropout": 0.2, "act": "relu"}, 81))
    return best


# ----------------------------------------------------------------- hartmann
HART_OPT = -3.32237
HART_MAX_T = 81


def hartmann(x: np.ndarray, z: float, bias: float) -> float:
    """Hartmann-6 at fidelity ``z`` in [0, 1] (minimise; -3.32237 at z = 1)."""
    return hartmann6(x, ALPHA + bias * (1.0 - z) * np.array([0.0, 0.0, 1.0, -1.0]))


def _hart_x(config: Mapping[str, Any]) -> np.ndarray:
    return np.array([float(config[f"x{i}"]) for i in range(6)])


def _hart_problem(bias: float, budget: float) -> Problem:
    def objective(
        config: Mapping[str, Any], start: float, stop: float, state: Any
    ) -> tuple[Sequence[Mapping[str, Any]], Any]:
        x = _hart_x(config)
        reports = []
        r = math.floor(start) + 1
        while r <= stop:
            z = r / HART_MAX_T
            sd = 0.05 + 0.25 * (1.0 - z)
            noise = sd * _hash_normal(repr(sorted(config.items())) + f"@{r}")
            reports.append({"resource": float(r), "loss": hartmann(x, z, bias) + noise})
            r += 1
        return reports, {"at": stop}

    return Problem(
        HARTMANN_SPACE,
        HART_MAX_T,
        budget,
        objective,
        lambda c: hartmann(_hart_x(c), 1.0, bias) - HART_OPT,
    )


def problems(bias: float) -> dict[str, Problem]:
    cross_opt = _cross_optimum()
    return {
        "synthetic": Problem(
            synthetic.SPACE, synthetic.MAX_T, 3000.0, synthetic.objective, synthetic.regret
        ),
        "crossing": Problem(
            CROSS_SPACE, 81, 30 * 81.0, _cross_objective, lambda c: cross_loss(c, 81) - cross_opt
        ),
        "hartmann": _hart_problem(bias, 30 * 81.0),
    }


# ------------------------------------------------------------------ methods
def methods(p: Problem, dyhpo_args: list[dict[str, Any]]) -> dict[str, Callable[[int], Scheduler]]:
    budget = Budget(max_resource=p.budget)
    common: dict[str, Any] = {"space": p.space, "metric": "loss", "mode": "min", "budget": budget}
    out: dict[str, Callable[[int], Scheduler]] = {}
    for extra in dyhpo_args:
        name = "dyhpo" + (f" {json.dumps(extra, separators=(',', ':'))}" if extra else "")
        out[name] = lambda seed, extra=extra: DyHPOScheduler(
            max_t=p.max_t, seed=seed, **common, **extra
        )
    out["random (full max_t)"] = lambda seed: RandomScheduler(max_t=p.max_t, seed=seed, **common)
    try:
        from schedulers.asha import ASHAScheduler
    except ImportError:
        return out
    out["asha+random"] = lambda seed: ASHAScheduler(
        max_t=p.max_t, grace_period=1, reduction_factor=3, searcher="random", seed=seed, **common
    )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--problems", nargs="+", default=["synthetic", "hartmann"])
    parser.add_argument("--bias", type=float, default=1.0, help="Hartmann low-fidelity bias b")
    parser.add_argument(
        "--dyhpo-args", nargs="*", default=["{}"], help="one JSON kwargs object per DyHPO row"
    )
    parser.add_argument("--progress", action="store_true", help="print every run as it ends")
    args = parser.parse_args()
    variants = [json.loads(a) for a in args.dyhpo_args]
    print(
        f"{args.seeds} seeds, {args.workers} workers, equal total resource per problem; "
        f"load average {os.getloadavg()[0]:.2f}"
    )
    all_problems = problems(args.bias)
    for pname in args.problems:
        p = all_problems[pname]
        print(
            f"\n== {pname}: max_t={p.max_t}, total resource {p.budget:g} "
            f"(= {p.budget / p.max_t:.0f} full trainings)"
        )
        print(
            f"{'method':<34}{'median regret':>14}{'IQR':>20}{'trials':>8}"
            f"{'at max_t':>9}{'CPU s/run':>10}"
        )
        rows: dict[str, list[float]] = {}
        for name, factory in methods(p, variants).items():
            regrets, trials, at_max, cpu = [], [], [], []
            for seed in range(args.seeds):
                s = factory(seed)
                c0 = time.process_time()
                simulate(s, p.objective, max_concurrency=args.workers, seed=seed)
                cpu.append(time.process_time() - c0)
                best = s.best_trial()
                regrets.append(math.inf if best is None else p.regret(best.config))
                trials.append(len(s.trials))
                at_max.append(sum(1 for t in s.trials.values() if t.resource >= p.max_t))
                if args.progress:
                    print(
                        f"  .. {name} seed {seed}: regret {regrets[-1]:.4f}, "
                        f"{trials[-1]} trials, {at_max[-1]} at max_t, CPU {cpu[-1]:.1f} s",
                        flush=True,
                    )
            q25, q50, q75 = np.percentile(regrets, [25, 50, 75])
            rows[name] = regrets
            print(
                f"{name:<34}{q50:>14.4f}{f'[{q25:.4f}, {q75:.4f}]':>20}"
                f"{np.median(trials):>8.0f}{np.median(at_max):>9.0f}{np.mean(cpu):>10.2f}",
                flush=True,
            )
        print("per-seed regrets:")
        for name, regrets in rows.items():
            print(f"  {name:<34}" + " ".join(f"{r:.4f}" for r in regrets))


if __name__ == "__main__":
    main()
