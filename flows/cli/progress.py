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
from rich.table import Column

from flows.hooks import PROGRESS_HOOKS
from flows.spec import ExperimentSpec

if TYPE_CHECKING:
    from flows.engine.runner import ExperimentRunner

__all__ = ["CliProgress"]


class CliProgress(AbstractContextManager["CliProgress"]):
    """A rich progress bar fed by :data:`PROGRESS_HOOKS`.

    The bar is the share of the budget spent (see
    :func:`flows.artifacts.progress_fraction`; it pulses when the budget gives
    no end point, and reads 100% once the experiment is finished); the text
    says segments done and failed, trials against ``budget.max_trials``,
    resource against ``budget.max_resource`` and the best metric so far.

    Layout: name, bar, percentage and elapsed time come first and keep their
    width; the detail text takes what is left and is cut with an ellipsis, so
    an 80-column terminal still shows the bar and the numbers. Off a terminal
    (a CI log, a pipe) there is no live bar: one plain line is printed at the
    end, never cut. Before the first result the detail names the phase
    (Prefect starting, replaying the log).
    """

    def __init__(self, spec: ExperimentSpec, console: Console, enabled: bool = True) -> None:
        self.spec = spec
        self.console = console
        self.enabled = enabled
        self.live = enabled and console.is_terminal
        self.progress = Progress(
            TextColumn(
                "[bold]{task.description}",
                table_column=Column(no_wrap=True, overflow="ellipsis", max_width=24),
            ),
            BarColumn(bar_width=16),
            TaskProgressColumn(),
            TimeElapsedColumn(),
            TextColumn(
                "{task.fields[detail]}",
                table_column=Column(no_wrap=True, overflow="ellipsis", ratio=1),
            ),
            console=console,
            transient=False,
            expand=True,
        )
        self.task_id = self.progress.add_task(
            spec.name, total=None, detail="starting Prefect...", start=True
        )
        self._last_detail = "no segment finished"
        self._fraction: float | None = None
        self._runner: ExperimentRunner | None = None

    def phase(self, label: str) -> None:
        """Show ``label`` (e.g. "replaying the log") until the first result."""
        if self._runner is None:
            self.progress.update(self.task_id, detail=label)

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
            f"best {self.spec.metric}={best_text} | segments {s.segments_run} "
            f"({s.segments_failed} failed) | {trials} | {resource}"
        )

    def __call__(self, runner: ExperimentRunner) -> None:
        from flows.artifacts import progress_fraction

        self._runner = runner
        fraction = progress_fraction(self.spec, runner.scheduler)
        self._fraction = fraction
        self._last_detail = self.detail(runner)
        self.progress.update(
            self.task_id,
            total=None if fraction is None else 1.0,
            completed=fraction or 0.0,
            detail=self._last_detail,
        )

    def final_line(self, failed: bool = False) -> str:
        """The plain one-line summary printed off a terminal."""
        runner = self._runner
        if runner is not None and runner.scheduler.finished:
            state = "finished"
        else:
            state = "stopped" if failed else "ended"
        percent = "" if self._fraction is None else f" {100 * self._fraction:.0f}%"
        elapsed = self.progress.tasks[0].elapsed or 0.0
        return f"{self.spec.name}: {state}{percent} | {self._last_detail} | {elapsed:.1f} s"

    def __enter__(self) -> CliProgress:
        if self.enabled:
            if self.live:
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
        runner = self._runner
        if runner is not None:
            self(runner)  # the last result may have come before the final decision
            if runner.scheduler.finished:
                self._fraction = 1.0
                self.progress.update(self.task_id, total=1.0, completed=1.0)
        if not self.enabled:
            return
        if self.live:
            self.progress.stop()
        else:
            self.console.print(self.final_line(exc_type is not None), soft_wrap=True)
