"""TPESearcher: BOHB's model choice, determinism, every distribution kind."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from schedulers import Budget, SchedulerArgumentError, SearchSpace
from schedulers.asha import ASHAScheduler
from schedulers.simulate import simulate
from schedulers.tpe import TPESearcher
from tests.schedulers.conftest import objective

MIXED = SearchSpace.parse(
    {
        "lr": {"type": "float", "low": 1e-4, "high": 1.0, "log": True},
        "drop": {"type": "float", "low": 0.0, "high": 0.5, "step": 0.1},
        "width": {"type": "int", "low": 8, "high": 64, "step": 8},
        "depth": {"type": "int", "low": 1, "high": 32, "log": True},
        "act": {"type": "categorical", "choices": ["relu", "tanh", None]},
    }
)


def loss(config: dict) -> float:
    return abs(np.log10(config["lr"]) + 2) + config["drop"] + (config["act"] != "relu")


def fed(n: int, resource: float = 1.0, **kwargs: object) -> TPESearcher:
    searcher = TPESearcher(MIXED, **kwargs)  # type: ignore[arg-type]
    rng = np.random.default_rng(0)
    for i in range(n):
        config = MIXED.sample(rng)
        searcher.observe(f"t{i}", config, resource, loss(config))
    return searcher


def test_random_until_min_points() -> None:
    searcher = fed(5)  # 5 params: min_points = 6
    assert searcher.model_resource() is None
    assert MIXED.contains(searcher.suggest("x", np.random.default_rng(1)))
    searcher.observe("t5", MIXED.sample(np.random.default_rng(9)), 1.0, 3.0)
    assert searcher.model_resource() == 1.0


def test_model_uses_highest_resource_with_enough_points() -> None:
    searcher = fed(10, resource=1.0, min_points=3)
    rng = np.random.default_rng(5)
    for i in range(2):
        searcher.observe(f"t{i}", MIXED.sample(rng), 9.0, 0.5)
    assert searcher.model_resource() == 1.0  # two points at 9 are not enough
    searcher.observe("t2", MIXED.sample(rng), 9.0, 0.5)
    assert searcher.model_resource() == 9.0


def test_deterministic_and_pure() -> None:
    searcher = fed(30, random_fraction=0.0)
    before = copy.deepcopy(searcher._obs)
    a = searcher.suggest("x", np.random.default_rng(3))
    b = searcher.suggest("x", np.random.default_rng(3))
    assert a == b and MIXED.contains(a)
    assert searcher._obs.keys() == before.keys()
    assert all(list(searcher._obs[r]) == list(before[r]) for r in before)


def test_every_distribution_kind_stays_in_space() -> None:
    searcher = fed(40, random_fraction=0.0)
    for seed in range(20):
        config = searcher.suggest("x", np.random.default_rng(seed))
        assert MIXED.contains(config), config
        assert isinstance(config["width"], int) and isinstance(config["depth"], int)


def test_model_concentrates_on_good_region() -> None:
    searcher = fed(60, random_fraction=0.0, max_observations=60)
    tpe = [loss(searcher.suggest("x", np.random.default_rng(s))) for s in range(30)]
    rand = [loss(MIXED.sample(np.random.default_rng(100 + s))) for s in range(30)]
    assert np.median(tpe) < np.median(rand)


def test_argument_errors_name_the_field() -> None:
    with pytest.raises(SchedulerArgumentError) as info:
        TPESearcher(MIXED, min_points=1)
    assert info.value.argument == "searcher_args.min_points"
    with pytest.raises(SchedulerArgumentError) as info:
        TPESearcher(MIXED, min_points=10, max_observations=5)
    assert "max_observations is 5" in str(info.value)


def test_asha_with_tpe_runs_and_models() -> None:
    from tests.schedulers.conftest import SPACE

    s = ASHAScheduler(
        space=SPACE, metric="loss", max_t=9, grace_period=1, reduction_factor=3,
        searcher="tpe", searcher_args={"min_points": 4}, budget=Budget(max_trials=25),
    )
    result = simulate(s, objective, max_concurrency=3)
    assert result.done is not None
    assert s.searcher.model_resource() is not None  # type: ignore[attr-defined]
