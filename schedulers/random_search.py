"""Full-budget baselines: random search and FIFO over a fixed grid.

Both train every trial in one segment from 0 to ``max_t``. They are the
baselines the multi-fidelity schedulers must beat, and the simplest
implementations of the :class:`schedulers.Scheduler` contract.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any

from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from schedulers.actions import Action, RunSegment, Stop, Wait
from schedulers.base import Scheduler, SchedulerArgumentError
from schedulers.events import Event, SegmentFailed, SegmentFinished, TrialStopped
from schedulers.searchers import RandomSearcher
from schedulers.validation import check_argument, check_max_t

__all__ = ["FIFOScheduler", "RandomScheduler"]


class _FullBudget(Scheduler):
    """Shared logic: one segment per trial, 0 -> max_t, configs from ``_config``."""

    def __init__(self, *, max_t: float = 1, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.max_t = check_max_t(max_t)
        # Trials that reached max_t but whose completion is not yet recorded.
        self._to_stop: dict[str, None] = {}

    def on_event(self, event: Event) -> None:
        if isinstance(event, SegmentFinished) and event.stop >= self.max_t:
            self._to_stop[event.trial_id] = None
        elif isinstance(event, (TrialStopped, SegmentFailed)):
            self._to_stop.pop(event.trial_id, None)

    def _has_config(self, index: int) -> bool:
        return True

    def _config(self, index: int, trial_id: str, salt: int) -> dict[str, Any]:
        raise NotImplementedError

    def ask(self, n: int = 1) -> list[Action]:
        # A trial that reached max_t is completed: record it, so status shows
        # "completed" rather than a pause that will never be resumed.
        actions: list[Action] = []
        for trial_id in list(self._to_stop)[:n]:
            actions.append(Stop(trial_id, "completed"))
        if actions:
            return actions
        for i in range(n):
            index = len(self.trials) + i
            if (
                self.finished
                or not self._has_config(index)
                or not self.can_create_trial(pending_new=i)
                or not self.can_spend(self.max_t, pending=i * self.max_t)
            ):
                break
            trial_id = self.new_trial_id(offset=i)
            config = self._config(index, trial_id, salt=i)
            actions.append(
                RunSegment(trial_id, config, 0, self.max_t, new_trial=True, info={"index": index})
            )
        if actions:
            return actions
        if self.running:
            return [Wait()]
        return [self.done_action()]


class RandomScheduler(_FullBudget):
    """Random search: each trial gets a fresh random config and the full ``max_t``.

    Args:
        max_t: Resource every trial is trained to (Ray's ``max_t``; R in the
            HyperBand paper).

    Example:
        >>> from schedulers import Budget, SearchSpace, RandomScheduler
        >>> lr = {"type": "float", "low": 1e-3, "high": 1, "log": True}
        >>> space = SearchSpace.parse({"lr": lr})
        >>> s = RandomScheduler(space=space, metric="loss", max_t=5, budget=Budget(max_trials=2))
        >>> [a.stop for a in s.ask(3)]
        [5, 5]
    """

    name = "random"

    def __init__(self, *, max_t: float = 1, **kwargs: Any) -> None:
        super().__init__(max_t=max_t, **kwargs)
        self.searcher = RandomSearcher(self.space)

    def _config(self, index: int, trial_id: str, salt: int) -> dict[str, Any]:
        return self.searcher.suggest(trial_id, self.rng(salt))


def _grid_values(name: str, dist: Any, points: int) -> list[Any]:
    if isinstance(dist, CategoricalDistribution):
        return list(dist.choices)
    if isinstance(dist, IntDistribution):
        values = list(range(dist.low, dist.high + 1, dist.step))
        if len(values) <= points:
            return values
        idx = sorted({round(i * (len(values) - 1) / (points - 1)) for i in range(points)})
        return [values[i] for i in idx]
    if isinstance(dist, FloatDistribution):
        if points == 1:
            return [dist.low]
        if dist.log:
            import math

            lo, hi = math.log(dist.low), math.log(dist.high)
            grid = (math.exp(lo + (hi - lo) * i / (points - 1)) for i in range(points))
            return [float(min(dist.high, max(dist.low, x))) for x in grid]
        return [dist.low + (dist.high - dist.low) * i / (points - 1) for i in range(points)]
    raise SchedulerArgumentError("space", f"space.{name} cannot be put on a grid")


class FIFOScheduler(_FullBudget):
    """Grid search in a fixed order: every combination, each to ``max_t``.

    Args:
        max_t: Resource every trial is trained to.
        grid: Optional explicit values per parameter; parameters not listed are
            gridded with ``points_per_dim`` points (all choices for categoricals).
        points_per_dim: Grid points for numeric parameters without explicit values.
    """

    name = "fifo"

    def __init__(
        self,
        *,
        max_t: float = 1,
        grid: Mapping[str, Sequence[Any]] | None = None,
        points_per_dim: int = 3,
        **kwargs: Any,
    ) -> None:
        super().__init__(max_t=max_t, **kwargs)
        check_argument("points_per_dim", points_per_dim)
        grid = dict(grid or {})
        axes: list[list[Any]] = []
        for name, dist in self.space.items():
            if name in grid:
                values = list(grid[name])
                for v in values:
                    if not dist._contains(dist.to_internal_repr(v)):
                        raise SchedulerArgumentError(
                            f"grid.{name}", f"grid.{name} value {v!r} is outside {dist!r}"
                        )
                axes.append(values)
            else:
                axes.append(_grid_values(name, dist, points_per_dim))
        unknown = set(grid) - set(self.space)
        if unknown:
            raise SchedulerArgumentError("grid", f"grid names unknown parameters {sorted(unknown)}")
        names = list(self.space)
        self.grid = [dict(zip(names, combo, strict=True)) for combo in itertools.product(*axes)]

    def _has_config(self, index: int) -> bool:
        return index < len(self.grid)

    def _config(self, index: int, trial_id: str, salt: int) -> dict[str, Any]:
        return dict(self.grid[index])
