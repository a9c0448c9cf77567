"""Syne Tune under the peer benchmark: ASHA and BOHB (ASHA + KDE searcher).

Syne Tune's local backends start one process per trial (made for trials of
minutes, not milliseconds), so its schedulers are driven here the way its
simulator backend drives them: in simulated time, with two workers, calling the
scheduler API exactly as ``syne_tune.Tuner`` does (``suggest``,
``on_trial_add``, ``on_trial_result`` after each epoch, ``on_trial_remove`` on
STOP, ``on_trial_complete`` at ``max_t``). That is the analogue of rungflow's
``schedulers.simulate``. Syne Tune is therefore not in the overhead figure.
"""

from __future__ import annotations

import heapq
import random
import time
from datetime import datetime
from typing import Any

import numpy as np
from syne_tune import config_space as cs
from syne_tune.backend.trial_status import Trial
from syne_tune.optimizer.baselines import ASHA, BOHB
from syne_tune.optimizer.scheduler import SchedulerDecision

from benchmarks.peers.common import ETA, GRACE, Recorder
from benchmarks.peers.problems import Problem

__all__ = ["METHODS", "quality"]

METHODS = ("asha", "bohb")


def syne_space(problem: Problem) -> dict[str, Any]:
    """The problem's optuna distributions as Syne Tune domains."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    out: dict[str, Any] = {}
    for name, d in problem.space.items():
        if isinstance(d, CategoricalDistribution):
            out[name] = cs.choice(list(d.choices))
        elif isinstance(d, FloatDistribution):
            if d.log:
                out[name] = cs.loguniform(d.low, d.high)
            elif d.step is not None:
                out[name] = cs.finrange(d.low, d.high, round((d.high - d.low) / d.step) + 1)
            else:
                out[name] = cs.uniform(d.low, d.high)
        elif isinstance(d, IntDistribution):
            if d.log:
                out[name] = cs.lograndint(d.low, d.high)
            elif d.step > 1:
                out[name] = cs.finrange(d.low, d.high, (d.high - d.low) // d.step + 1,
                                        cast_int=True)
            else:
                out[name] = cs.randint(d.low, d.high)
    return out


def _scheduler(method: str, problem: Problem, seed: int) -> Any:
    kwargs = {
        "config_space": syne_space(problem), "metric": "loss", "time_attr": "epoch",
        "max_t": problem.max_t, "do_minimize": True, "random_seed": seed,
        "grace_period": GRACE, "reduction_factor": ETA,
    }
    if method == "asha":
        return ASHA(**kwargs)
    if method == "bohb":
        return BOHB(**kwargs)
    raise ValueError(f"method is {method!r}, but must be one of {METHODS}")


def quality(problem: Problem, method: str, seed: int, budget: int) -> dict[str, Any]:
    """One seed of ``method`` on ``problem`` with ``budget`` epochs, in simulated time."""
    np.random.seed(seed)  # Syne Tune's bracket choice uses the global RNG
    random.seed(seed)
    scheduler = _scheduler(method, problem, seed)
    jitter = np.random.default_rng(seed)
    recorder = Recorder()
    n_trials = 0
    # Per worker: (trial, epoch reached, objective state).
    running: dict[int, tuple[Trial, int, Any]] = {}
    heap: list[tuple[float, int]] = []
    now, spent = 0.0, 0
    start = time.perf_counter()

    def start_trial(worker: int) -> bool:
        nonlocal n_trials
        suggestion = scheduler.suggest()
        if suggestion is None or suggestion.config is None:
            return False
        trial = Trial(trial_id=n_trials, config=dict(suggestion.config),
                      creation_time=datetime.now())
        n_trials += 1
        scheduler.on_trial_add(trial)
        running[worker] = (trial, 0, None)
        return True

    for worker in range(2):
        if spent < budget and start_trial(worker):
            spent += 1
            heapq.heappush(heap, (now + float(jitter.lognormal(0.0, 0.3)), worker))
    while heap:
        now, worker = heapq.heappop(heap)
        trial, epoch, state = running[worker]
        config = {k: trial.config[k] for k in problem.space}
        reports, state = problem.objective(config, epoch, epoch + 1, state)
        epoch += 1
        value = float(reports[-1][problem.metric])
        recorder.add(trial.trial_id, epoch, value, config)
        result = {"loss": value, "epoch": epoch}
        decision = scheduler.on_trial_result(trial, result)
        if epoch >= problem.max_t:
            scheduler.on_trial_complete(trial, result)
            finished = True
        elif decision != SchedulerDecision.CONTINUE:
            scheduler.on_trial_remove(trial)
            finished = True
        else:
            finished = False
            running[worker] = (trial, epoch, state)
        if spent >= budget:
            continue  # out of budget: let the other worker drain
        if finished and not start_trial(worker):
            continue
        spent += 1
        heapq.heappush(heap, (now + float(jitter.lognormal(0.0, 0.3)), worker))
    seconds = time.perf_counter() - start
    return {"rows": recorder.rows, "seconds": seconds, "trials": n_trials}
