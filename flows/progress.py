"""Live progress for the CLI: segments done, best so far, failures.

The flow takes no callback parameter (parameters are what the Prefect UI
shows), so the CLI installs an in-process hook for the duration of the run.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from types import TracebackType
from typing import TYPE_CHECKING

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from flows.spec import ExperimentSpec

if TYPE_CHECKING:
    from flows.runner import ExperimentRunner

__all__ = ["PROGRESS_HOOKS", "CliProgress"]

#: Hooks called by the ``tune`` flow after each recorded result, in this process.
PROGRESS_HOOKS: list[Callable[[ExperimentRunner], None]] = []


class CliProgress(AbstractContextManager["CliProgress"]):
    """A rich progress bar fed by :data:`PROGRESS_HOOKS`."""

    def __init__(self, spec: ExperimentSpec, console: Console, enabled: bool = True) -> None:
        self.spec = spec
        self.enabled = enabled
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[detail]}"),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        )
        self.task_id = self.progress.add_task(
            spec.name, total=self._total(), detail="starting", start=True
        )

    def _total(self) -> float | None:
        budget = self.spec.budget
        if budget.max_resource is not None:
            return budget.max_resource
        max_t = self.spec.scheduler_args.get("max_t")
        if budget.max_trials is not None and self.spec.scheduler in ("random", "fifo") and max_t:
            return float(budget.max_trials) * float(max_t)
        return None

    def __call__(self, runner: ExperimentRunner) -> None:
        best = runner.scheduler.best_trial()
        best_text = "-"
        if best is not None and best.last_score is not None:
            value = best.last_score if self.spec.mode == "min" else -best.last_score
            best_text = f"{value:.4g} ({best.trial_id})"
        s = runner.summary
        self.progress.update(
            self.task_id,
            completed=runner.scheduler.resource_used,
            detail=f"segments {s.segments_run} failed {s.segments_failed} "
            f"best {self.spec.metric}={best_text}",
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
