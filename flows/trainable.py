"""The trainable API and its registry.

A trainable is a function that trains one segment::

    @trainable("my-model")
    def train(ctx: SegmentContext) -> None:
        model = ctx.restore() or make_model(**ctx.config)
        for epoch in range(int(ctx.start), int(ctx.stop)):
            loss = model.fit_one_epoch()
            ctx.report(epoch + 1, loss=loss)
        ctx.save(model)

Trainables are found by *name*: in this process's registry (the decorator) or
in the ``rungflow.trainables`` entry-point group of installed packages. A spec,
a CLI flag or a Prefect UI form can only pick a registered name; nothing ever
imports a module path supplied at run time.
"""

from __future__ import annotations

import math
import pickle
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any

from schedulers.events import CheckpointRef

__all__ = [
    "ENTRY_POINT_GROUP",
    "SegmentContext",
    "TrainableNotFoundError",
    "available_trainables",
    "get_trainable",
    "register_trainable",
    "trainable",
]

ENTRY_POINT_GROUP = "rungflow.trainables"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")

Trainable = Callable[["SegmentContext"], Any]
_REGISTRY: dict[str, Trainable] = {}


class TrainableNotFoundError(LookupError):
    """The spec names a trainable that is neither registered nor installed."""


def register_trainable(name: str, fn: Trainable) -> Trainable:
    """Register ``fn`` under ``name`` (a safe name: letters, digits, ``_.-``)."""
    if not _NAME.match(name):
        raise ValueError(f"trainable name {name!r} must match {_NAME.pattern}")
    _REGISTRY[name] = fn
    return fn


def trainable(name: str) -> Callable[[Trainable], Trainable]:
    """Decorator form of :func:`register_trainable`."""

    def decorate(fn: Trainable) -> Trainable:
        return register_trainable(name, fn)

    return decorate


def _entry_points() -> dict[str, Any]:
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def available_trainables() -> list[str]:
    """Names a spec may use: registered in this process or installed."""
    return sorted(set(_REGISTRY) | set(_entry_points()))


def get_trainable(name: str) -> Trainable:
    """Look a trainable up by name.

    Raises:
        TrainableNotFoundError: naming the trainables that do exist.
    """
    if name in _REGISTRY:
        return _REGISTRY[name]
    ep = _entry_points().get(name)
    if ep is None:
        raise TrainableNotFoundError(
            f"trainable is {name!r}, but must be one of {available_trainables()} "
            f"(register one with @trainable or the {ENTRY_POINT_GROUP!r} entry point)"
        )
    fn = ep.load()
    _REGISTRY[name] = fn
    return fn


class MetricNotReportedError(RuntimeError):
    """The trainable finished a segment without reporting the experiment's metric."""


@dataclass
class SegmentContext:
    """What a trainable sees while it trains one segment.

    Attributes:
        config: Hyperparameters of the trial for this segment.
        start: Resource the trial has reached (0 for a new trial).
        stop: Resource to train up to (report at ``stop`` last).
        trial_id: Stable id of the trial.
        experiment: Name of the experiment.
        args: The spec's fixed ``trainable_args``.
    """

    config: Mapping[str, Any]
    start: float
    stop: float
    trial_id: str
    experiment: str
    args: Mapping[str, Any] = field(default_factory=dict)
    reports: list[dict[str, Any]] = field(default_factory=list)
    _restore: Callable[[], bytes | None] = lambda: None
    _saved: bytes | None = None

    def restore(self) -> Any | None:
        """The state saved by the segment this one continues (own or PBT donor's).

        Returns None for a new trial. Raises
        :class:`storage.CheckpointError` if the checkpoint is missing or corrupt.
        """
        data = self._restore()
        return None if data is None else pickle.loads(data)

    def report(self, resource: float, **metrics: Any) -> None:
        """Record metrics at ``resource`` (e.g. after each epoch)."""
        clean: dict[str, Any] = {"resource": float(resource)}
        for key, value in metrics.items():
            if hasattr(value, "item"):
                value = value.item()
            if isinstance(value, float) and not math.isfinite(value):
                value = None
            clean[key] = value
        self.reports.append(clean)

    def save(self, state: Any) -> None:
        """Checkpoint ``state`` (pickled) so a later segment can :meth:`restore` it."""
        self._saved = pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)


@dataclass(frozen=True)
class SegmentOutcome:
    """What a finished segment hands back to the flow."""

    reports: tuple[dict[str, Any], ...]
    checkpoint: CheckpointRef | None


def final_metrics(reports: tuple[Mapping[str, Any], ...]) -> dict[str, Any]:
    return dict(reports[-1]) if reports else {}


#: A pure simulator objective (see :data:`schedulers.simulate.Objective`).
Objective = Callable[[Mapping[str, Any], float, float, Any], tuple[Any, Any]]


def objective_trainable(objective: Objective) -> Trainable:
    """Wrap a pure simulator objective as a trainable.

    The same function then drives both :func:`schedulers.simulate.simulate`
    (benchmarks, unit tests) and real flow runs, with its state carried in
    checkpoints. ``trainable_args.seconds_per_unit`` adds a sleep per resource
    unit, to stand in for real training time.
    """

    def train(ctx: SegmentContext) -> None:
        import time

        reports, state = objective(ctx.config, ctx.start, ctx.stop, ctx.restore())
        delay = float(ctx.args.get("seconds_per_unit", 0.0))
        for report in reports:
            if delay > 0:
                time.sleep(delay)
            metrics = {k: v for k, v in report.items() if k != "resource"}
            ctx.report(report["resource"], **metrics)
        ctx.save(state)

    train.__doc__ = f"Trainable wrapping {getattr(objective, '__qualname__', objective)!s}."
    return train
