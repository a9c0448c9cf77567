"""PBT explore: perturb or resample hyperparameters without leaving their bounds.

This module holds the *what* of Population Based Training (the new config a
member gets after exploiting a donor); :mod:`schedulers.pbt` holds the *when*.

A mutation for one hyperparameter (Ray's ``hyperparam_mutations[key]``) is one of

* an optuna distribution (or its JSON short form ``{"type": "float", ...}``),
  perturbed by a factor from ``perturbation_factors`` if numeric and moved to an
  adjacent choice if categorical;
* a list of values, treated as an ordered set: perturbing moves to an adjacent
  index, resampling picks any element (Ray's list semantics);
* a callable ``fn(rng) -> value`` (Python API only; a JSON spec cannot hold
  one). It receives the decision's ``numpy.random.Generator`` so that replaying
  the log draws the same value; Ray's zero-argument lambdas must be wrapped.

Every value returned is inside the search space: numeric values outside the
bounds are clipped (``boundary="clip"``, the default) or mirrored back
(``boundary="reflect"``, in log space for log distributions), then snapped to
the ``step`` grid. ``int`` values that a factor would round back to the same
integer move one step in the factor's direction instead, so small integers
are not stuck forever (Ray's ``int(value * factor)`` keeps 1 at 1).
A value of exactly 0 is not moved by a factor; only resampling changes it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from schedulers.space import SearchSpace, SpaceError, parse_distribution, sample_one

__all__ = [
    "Boundary",
    "ExploreError",
    "Mutation",
    "explore",
    "fit_value",
    "parse_mutations",
    "perturb_value",
]

Boundary = Literal["clip", "reflect"]

#: A normalised mutation: a distribution, an ordered list of values or a sampler.
Mutation = BaseDistribution | list[Any] | Callable[[np.random.Generator], Any]


class ExploreError(ValueError):
    """An explored value cannot be made to fit the space; ``key`` names the parameter."""

    def __init__(self, key: str, message: str):
        super().__init__(message)
        self.key = key


@dataclass(frozen=True)
class _Change:
    """How one key was explored; recorded in the decision's ``info``."""

    op: str
    old: Any
    new: Any

    def to_json(self) -> dict[str, Any]:
        return {"op": self.op, "old": _plain(self.old), "new": _plain(self.new)}


def _plain(value: Any) -> Any:
    """numpy scalars to Python scalars, so configs stay JSON values."""
    if hasattr(value, "item") and not isinstance(value, (list, dict, str)):
        return value.item()
    return value


def _is_number(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float, np.integer, np.floating))


# ---------------------------------------------------------------- parsing
def parse_mutations(
    raw: Mapping[str, Any] | None, space: SearchSpace
) -> dict[str, Mutation]:
    """Normalise ``hyperparam_mutations`` against ``space``.

    ``None`` means "explore every parameter of the space with its own
    distribution". Keys must name parameters of the space. Distributions and
    lists must lie inside the space's distribution for that key, so explore
    can never produce a config the space rejects.

    Raises:
        ValueError: subclass :class:`ExploreError`, naming
            ``hyperparam_mutations.<key>`` and the rule it broke.
    """
    if raw is None:
        return {k: space[k] for k in space}
    if not isinstance(raw, Mapping):
        raise ExploreError(
            "hyperparam_mutations",
            f"hyperparam_mutations is {raw!r}, but must be a mapping of parameter to mutation",
        )
    out: dict[str, Mutation] = {}
    for key, value in raw.items():
        where = f"hyperparam_mutations.{key}"
        if key not in space:
            raise ExploreError(
                where, f"{where} names no parameter of the space; known: {sorted(space)}"
            )
        target = space[key]
        if callable(value) and not isinstance(value, BaseDistribution):
            out[key] = value
            continue
        if isinstance(value, (list, tuple)):
            if not value:
                raise ExploreError(where, f"{where} is an empty list, but must list values")
            if len({json.dumps(_plain(v), sort_keys=True) for v in value}) != len(value):
                raise ExploreError(where, f"{where} has duplicates: {list(value)!r}")
            for v in value:
                if not _inside(target, v):
                    raise ExploreError(where, f"{where} value {v!r} is outside space.{key}")
            out[key] = [_plain(v) for v in value]
            continue
        try:
            dist = parse_distribution(key, value)
        except SpaceError as exc:
            raise ExploreError(where, f"{where}: {exc}") from exc
        _check_subset(where, key, dist, target)
        out[key] = dist
    return out


def _inside(dist: BaseDistribution, value: Any) -> bool:
    try:
        return bool(dist._contains(dist.to_internal_repr(value)))
    except Exception:  # optuna raises ValueError for a value of the wrong kind
        return False


def _check_subset(where: str, key: str, dist: BaseDistribution, target: BaseDistribution) -> None:
    if isinstance(dist, CategoricalDistribution):
        for c in dist.choices:
            if not _inside(target, c):
                raise ExploreError(where, f"{where} choice {c!r} is outside space.{key}")
        return
    if not isinstance(dist, (FloatDistribution, IntDistribution)):
        raise ExploreError(where, f"{where} is {dist!r}, an unsupported distribution")
    if not isinstance(target, (FloatDistribution, IntDistribution)):
        raise ExploreError(where, f"{where} is numeric, but space.{key} is {target!r}")
    if isinstance(target, IntDistribution) and not isinstance(dist, IntDistribution):
        raise ExploreError(where, f"{where} is a float distribution, but space.{key} is int")
    if dist.low < target.low or dist.high > target.high:
        raise ExploreError(
            where,
            f"{where} spans [{dist.low}, {dist.high}], but space.{key} is "
            f"[{target.low}, {target.high}]",
        )


# ---------------------------------------------------------------- bounds
def _reflect(x: float, low: float, high: float) -> float:
    """Mirror ``x`` back into ``[low, high]`` (repeatedly, for large overshoots)."""
    if high <= low:
        return low
    width = high - low
    y = (x - low) % (2 * width)
    return low + (y if y <= width else 2 * width - y)


def fit_value(
    dist: BaseDistribution, value: float, boundary: Boundary = "clip"
) -> int | float:
    """Bring a numeric ``value`` inside ``dist``: clip or reflect, then snap to its grid."""
    assert isinstance(dist, (FloatDistribution, IntDistribution))
    low, high = float(dist.low), float(dist.high)
    x = float(value)
    if not math.isfinite(x):
        x = high if x > 0 else low
    if boundary == "reflect" and not low <= x <= high:
        if dist.log and x > 0:
            x = math.exp(_reflect(math.log(x), math.log(low), math.log(high)))
        else:
            x = _reflect(x, low, high)
    x = min(high, max(low, x))
    if isinstance(dist, IntDistribution):
        k = round((x - dist.low) / dist.step)
        n = (dist.high - dist.low) // dist.step
        return int(dist.low + dist.step * min(n, max(0, k)))
    if dist.step is not None:
        n = round((dist.high - dist.low) / dist.step)
        k = min(n, max(0, round((x - dist.low) / dist.step)))
        # min() guards against low + n*step landing a rounding error above high.
        return float(min(dist.high, dist.low + k * dist.step))
    return float(x)


def _adjacent(index: int, size: int, rng: np.random.Generator, boundary: Boundary) -> int:
    """One step left or right; at an end, stay (clip) or bounce back (reflect)."""
    if size <= 1:
        return 0
    new = index + (1 if rng.random() < 0.5 else -1)
    if 0 <= new < size:
        return new
    return index if boundary == "clip" else index - (new - index)


# ---------------------------------------------------------------- explore
def perturb_value(
    mutation: Mutation,
    value: Any,
    rng: np.random.Generator,
    *,
    resample_probability: float,
    perturbation_factors: Sequence[float],
    boundary: Boundary = "clip",
) -> tuple[Any, str]:
    """Explore one value: resample with ``resample_probability``, else perturb.

    Returns:
        ``(new_value, op)`` where ``op`` says what happened (``"resample"``,
        ``"x1.2"``, ``"index+1"``...). The new value is inside ``mutation``'s
        bounds (callables: see :func:`explore`, which checks against the space).
    """
    resample = bool(rng.random() < resample_probability)
    if isinstance(mutation, list):
        if resample or value not in mutation:
            return mutation[int(rng.integers(len(mutation)))], "resample"
        i = mutation.index(value)
        j = _adjacent(i, len(mutation), rng, boundary)
        return mutation[j], f"index{j - i:+d}"
    if isinstance(mutation, CategoricalDistribution):
        choices = list(mutation.choices)
        if resample or value not in choices:
            return sample_one(mutation, rng), "resample"
        i = choices.index(value)
        j = _adjacent(i, len(choices), rng, boundary)
        return choices[j], f"index{j - i:+d}"
    if isinstance(mutation, (FloatDistribution, IntDistribution)):
        if resample or not _is_number(value):
            # sample_one draws exp(uniform(log low, log high)) for log scales,
            # which can land one ulp outside; fit_value puts it back.
            return fit_value(mutation, sample_one(mutation, rng), boundary), "resample"
        factor = float(perturbation_factors[int(rng.integers(len(perturbation_factors)))])
        new = fit_value(mutation, float(value) * factor, boundary)
        if isinstance(mutation, IntDistribution) and new == value and factor != 1.0 and value:
            # Rounding undid the move; take one grid step in the factor's direction.
            direction = 1 if (factor > 1) == (value > 0) else -1
            new = fit_value(mutation, float(value) + direction * mutation.step, boundary)
        return new, f"x{factor:g}"
    if callable(mutation):
        if resample or not _is_number(value):
            return _plain(mutation(rng)), "resample"
        factor = float(perturbation_factors[int(rng.integers(len(perturbation_factors)))])
        new_value: Any = float(value) * factor
        if isinstance(value, (int, np.integer)):
            new_value = round(new_value)
        return new_value, f"x{factor:g}"
    raise ExploreError("hyperparam_mutations", f"unsupported mutation {mutation!r}")


def conform(
    key: str, value: Any, space: SearchSpace, boundary: Boundary
) -> tuple[Any, bool]:
    """Make ``value`` a member of ``space[key]``; numeric values are clipped.

    Returns:
        ``(value, changed)``; ``changed`` is True when the value had to be
        clipped or snapped.

    Raises:
        ExploreError: a value that is not numeric for a numeric parameter, or not
            one of the choices of a categorical parameter.
    """
    dist = space[key]
    value = _plain(value)
    if _inside(dist, value):
        return value, False
    if isinstance(dist, (FloatDistribution, IntDistribution)) and _is_number(value):
        fitted = fit_value(dist, float(value), boundary)
        return fitted, True
    raise ExploreError(
        key,
        f"explored value {key}={value!r} is not in space.{key} ({dist!r}) and cannot be clipped",
    )


def explore(
    config: Mapping[str, Any],
    mutations: Mapping[str, Mutation],
    space: SearchSpace,
    rng: np.random.Generator,
    *,
    resample_probability: float,
    perturbation_factors: Sequence[float],
    boundary: Boundary = "clip",
    custom_explore_fn: Callable[[dict[str, Any]], Mapping[str, Any]] | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The explored copy of a donor's ``config`` and a record of what changed.

    Keys are visited in the space's order so that the draws, and hence the
    result, depend only on ``rng``. ``custom_explore_fn`` runs afterwards on a
    copy (Ray's order); its output must keep the same keys. Numeric values it
    puts outside the space are clipped to the bounds (or reflected) and listed
    under ``"clipped"`` in the record; any other invalid value raises
    :class:`ExploreError` naming the key.
    """
    new = dict(config)
    changes: dict[str, Any] = {}
    for key in space:
        if key not in mutations or key not in new:
            continue
        value, op = perturb_value(
            mutations[key],
            new[key],
            rng,
            resample_probability=resample_probability,
            perturbation_factors=perturbation_factors,
            boundary=boundary,
        )
        value, clipped = conform(key, value, space, boundary)
        changes[key] = _Change(op + ("+clip" if clipped else ""), new[key], value).to_json()
        new[key] = value
    record: dict[str, Any] = {"changes": changes}
    if custom_explore_fn is not None:
        out = custom_explore_fn(dict(new))
        if not isinstance(out, Mapping):
            raise ExploreError(
                "custom_explore_fn", f"custom_explore_fn returned {out!r}, but must return a dict"
            )
        if set(out) != set(new):
            extra = sorted(set(out) - set(new))
            missing = sorted(set(new) - set(out))
            key = (extra or missing)[0]
            raise ExploreError(
                key,
                f"custom_explore_fn changed the keys (added {extra}, removed {missing}); "
                "it must return the same keys",
            )
        clipped_keys: dict[str, Any] = {}
        for key in new:
            value, clipped = conform(key, out[key], space, boundary)
            if clipped:
                clipped_keys[key] = [_plain(out[key]), value]
            new[key] = value
        if clipped_keys:
            record["clipped"] = clipped_keys
    return new, record
