"""A multi-fidelity synthetic benchmark with a known optimum and crossing curves.

``synthetic_curve(config, resource)`` is the validation loss of a made-up
network after ``resource`` epochs. Large learning rates converge fast to a
poor loss while small ones start slow and end better, so learning curves
cross: what looks best at 1 epoch is not what is best at ``MAX_T`` epochs,
which is exactly what multi-fidelity schedulers must cope with.

Pure Python and numpy: usable as the ``objective`` of
:func:`schedulers.simulate.simulate` and, later, wrapped as a trainable.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from functools import cache
from typing import Any

from schedulers.space import SearchSpace

__all__ = ["MAX_T", "SPACE", "objective", "optimum", "regret", "synthetic_curve"]

#: Resource (epochs) at which configurations are compared.
MAX_T = 81

#: Learning speed scale. At 4.0 the best final configuration (lr ~ 1e-3) ranks
#: behind faster learners until ~10-20 epochs; smaller values make the curves
#: cross later and low-fidelity rankings more misleading (1.5 is adversarial:
#: ranking at 27 epochs still disagrees with 81).
SPEED = 4.0

SPACE = SearchSpace.parse(
    {
        "lr": {"type": "float", "low": 1e-4, "high": 1.0, "log": True},
        "width": {"type": "int", "low": 16, "high": 256, "log": True},
        "dropout": {"type": "float", "low": 0.0, "high": 0.6, "step": 0.05},
        "act": {"type": "categorical", "choices": ["relu", "tanh", "sigmoid"]},
    }
)

_ACT = {"relu": 0.0, "tanh": 0.05, "sigmoid": 0.15}


def _asymptote(config: Mapping[str, Any]) -> float:
    u = math.log10(float(config["lr"]))
    width = float(config["width"])
    return (
        0.05 * (u + 3.0) ** 2  # best asymptote at lr = 1e-3 ...
        + 0.3 * (float(config["dropout"]) - 0.2) ** 2
        + 0.1 * (1.0 - math.log(width / 16.0) / math.log(16.0))
        + _ACT[str(config["act"])]
    )


def _rate(config: Mapping[str, Any]) -> float:
    # ... but small learning rates learn slowly: the source of crossing curves.
    return SPEED * math.sqrt(float(config["lr"]))


def synthetic_curve(config: Mapping[str, Any], resource: float) -> float:
    """Loss after ``resource`` epochs (lower is better); 1.0 at resource 0."""
    asym = _asymptote(config)
    return asym + (1.0 - asym) * math.exp(-_rate(config) * float(resource))


@cache
def optimum(resource: float = MAX_T) -> float:
    """The smallest loss any configuration reaches at ``resource`` (known optimum).

    Width 256, relu and dropout 0.2 are optimal whatever the learning rate;
    only the learning rate trades asymptote against speed, so a fine 1-D
    search over it is exact to ~1e-9.
    """
    best = math.inf
    lo, hi = -4.0, 0.0
    for _ in range(4):  # successively refined grid
        step = (hi - lo) / 2000
        u_best = lo
        for i in range(2001):
            u = lo + i * step
            value = synthetic_curve(
                {"lr": 10**u, "width": 256, "dropout": 0.2, "act": "relu"}, resource
            )
            if value < best:
                best, u_best = value, u
        lo, hi = max(-4.0, u_best - step), min(0.0, u_best + step)
    return best


def regret(config: Mapping[str, Any], resource: float = MAX_T) -> float:
    """``synthetic_curve(config, resource) - optimum(resource)`` (>= 0)."""
    return synthetic_curve(config, resource) - optimum(resource)


def objective(
    config: Mapping[str, Any], start: float, stop: float, state: Any
) -> tuple[Sequence[Mapping[str, Any]], Any]:
    """Simulated segment for :func:`schedulers.simulate.simulate`: one report per epoch."""
    points = [float(r) for r in range(math.floor(start) + 1, math.ceil(stop))]
    points.append(float(stop))
    return [{"resource": p, "loss": synthetic_curve(config, p)} for p in points], {"at": stop}
