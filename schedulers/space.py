"""Search spaces as optuna distributions.

A :class:`SearchSpace` maps parameter names to
``optuna.distributions.BaseDistribution``. It is stored in the event log with
``distribution_to_json`` and sampled with a caller-supplied numpy generator so
that every draw is reproducible from the scheduler's seed.

Sampling is written here instead of going through ``optuna.samplers.
RandomSampler`` because that sampler needs a Study object and its own RNG; the
arithmetic (uniform on the log scale, snapping to ``step``) is a few lines and
matches optuna's RandomSampler.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
    distribution_to_json,
    json_to_distribution,
)

__all__ = ["SearchSpace", "SpaceError", "parse_distribution"]

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]{0,63}$")


class SpaceError(ValueError):
    """A search-space entry is malformed; the message names the parameter."""


def _number(field: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SpaceError(f"{field} is {value!r}, but must be a number")
    if not math.isfinite(float(value)):
        raise SpaceError(f"{field} is {value!r}, but must be finite")
    return float(value)


def _integer(field: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise SpaceError(f"{field} is {value!r}, but must be an integer")
    return value


def parse_distribution(name: str, raw: Any) -> BaseDistribution:
    """Build one distribution from its user form.

    Accepted forms: an optuna distribution object; optuna's JSON as a string
    or mapping (``{"name": "FloatDistribution", "attributes": {...}}``); or the short form
    ``{"type": "float"|"int"|"categorical", "low", "high", "log", "step",
    "choices"}``.

    Raises:
        SpaceError: naming ``space.<name>.<field>`` and the rule it broke.
    """
    where = f"space.{name}"
    if isinstance(raw, BaseDistribution):
        return raw
    if isinstance(raw, str):
        # The stored form: optuna's distribution_to_json string.
        try:
            return json_to_distribution(raw)
        except Exception as exc:
            raise SpaceError(f"{where} is not a valid optuna distribution JSON: {exc}") from exc
    if not isinstance(raw, Mapping):
        raise SpaceError(f"{where} is {raw!r}, but must be a mapping with a 'type'")
    if "name" in raw and "attributes" in raw:
        try:
            return json_to_distribution(json.dumps(dict(raw)))
        except Exception as exc:  # optuna raises bare ValueError/KeyError here
            raise SpaceError(f"{where} is not a valid optuna distribution: {exc}") from exc
    kind = raw.get("type")
    allowed = {
        "float": {"type", "low", "high", "log", "step"},
        "int": {"type", "low", "high", "log", "step"},
        "categorical": {"type", "choices"},
    }
    if kind not in allowed:
        raise SpaceError(f"{where}.type is {kind!r}, but must be one of float, int, categorical")
    unknown = set(raw) - allowed[kind]
    if unknown:
        raise SpaceError(
            f"{where} has unknown field(s) {sorted(unknown)}; allowed: {sorted(allowed[kind])}"
        )
    if kind == "categorical":
        choices = raw.get("choices")
        if not isinstance(choices, (list, tuple)) or len(choices) == 0:
            raise SpaceError(f"{where}.choices is {choices!r}, but must be a non-empty list")
        for i, c in enumerate(choices):
            if c is not None and not isinstance(c, (str, int, float, bool)):
                raise SpaceError(
                    f"{where}.choices[{i}] is {c!r}, but must be a string, number, bool or null"
                )
        if len({json.dumps(c) for c in choices}) != len(choices):
            raise SpaceError(f"{where}.choices has duplicates: {choices!r}")
        return CategoricalDistribution(list(choices))
    for key in ("low", "high"):
        if key not in raw:
            raise SpaceError(f"{where}.{key} is missing")
    log = raw.get("log", False)
    if not isinstance(log, bool):
        raise SpaceError(f"{where}.log is {log!r}, but must be true or false")
    step = raw.get("step")
    if kind == "float":
        low = _number(f"{where}.low", raw["low"])
        high = _number(f"{where}.high", raw["high"])
        fstep = None if step is None else _number(f"{where}.step", step)
        _check_bounds(where, low, high, log, fstep)
        return FloatDistribution(low, high, log=log, step=fstep)
    ilow = _integer(f"{where}.low", raw["low"])
    ihigh = _integer(f"{where}.high", raw["high"])
    istep = 1 if step is None else _integer(f"{where}.step", step)
    _check_bounds(where, ilow, ihigh, log, None if istep == 1 else istep)
    return IntDistribution(ilow, ihigh, log=log, step=istep)


def _check_bounds(where: str, low: float, high: float, log: bool, step: float | None) -> None:
    if low > high:
        raise SpaceError(f"{where}.low is {low}, but must be <= high ({high})")
    if log and low <= 0:
        raise SpaceError(f"{where}.low is {low}, but must be > 0 when log is true")
    if step is not None:
        if step <= 0:
            raise SpaceError(f"{where}.step is {step}, but must be > 0")
        if log:
            raise SpaceError(f"{where}.step is {step}, but step and log cannot be combined")


class SearchSpace(Mapping[str, BaseDistribution]):
    """An ordered mapping of parameter name to optuna distribution."""

    def __init__(self, distributions: Mapping[str, BaseDistribution]):
        if not distributions:
            raise SpaceError("space is empty, but must define at least one parameter")
        for name in distributions:
            if not _NAME.match(name):
                raise SpaceError(
                    f"space parameter name {name!r} must match {_NAME.pattern} "
                    "(letters, digits, '_', '.', '-'; at most 64 characters)"
                )
        self._d = dict(distributions)

    @classmethod
    def parse(cls, raw: Mapping[str, Any]) -> SearchSpace:
        """Parse a user-supplied mapping (YAML/JSON/UI form)."""
        if not isinstance(raw, Mapping):
            raise SpaceError(f"space is {raw!r}, but must be a mapping of name to distribution")
        return cls({str(k): parse_distribution(str(k), v) for k, v in raw.items()})

    def __getitem__(self, key: str) -> BaseDistribution:
        return self._d[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._d)

    def __len__(self) -> int:
        return len(self._d)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SearchSpace) and self._d == other._d

    def __hash__(self) -> int:
        return hash(tuple(sorted(self.to_json().items())))

    def __repr__(self) -> str:
        return f"SearchSpace({self._d!r})"

    def to_json(self) -> dict[str, str]:
        """Each distribution as optuna's ``distribution_to_json`` string."""
        return {k: distribution_to_json(v) for k, v in self._d.items()}

    @classmethod
    def from_json(cls, data: Mapping[str, str]) -> SearchSpace:
        return cls({k: json_to_distribution(v) for k, v in data.items()})

    def differences(self, other: SearchSpace) -> list[str]:
        """Human-readable reasons why ``other`` cannot resume an experiment on ``self``."""
        out = []
        for name in sorted(set(self) | set(other)):
            if name not in other:
                out.append(f"parameter {name!r} was removed")
            elif name not in self:
                out.append(f"parameter {name!r} was added")
            elif self[name] != other[name]:
                out.append(f"parameter {name!r} changed from {self[name]!r} to {other[name]!r}")
        return out

    def sample(self, rng: np.random.Generator) -> dict[str, Any]:
        """Draw one configuration (same law as optuna's RandomSampler)."""
        return {name: sample_one(dist, rng) for name, dist in self._d.items()}

    def contains(self, config: Mapping[str, Any]) -> bool:
        return set(config) == set(self._d) and all(
            self._d[k]._contains(self._d[k].to_internal_repr(v)) for k, v in config.items()
        )


def sample_one(dist: BaseDistribution, rng: np.random.Generator) -> Any:
    """Draw one value of ``dist`` with ``rng``; the value is inside ``dist``."""
    if isinstance(dist, CategoricalDistribution):
        return dist.choices[int(rng.integers(len(dist.choices)))]
    if isinstance(dist, FloatDistribution):
        if dist.log:
            # exp(log(x)) can land one ulp outside [low, high]: clip.
            x = math.exp(rng.uniform(math.log(dist.low), math.log(dist.high)))
            return float(min(dist.high, max(dist.low, x)))
        if dist.step is not None:
            n = round((dist.high - dist.low) / dist.step)
            return float(min(dist.high, dist.low + dist.step * int(rng.integers(n + 1))))
        return float(rng.uniform(dist.low, dist.high))
    if isinstance(dist, IntDistribution):
        if dist.log:
            x = math.exp(rng.uniform(math.log(dist.low - 0.5), math.log(dist.high + 0.5)))
            return int(min(dist.high, max(dist.low, round(x))))
        n = (dist.high - dist.low) // dist.step
        return dist.low + dist.step * int(rng.integers(n + 1))
    raise SpaceError(f"unsupported distribution {dist!r}")
