"""Ray Tune under the peer benchmark (ASHAScheduler, HyperBandScheduler, PBT).

Trials are class trainables (``tune.Trainable``): one ``step`` is one epoch of
the shared problem objective, and ``save_checkpoint``/``load_checkpoint``
pickle the objective's state, so HyperBand's pause/resume and PBT's exploit
carry the model exactly as rungflow's checkpoints do. Ray has no total-resource
budget, so a :class:`BudgetStopper` ends the experiment once the results seen
(one epoch each) reach it. Two trials run at once (one CPU each on a 2-CPU Ray
cluster), like rungflow's ``max_concurrency: 2``. ``max_concurrent_trials`` is
not used: it keeps Ray from creating the pending trials HyperBand needs to fill
a bracket, and HyperBand would then never halve.
"""

from __future__ import annotations

import os
import pickle
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.peers.common import ETA, GRACE, Recorder, pbt_settings
from benchmarks.peers.cost import Cost, in_turn
from benchmarks.peers.problems import PROBLEMS, Problem

os.environ.setdefault("RAY_DEDUP_LOGS", "0")
os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")

import ray
from ray import tune
from ray.tune import Callback, Stopper
from ray.tune.schedulers import (
    ASHAScheduler,
    FIFOScheduler,
    HyperBandScheduler,
    PopulationBasedTraining,
)

__all__ = ["METHODS", "init", "overhead", "quality"]

METHODS = ("asha", "hyperband", "pbt")

#: One BLAS thread per trial: two trials already fill the two cores.
_THREADS = {k: "1" for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}


def init() -> str:
    """Start a local 2-CPU Ray (once per process); returns Ray's version."""
    if not ray.is_initialized():
        # Workers unpickle ProblemTrainable by module name: give them the repo.
        root = str(Path(__file__).resolve().parents[2])
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
                 configure_logging=True, logging_level="ERROR",
                 runtime_env={"env_vars": {"PYTHONPATH": root, **_THREADS}})
    return str(ray.__version__)


def ray_space(problem: Problem) -> dict[str, Any]:
    """The problem's optuna distributions as Ray Tune sampling domains."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    out: dict[str, Any] = {}
    for name, d in problem.space.items():
        if isinstance(d, CategoricalDistribution):
            out[name] = tune.choice(list(d.choices))
        elif isinstance(d, FloatDistribution):
            if d.log:
                out[name] = tune.loguniform(d.low, d.high)
            elif d.step is not None:
                out[name] = tune.quniform(d.low, d.high, d.step)
            else:
                out[name] = tune.uniform(d.low, d.high)
        elif isinstance(d, IntDistribution):
            if d.log:
                out[name] = tune.lograndint(d.low, d.high + 1)
            else:
                out[name] = tune.qrandint(d.low, d.high, d.step)
    return out


class ProblemTrainable(tune.Trainable):
    """One epoch of ``PROBLEMS[config['__problem']]`` per step."""

    def setup(self, config: dict[str, Any]) -> None:
        self.problem = PROBLEMS[config["__problem"]]
        self.epoch = 0
        self.state: Any = None

    def step(self) -> dict[str, Any]:
        config = {k: v for k, v in self.config.items() if not k.startswith("__")}
        reports, self.state = self.problem.objective(config, self.epoch, self.epoch + 1, self.state)
        self.epoch += 1
        return {"loss": float(reports[-1][self.problem.metric]), "epoch": self.epoch}

    def save_checkpoint(self, checkpoint_dir: str) -> None:
        # Returning None makes Ray hand the directory back to load_checkpoint.
        Path(checkpoint_dir, "state.pkl").write_bytes(pickle.dumps((self.epoch, self.state)))

    def load_checkpoint(self, checkpoint: Any) -> None:
        path = Path(checkpoint if isinstance(checkpoint, str) else checkpoint.path)
        self.epoch, self.state = pickle.loads((path / "state.pkl").read_bytes())

    def reset_config(self, new_config: dict[str, Any]) -> bool:
        # Lets Ray reuse actors across trials (reuse_actors=True); a new trial
        # starts from scratch unless a checkpoint is loaded afterwards.
        self.config = new_config
        self.problem = PROBLEMS[new_config["__problem"]]
        self.epoch, self.state = 0, None
        return True


class BudgetStopper(Stopper):
    """Stop everything once ``budget`` results (epochs) have been reported."""

    def __init__(self, budget: int, max_t: int) -> None:
        self.budget, self.max_t, self.seen = budget, max_t, 0

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        self.seen += 1
        return bool(result.get("epoch", 0) >= self.max_t)

    def stop_all(self) -> bool:
        return self.seen >= self.budget


class TraceCallback(Callback):
    """Record every result in the shared trace format."""

    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict,
                        **info: Any) -> None:
        config = {k: v for k, v in result["config"].items() if not k.startswith("__")}
        self.recorder.add(trial.trial_id, result["epoch"], result["loss"], config)


def _mutations(problem: Problem) -> dict[str, Any]:
    """PBT explores every parameter; Ray wants lists for categorical ones."""
    from optuna.distributions import CategoricalDistribution

    domains = ray_space(problem)
    return {
        k: list(d.choices) if isinstance(d, CategoricalDistribution) else domains[k]
        for k, d in problem.space.items()
    }


def _scheduler(method: str, problem: Problem, budget: int, space: dict[str, Any]) -> Any:
    r = problem.max_t
    if method == "asha":
        return ASHAScheduler(time_attr="epoch", max_t=r, grace_period=GRACE, reduction_factor=ETA)
    if method == "hyperband":
        return HyperBandScheduler(time_attr="epoch", max_t=r, reduction_factor=ETA)
    if method == "pbt":
        settings = pbt_settings(r, budget)
        return PopulationBasedTraining(
            time_attr="epoch",
            perturbation_interval=settings["perturbation_interval"],
            hyperparam_mutations=_mutations(problem),
            quantile_fraction=0.25,
            resample_probability=0.25,
        )
    raise ValueError(f"method is {method!r}, but must be one of {METHODS}")


def quality(problem: Problem, method: str, seed: int, budget: int) -> dict[str, Any]:
    """One seed of ``method`` on ``problem`` with ``budget`` epochs."""
    import numpy as np

    init()
    np.random.seed(seed)  # Ray's samplers and PBT draw from the global RNGs
    import random

    random.seed(seed)
    space = {**ray_space(problem), "__problem": problem.name}
    num_samples = pbt_settings(problem.max_t, budget)["population_size"] if method == "pbt" \
        else budget  # more than can ever start: the budget stopper ends the run
    recorder = Recorder()
    tuner = tune.Tuner(
        ProblemTrainable,
        param_space=space,
        tune_config=tune.TuneConfig(
            metric="loss", mode="min", scheduler=_scheduler(method, problem, budget, space),
            num_samples=num_samples, reuse_actors=True,
        ),
        run_config=tune.RunConfig(
            name=f"{problem.name}-{method}-{seed}",
            storage_path=tempfile.mkdtemp(prefix="ray-peers-"),
            stop=BudgetStopper(budget, problem.max_t),
            callbacks=[TraceCallback(recorder)],
            verbose=0,
            checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
        ),
    )
    start = time.perf_counter()
    grid = tuner.fit()
    seconds = time.perf_counter() - start
    if grid.errors:
        raise RuntimeError(f"{len(grid.errors)} Ray trial(s) failed: {grid.errors[0]!r}")
    trials = len({row[1] for row in recorder.rows})
    return {"rows": recorder.rows, "seconds": seconds, "trials": trials}


def _noop(config: dict[str, Any]) -> None:
    for epoch in range(1, int(config["n_reports"]) + 1):
        tune.report({"loss": 0.0, "epoch": epoch})


def overhead(n_trials: int, n_reports: int, repeat: int = 0) -> dict[str, Cost]:
    """Cost of ``n_trials`` no-op function trainables reporting ``n_reports`` times.

    Billed the CPU of Ray's own processes (raylet, GCS, workers) next to the
    driver's (see :mod:`benchmarks.peers.cost`).
    """
    init()

    def fit(n: int) -> None:
        tuner = tune.Tuner(
            _noop,
            param_space={"x": tune.uniform(0, 1), "n_reports": n_reports},
            tune_config=tune.TuneConfig(
                metric="loss", mode="min", scheduler=FIFOScheduler(), num_samples=n,
                max_concurrent_trials=2, reuse_actors=True,
            ),
            run_config=tune.RunConfig(
                storage_path=tempfile.mkdtemp(prefix="ray-peers-"), verbose=0,
            ),
        )
        tuner.fit()

    fit(4)  # warm-up: worker processes, imports
    return in_turn([("Ray Tune", lambda: fit(n_trials))], repeat)
