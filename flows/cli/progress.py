"""Live progress for the CLI: segments done, best so far, failures.

The flow takes no callback parameter (parameters are what the Prefect UI
shows), so the CLI installs an in-process hook (:mod:`flows.hooks`) for the
duration of the run.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from types import TracebackType
from typing import TYPE_CHECKING

from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)

from flows.hooks import PROGRESS_HOOKS
from flows.spec import ExperimentSpec

if TYPE_CHECKING:
    from flows.engine.runner import ExperimentRunner

__all__ = ["CliProgress"]


class CliProgress(AbstractContextManager["CliProgress"]):
    """A rich progress bar fed by :data:`PROGRESS_HOOKS`.

    The bar is the share of the budget spent (see
    :func:`flows.artifacts.progress_fraction`; it pulses when the budget gives
    no end point); the text says segments done and failed, trials against
    ``budget.max_trials``, resource against ``budget.max_resource`` and the best
    metric so far.
    """

    def __init__(self, spec: ExperimentSpec, console: Console, enabled: bool = True) -> None:
        self.spec = spec
        self.enabled = enabled
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TaskProgressColumn(),
            TextColumn("{task.fields[detail]}"),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        )
        self.task_id = self.progress.add_task(
            spec.name, total=None, detail="starting", start=True
        )

    def detail(self, runner: ExperimentRunner) -> str:
        """The text next to the bar."""
        budget, scheduler, s = self.spec.budget, runner.scheduler, runner.summary
        best = scheduler.best_trial()
        best_text = "-"
        if best is not None and best.last_score is not None:
            value = best.last_score if self.spec.mode == "min" else -best.last_score
            best_text = f"{value:.4g} ({best.trial_id})"
        trials = f"trials {len(scheduler.trials)}"
        if budget.max_trials is not None:
            trials += f"/{budget.max_trials}"
        resource = f"resource {scheduler.resource_used:g}"
        if budget.max_resource is not None:
            resource += f"/{budget.max_resource:g}"
        return (
            f"segments {s.segments_run} ({s.segments_failed} failed) | {trials} | "
            f"{resource} | best {self.spec.metric}={best_text}"
        )

    def __call__(self, runner: ExperimentRunner) -> None:
        from flows.artifacts import progress_fraction

        fraction = progress_fraction(self.spec, runner.scheduler)
        self.progress.update(
            self.task_id,
            total=None if fraction is None else 1.0,
            completed=fraction or 0.0,
            detail=self.detail(runner),
        )

    def __enter__(self) -> CliProgress:
        if self.enabled:
            self.progress.start()
            PROGRESS_HOOKS.append(self)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self in PROGRESS_HOOKS:
            PROGRESS_HOOKS.remove(self)
        if self.enabled:
            self.progress.stop()
