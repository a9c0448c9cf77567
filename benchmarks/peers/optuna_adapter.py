"""Optuna under the peer benchmark: TPE with HyperbandPruner / SuccessiveHalvingPruner.

The objective trains the shared problem one epoch at a time, reporting each
epoch with ``trial.report(value, epoch)`` and asking ``should_prune`` (Optuna's
multi-fidelity model: a pruned trial is stopped, never resumed). Two threads
(``n_jobs=2``) match the two workers of the other systems. The total-resource
budget is enforced by counting epochs and calling ``study.stop()``.
"""

from __future__ import annotations

import tempfile
import threading
import time
from typing import Any

import optuna

from benchmarks.peers.common import ETA, GRACE, Recorder
from benchmarks.peers.cost import Cost, in_turn
from benchmarks.peers.problems import Problem

__all__ = ["METHODS", "overhead", "quality"]

METHODS = ("tpe+hyperband", "tpe+sha")

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _pruner(method: str, problem: Problem) -> optuna.pruners.BasePruner:
    if method == "tpe+hyperband":
        return optuna.pruners.HyperbandPruner(
            min_resource=GRACE, max_resource=problem.max_t, reduction_factor=ETA
        )
    if method == "tpe+sha":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=GRACE, reduction_factor=ETA)
    raise ValueError(f"method is {method!r}, but must be one of {METHODS}")


def _suggest(trial: optuna.Trial, name: str, dist: Any) -> Any:
    """``suggest_*`` for an optuna distribution (the public API, not ``_suggest``)."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    if isinstance(dist, CategoricalDistribution):
        return trial.suggest_categorical(name, list(dist.choices))
    if isinstance(dist, FloatDistribution):
        return trial.suggest_float(name, dist.low, dist.high, log=dist.log, step=dist.step)
    return trial.suggest_int(name, dist.low, dist.high, log=dist.log, step=dist.step)


def quality(problem: Problem, method: str, seed: int, budget: int) -> dict[str, Any]:
    """One seed of ``method`` on ``problem`` with ``budget`` epochs."""
    recorder = Recorder()
    lock = threading.Lock()
    spent = [0]
    study = optuna.create_study(
        direction="minimize",
        sampler=optuna.samplers.TPESampler(seed=seed),
        pruner=_pruner(method, problem),
    )

    def objective(trial: optuna.Trial) -> float:
        config = {name: _suggest(trial, name, d) for name, d in problem.space.items()}
        state: Any = None
        value = float("nan")
        for epoch in range(1, problem.max_t + 1):
            with lock:
                if spent[0] >= budget:
                    study.stop()
                    raise optuna.TrialPruned()
                spent[0] += 1
            reports, state = problem.objective(config, epoch - 1, epoch, state)
            value = float(reports[-1][problem.metric])
            recorder.add(trial.number, epoch, value, config)
            trial.report(value, epoch)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return value

    start = time.perf_counter()
    study.optimize(objective, n_jobs=2, gc_after_trial=False)
    seconds = time.perf_counter() - start
    return {"rows": recorder.rows, "seconds": seconds, "trials": len(study.trials)}


def overhead(n_trials: int, n_reports: int, repeat: int = 0) -> dict[str, Cost]:
    """Cost of ``n_trials`` no-op trials reporting ``n_reports`` times each.

    Two variants, in an order rotated by ``repeat``: Optuna's default in-memory
    storage, and an RDB (SQLite) storage, which is what persists across a
    crash as rungflow's log does.
    """

    def run(storage: str | None) -> None:
        study = optuna.create_study(storage=storage, direction="minimize",
                                    pruner=optuna.pruners.NopPruner())

        def objective(trial: optuna.Trial) -> float:
            x = trial.suggest_float("x", 0.0, 1.0)
            for epoch in range(1, n_reports + 1):
                trial.report(x, epoch)
                trial.should_prune()
            return x

        study.optimize(objective, n_trials=n_trials, n_jobs=2)

    tmp = tempfile.mkdtemp(prefix="optuna-peers-")
    run(None)  # warm-up (imports, sampler)
    return in_turn(
        [("Optuna (in-memory)", lambda: run(None)),
         ("Optuna (SQLite storage)", lambda: run(f"sqlite:///{tmp}/optuna.db"))],
        repeat,
    )
