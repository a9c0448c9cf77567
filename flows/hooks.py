"""In-process hooks the ``tune`` flow calls after each recorded result.

The flow takes no callback parameter (parameters are what the Prefect UI
shows), so a caller in the same process (the CLI's progress bar) registers a
hook here for the duration of a run. The CLI depends on this module, never
the other way round.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flows.engine.runner import ExperimentRunner

__all__ = ["PROGRESS_HOOKS"]

#: Hooks called by the ``tune`` flow after each recorded result, in this process.
PROGRESS_HOOKS: list[Callable[[ExperimentRunner], None]] = []
