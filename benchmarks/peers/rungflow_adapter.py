"""rungflow under the peer benchmark.

Search quality runs the real schedulers in ``schedulers.simulate`` (pure, the
same code the flow calls; simulated time with two workers). One sanity run goes
through the real Prefect flow (:func:`real_flow_run`) so the report can show
the flow reaches the same quality. Overhead is always measured through the real
flow (:func:`overhead`).
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from benchmarks.peers.common import ETA, GRACE, Recorder, pbt_settings
from benchmarks.peers.cost import Cost, in_turn
from benchmarks.peers.problems import Problem
from schedulers import Budget, SegmentFinished, SegmentStarted, TrialPerturbed
from schedulers.base import Scheduler
from schedulers.events import Event
from schedulers.registry import create_scheduler
from schedulers.simulate import simulate

__all__ = ["METHODS", "overhead", "quality", "real_flow_run"]

#: Methods run on every problem (see :func:`scheduler_spec`).
METHODS = ("asha", "asha+tpe", "hyperband", "pbt", "random")


def scheduler_spec(method: str, problem: Problem, budget: int) -> tuple[str, dict[str, Any]]:
    """Registry name and arguments of ``method`` (shared by simulation and flow)."""
    r = problem.max_t
    if method == "asha":
        return "asha", {"max_t": r, "grace_period": GRACE, "reduction_factor": ETA}
    if method == "asha+tpe":
        return "asha", {"max_t": r, "grace_period": GRACE, "reduction_factor": ETA,
                        "searcher": "tpe"}
    if method == "hyperband":
        return "hyperband", {"max_t": r, "reduction_factor": ETA}
    if method == "pbt":
        return "pbt", {"max_t": r, **pbt_settings(r, budget)}
    if method == "random":
        return "random", {"max_t": r}
    raise ValueError(f"method is {method!r}, but must be one of {METHODS}")


def _trace(events: list[Event], recorder: Recorder, metric: str) -> None:
    configs: dict[str, Mapping[str, Any]] = {}
    for event in events:
        if isinstance(event, SegmentStarted):
            configs[event.trial_id] = event.config
        elif isinstance(event, TrialPerturbed):
            configs[event.trial_id] = event.new_config
        elif isinstance(event, SegmentFinished):
            for report in event.reports:
                recorder.add(
                    event.trial_id, report["resource"], report[metric], configs[event.trial_id]
                )


def quality(problem: Problem, method: str, seed: int, budget: int) -> dict[str, Any]:
    """One seed of ``method`` on ``problem`` with ``budget`` epochs, simulated."""
    name, args = scheduler_spec(method, problem, budget)
    scheduler: Scheduler = create_scheduler(
        name, space=problem.space, metric=problem.metric, mode="min", seed=seed,
        budget=Budget(max_resource=budget), **args,
    )
    start = time.perf_counter()
    result = simulate(scheduler, problem.objective, max_concurrency=2, seed=seed)
    seconds = time.perf_counter() - start
    recorder = Recorder()
    _trace(result.events, recorder, problem.metric)
    return {"rows": recorder.rows, "seconds": seconds, "trials": len(scheduler.trials)}


# ------------------------------------------------------------- real flows
def _prefect_env(home: Path) -> None:
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ["RUNGFLOW_HOME"] = str(home)
    os.environ["RUNGFLOW_ARTIFACTS"] = "false"
    os.environ.pop("RUNGFLOW_DATABASE_URL", None)


def _register_trainables() -> None:
    from benchmarks.peers.problems import digits_objective, synthetic_objective
    from flows.trainable import objective_trainable, register_trainable

    def epochs_noop(config: Mapping[str, Any], start: float, stop: float, state: Any) -> Any:
        # One report per epoch and nothing else: the orchestration is all that costs.
        epochs = range(int(start) + 1, int(stop) + 1)
        return [{"resource": float(r), "loss": 0.0} for r in epochs], None

    register_trainable("peers-noop", objective_trainable(epochs_noop))
    register_trainable("peers-synthetic", objective_trainable(synthetic_objective))
    register_trainable("peers-digits", objective_trainable(digits_objective))


def real_flow_run(problem: Problem, method: str, seed: int, budget: int) -> dict[str, Any]:
    """The same experiment as :func:`quality`, through the real ``tune`` flow."""
    from flows.spec import load_spec
    from flows.tune import tune
    from storage import EventStore

    home = Path(tempfile.mkdtemp(prefix="rungflow-peers-"))
    _prefect_env(home)
    _register_trainables()
    name, args = scheduler_spec(method, problem, budget)
    spec = load_spec({
        "name": f"{problem.name}-{method.replace('+', '-')}-{seed}",
        "trainable": f"peers-{problem.name}",
        "metric": problem.metric,
        "space": problem.space.to_json(),
        "scheduler": name,
        "scheduler_args": args,
        "budget": {"max_resource": budget},
        "max_concurrency": 2,
        "seed": seed,
    })
    start = time.perf_counter()
    tune(spec)
    seconds = time.perf_counter() - start
    store = EventStore(f"sqlite:///{home / 'rungflow.db'}")
    try:
        events = [s.event for s in store.read(spec.name)]
    finally:
        store.close()
    recorder = Recorder()
    _trace(events, recorder, problem.metric)
    trials = sum(1 for e in events if type(e).__name__ == "TrialCreated")
    return {"rows": recorder.rows, "seconds": seconds, "trials": trials}


def overhead(n_trials: int, n_reports: int, repeat: int = 0) -> dict[str, Cost]:
    """Cost of ``n_trials`` no-op trials of ``n_reports`` epochs, two at a time.

    Two variants, in an order rotated by ``repeat``: the rungflow flow and a
    bare Prefect task loop (the same submit/as_completed pattern with no event
    log and no scheduler), which separates Prefect's own cost from rungflow's.
    Each is billed its wall time, this process's CPU and the CPU of the
    ephemeral Prefect API server (see :mod:`benchmarks.peers.cost`).
    """
    from benchmarks.overhead import bare_loop
    from flows.spec import load_spec
    from flows.tune import tune

    home = Path(tempfile.mkdtemp(prefix="rungflow-peers-overhead-"))
    _prefect_env(home)
    _register_trainables()

    def spec(name: str, n: int) -> Any:
        return load_spec({
            "name": name, "trainable": "peers-noop", "metric": "loss",
            "space": {"x": {"type": "float", "low": 0.0, "high": 1.0}},
            "scheduler": "random", "scheduler_args": {"max_t": n_reports},
            "budget": {"max_trials": n}, "max_concurrency": 2,
        })

    def flow() -> None:
        summary = tune(spec(f"measured-{repeat}", n_trials))
        assert summary["segments_run"] == n_trials, summary

    # Warm-up outside the measurement: starts the ephemeral API, migrates the
    # store, imports everything.
    bare_loop(4, 2)
    tune(spec(f"warmup-{repeat}", 4))
    return in_turn(
        [("rungflow (Prefect flow)", flow),
         ("bare Prefect task loop", lambda: bare_loop(n_trials, 2))],
        repeat,
    )
