"""The toy problem of Jaderberg et al. 2017 (section 4, figure 2), for PBT.

Maximise ``Q(theta) = 1.2 - (theta0^2 + theta1^2)`` but train each member by
gradient ascent on a *surrogate* ``Q_hat(theta | h) = 1.2 - (h0 * theta0^2 +
h1 * theta1^2)``. The hyperparameters ``h = (h0, h1)`` in ``[0, 1]^2`` decide which
coordinates move. Started with ``h = (1, 0)`` and ``h = (0, 1)`` from
``theta = (0.9, 0.9)``, each member alone only shrinks one coordinate and stalls
at ``Q = 1.2 - 0.81 = 0.39``; PBT, by copying the better ``theta`` and exploring
``h``, reaches the optimum ``Q = 1.2``.

``theta`` is the state carried in checkpoints. This module is pure (no Prefect):
:func:`objective` plugs into :func:`schedulers.simulate.simulate`, and the flows
layer wraps :func:`toy_step` as a trainable.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from schedulers import Budget, SearchSpace
from schedulers.pbt import PopulationBasedTraining

__all__ = [
    "INITIAL_H",
    "STEP_SIZE",
    "THETA0",
    "TOY_SPACE",
    "make_pbt",
    "objective",
    "q",
    "toy_step",
]

#: Starting weights of every member (as in the paper).
THETA0: tuple[float, float] = (0.9, 0.9)
#: Gradient-ascent step size on the surrogate.
STEP_SIZE = 0.05
#: The two members' initial hyperparameters.
INITIAL_H: tuple[dict[str, float], dict[str, float]] = (
    {"h0": 1.0, "h1": 0.0},
    {"h0": 0.0, "h1": 1.0},
)

TOY_SPACE = SearchSpace.parse(
    {
        "h0": {"type": "float", "low": 0.0, "high": 1.0},
        "h1": {"type": "float", "low": 0.0, "high": 1.0},
    }
)


def q(theta: Sequence[float]) -> float:
    """The true objective ``Q(theta) = 1.2 - |theta|^2`` (the metric, maximised)."""
    return 1.2 - (theta[0] ** 2 + theta[1] ** 2)


def toy_step(
    theta: Sequence[float], h: Sequence[float], steps: int, step_size: float = STEP_SIZE
) -> list[tuple[float, float]]:
    """``steps`` gradient-ascent steps on ``Q_hat(theta | h)``; the theta after each.

    ``grad Q_hat = (-2 h0 theta0, -2 h1 theta1)``, so each step multiplies
    ``theta_i`` by ``1 - 2 * step_size * h_i``.
    """
    t0, t1 = float(theta[0]), float(theta[1])
    out = []
    for _ in range(steps):
        t0 += step_size * (-2.0 * h[0] * t0)
        t1 += step_size * (-2.0 * h[1] * t1)
        out.append((t0, t1))
    return out


def objective(
    config: Mapping[str, Any], start: float, stop: float, state: Any
) -> tuple[list[dict[str, float]], list[float]]:
    """Simulator objective: train from ``start`` to ``stop`` (one step per unit).

    ``state`` is the theta saved by the segment restored from (the member's own
    or a PBT donor's); ``None`` starts from :data:`THETA0`. Reports ``Q`` after
    every step.
    """
    theta = THETA0 if state is None else tuple(state)
    steps = round(stop - start)
    thetas = toy_step(theta, (float(config["h0"]), float(config["h1"])), steps)
    reports = [
        {"resource": float(start) + i + 1, "Q": q(t), "theta0": t[0], "theta1": t[1]}
        for i, t in enumerate(thetas)
    ]
    return reports, list(thetas[-1] if thetas else theta)


def make_pbt(seed: int = 0, *, baseline: bool = False, **overrides: Any) -> PopulationBasedTraining:
    """The toy's PBT: two members, exploit/explore every 2 steps, 50 generations.

    ``baseline=True`` turns exploit and explore off (``quantile_fraction=0``), so
    each member keeps its initial ``h``: the paper's grid-search baseline.
    """
    kwargs: dict[str, Any] = {
        "space": TOY_SPACE,
        "metric": "Q",
        "mode": "max",
        "seed": seed,
        "perturbation_interval": 2,
        "population_size": 2,
        "max_generations": 50,
        "initial_configs": list(INITIAL_H),
        "budget": Budget(),
    }
    if baseline:
        kwargs.update(quantile_fraction=0.0, hyperparam_mutations={})
    kwargs.update(overrides)
    return PopulationBasedTraining(**kwargs)
