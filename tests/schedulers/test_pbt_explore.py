"""PBT explore never leaves the space (property tests) and follows Ray's rules."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from schedulers import SearchSpace
from schedulers.pbt_explore import explore, fit_value, perturb_value
from schedulers.space import sample_one

# Hypothesis draws ranges optuna shrinks to fit the step (with a warning); fine here.
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False)


@st.composite
def distributions(draw: st.DrawFn) -> BaseDistribution:
    kind = draw(st.sampled_from(["float", "log", "step", "int", "int_step", "int_log", "cat"]))
    if kind == "cat":
        n = draw(st.integers(1, 6))
        return CategoricalDistribution([f"c{i}" for i in range(n)] + [True, None][: n % 3])
    if kind in ("log", "int_log"):
        low = draw(st.floats(1e-6, 1e3)) if kind == "log" else draw(st.integers(1, 1000))
        high = low * draw(st.floats(1.0, 1e4))
        if kind == "log":
            return FloatDistribution(low, high, log=True)
        return IntDistribution(int(low), max(int(low), int(high)), log=True)
    if kind in ("int", "int_step"):
        low = draw(st.integers(-1000, 1000))
        high = low + draw(st.integers(0, 2000))
        step = draw(st.integers(1, 50)) if kind == "int_step" else 1
        return IntDistribution(low, high, step=step)
    if kind == "step":
        # Grid points must be representable: optuna checks them to 1e-8 steps,
        # so keep |low| / step small enough for float64 (an optuna limit).
        low = draw(st.floats(-1e3, 1e3))
        step = draw(st.floats(1e-3, 10.0))
        return FloatDistribution(low, low + step * draw(st.integers(0, 500)), step=step)
    low = draw(finite)
    high = low + draw(st.floats(0.0, 1e5))
    return FloatDistribution(low, high)


def contains(dist: BaseDistribution, value: Any) -> bool:
    return bool(dist._contains(dist.to_internal_repr(value)))


factors = st.lists(st.floats(1e-3, 1e3), min_size=1, max_size=3)


@settings(max_examples=400, deadline=None)
@given(
    dist=distributions(),
    seed=st.integers(0, 2**32 - 1),
    factors=factors,
    p=st.floats(0, 1),
    boundary=st.sampled_from(["clip", "reflect"]),
)
def test_perturbing_a_distribution_value_stays_inside(
    dist: BaseDistribution, seed: int, factors: list[float], p: float, boundary: Any
) -> None:
    rng = np.random.default_rng(seed)
    value = sample_one(dist, rng)
    for _ in range(5):  # repeated explores (generations) never drift out
        value, _op = perturb_value(
            dist, value, rng, resample_probability=p, perturbation_factors=factors,
            boundary=boundary,
        )
        assert contains(dist, value), (dist, value)


@settings(max_examples=200, deadline=None)
@given(
    values=st.lists(st.integers(-100, 100), min_size=1, max_size=8, unique=True),
    seed=st.integers(0, 2**32 - 1),
    p=st.floats(0, 1),
    boundary=st.sampled_from(["clip", "reflect"]),
)
def test_list_mutation_moves_to_an_adjacent_index_or_resamples(
    values: list[int], seed: int, p: float, boundary: Any
) -> None:
    rng = np.random.default_rng(seed)
    value = values[0]
    for _ in range(5):
        new, op = perturb_value(values, value, rng, resample_probability=p,
                                perturbation_factors=(1.2, 0.8), boundary=boundary)
        assert new in values
        if op != "resample":
            assert abs(values.index(new) - values.index(value)) <= 1
        value = new


@settings(max_examples=200, deadline=None)
@given(dist=distributions(), x=finite, boundary=st.sampled_from(["clip", "reflect"]))
def test_fit_value_lands_inside_numeric_distributions(
    dist: BaseDistribution, x: float, boundary: Any
) -> None:
    if isinstance(dist, CategoricalDistribution):
        return
    assert contains(dist, fit_value(dist, x, boundary))


@settings(max_examples=150, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), shift=finite, boundary=st.sampled_from(["clip", "reflect"]))
def test_whole_config_explore_with_a_custom_fn_stays_in_space(
    seed: int, shift: float, boundary: Any
) -> None:
    space = SearchSpace.parse(
        {
            "lr": {"type": "float", "low": 1e-4, "high": 1.0, "log": True},
            "drop": {"type": "float", "low": 0.0, "high": 0.5, "step": 0.05},
            "width": {"type": "int", "low": 8, "high": 64, "step": 8},
            "act": {"type": "categorical", "choices": ["relu", "tanh", "gelu"]},
        }
    )
    rng = np.random.default_rng(seed)
    config = space.sample(rng)
    new, record = explore(
        config, dict(space), space, rng, resample_probability=0.25,
        perturbation_factors=(1.2, 0.8), boundary=boundary,
        custom_explore_fn=lambda c: {**c, "drop": c["drop"] + shift},
    )
    assert space.contains(new)
    assert set(record["changes"]) == set(space)


def test_int_values_never_get_stuck_on_rounding() -> None:
    dist = IntDistribution(1, 10)
    rng = np.random.default_rng(0)
    moved = {perturb_value(dist, 1, rng, resample_probability=0.0,
                           perturbation_factors=(1.2,))[0] for _ in range(5)}
    assert moved == {2}  # Ray's int(1 * 1.2) stays at 1


@pytest.mark.parametrize(
    ("boundary", "expected"), [("clip", 1.0), ("reflect", 0.8)]
)
def test_clip_and_reflect_at_the_upper_bound(boundary: Any, expected: float) -> None:
    dist = FloatDistribution(0.0, 1.0)
    assert fit_value(dist, 1.2, boundary) == pytest.approx(expected)


def test_reflect_on_a_log_scale() -> None:
    dist = FloatDistribution(1e-3, 1.0, log=True)
    assert fit_value(dist, 10.0, "reflect") == pytest.approx(0.1)


def test_step_values_snap_to_the_grid() -> None:
    dist = FloatDistribution(0.0, 1.0, step=0.25)
    assert fit_value(dist, 0.6, "clip") == 0.5
    assert fit_value(dist, 7.0, "clip") == 1.0


def test_categorical_moves_to_a_neighbour() -> None:
    dist = CategoricalDistribution(["a", "b", "c"])
    rng = np.random.default_rng(1)
    seen = {perturb_value(dist, "b", rng, resample_probability=0.0,
                          perturbation_factors=(1.2,))[0] for _ in range(30)}
    assert seen == {"a", "c"}


def test_callable_mutation_gets_the_decision_rng() -> None:
    space = SearchSpace.parse({"x": {"type": "float", "low": 0.0, "high": 1.0}})
    draws = [
        explore({"x": 0.5}, {"x": lambda rng: float(rng.uniform(0, 3))}, space,
                np.random.default_rng(7), resample_probability=1.0,
                perturbation_factors=(1.2,))[0]["x"]
        for _ in range(2)
    ]
    assert draws[0] == draws[1] and 0.0 <= draws[0] <= 1.0


def test_perturbation_factor_is_drawn_uniformly_and_applied() -> None:
    """Each factor of ``perturbation_factors`` is chosen about equally often, and the
    value moves by exactly the factor drawn (a rule that always took the first
    factor, or applied another one than it records, fails here)."""
    dist = FloatDistribution(0.0, 100.0)
    rng = np.random.default_rng(7)
    counts = {"x1.2": 0, "x0.8": 0, "x3": 0}
    for _ in range(3000):
        new, op = perturb_value(dist, 10.0, rng, resample_probability=0.0,
                                perturbation_factors=(1.2, 0.8, 3.0))
        counts[op] += 1
        assert new == pytest.approx(10.0 * float(op[1:]))
    assert all(900 <= c <= 1100 for c in counts.values()), counts
    # resample_probability = 1 never perturbs by a factor.
    _, op = perturb_value(dist, 10.0, rng, resample_probability=1.0,
                          perturbation_factors=(1.2, 0.8))
    assert op == "resample"
