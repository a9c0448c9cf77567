"""Shared fixtures for scheduler tests: a space, a synthetic objective, cases."""

from __future__ import annotations

import importlib
import math
from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from schedulers import Budget, SearchSpace, create_scheduler
from schedulers.base import Scheduler
from schedulers.registry import SCHEDULERS

SPACE = SearchSpace.parse(
    {
        "lr": {"type": "float", "low": 1e-4, "high": 1.0, "log": True},
        "width": {"type": "int", "low": 8, "high": 64, "step": 8},
        "act": {"type": "categorical", "choices": ["relu", "tanh", "sigmoid"]},
    }
)

#: Arguments that make each scheduler finish quickly in the contract suite.
CASES: dict[str, dict[str, Any]] = {
    "random": {"max_t": 9, "budget": Budget(max_trials=12)},
    "fifo": {"max_t": 3, "points_per_dim": 2},
    "hyperband": {"max_t": 9, "reduction_factor": 3, "budget": Budget(max_trials=30)},
    "asha": {"max_t": 9, "grace_period": 1, "reduction_factor": 3, "budget": Budget(max_trials=20)},
    "pbt": {"perturbation_interval": 2, "population_size": 6, "max_generations": 3},
    "dyhpo": {
        "max_t": 9,
        "grace_period": 1,
        "reduction_factor": 3,
        "budget": Budget(max_resource=80),
        "num_init_random": 4,
        "num_candidates": 16,
        "max_gp_points": 32,
    },
}


def curve(config: Mapping[str, Any], resource: float) -> float:
    """A learning curve whose asymptote depends on the config (lower is better)."""
    lr = float(config["lr"])
    quality = (math.log10(lr) + 2.0) ** 2 + {"relu": 0.0, "tanh": 0.1, "sigmoid": 0.3}[
        str(config["act"])
    ]
    speed = 0.3 + 0.01 * int(config["width"])
    return quality + 1.0 / (1.0 + speed * resource)


def objective(
    config: Mapping[str, Any], start: float, stop: float, state: Any
) -> tuple[Sequence[Mapping[str, Any]], Any]:
    """Report once per unit of resource (and at ``stop``)."""
    points = []
    r = math.floor(start) + 1
    while r < stop:
        points.append(float(r))
        r += 1
    points.append(float(stop))
    return [{"resource": p, "loss": curve(config, p)} for p in points], {"at": stop}


def available() -> list[str]:
    names = []
    for name in CASES:
        module = SCHEDULERS[name][0]
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise
            continue
        names.append(name)
    return names


def make(name: str, seed: int = 0, **overrides: Any) -> Scheduler:
    kwargs = {**CASES[name], **overrides}
    return create_scheduler(name, space=SPACE, metric="loss", mode="min", seed=seed, **kwargs)


@pytest.fixture(params=available())
def scheduler_name(request: pytest.FixtureRequest) -> str:
    return str(request.param)
