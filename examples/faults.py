"""A trainable for failure drills: crash the flow run once, or train slowly.

``faults`` behaves like a small, deterministic learner (``loss`` falls with
resource, offset by the config) and saves a checkpoint per segment, so resumed
trials really restore. Two knobs in the spec's ``trainable_args``:

* ``crash_once_at`` (a resource) and ``crash_marker`` (a file path): the first
  segment that trains up to ``crash_once_at`` creates the marker file and
  raises :class:`WorkerLost`, failing the *flow run* (not just the trial).
  Later segments see the marker and train normally, so a retried flow run gets
  past the same point. Drop the marker to arm it again.
* ``seconds_per_unit``: sleep per resource unit, so a drill has time to cancel
  or kill a run mid-experiment.

Why :class:`WorkerLost` derives from ``BaseException``: the runner treats any
``Exception`` from a trainable as that trial's own failure (the trial fails,
the experiment goes on). What takes a whole flow run down in production is the
machinery dying underneath it (an OOM-killed worker, a lost node, a
``KeyboardInterrupt``), which Prefect reports as a crashed run. ``WorkerLost``
stands in for that, honestly: it is not caught by the runner, the flow run ends
``Crashed`` and the event log keeps the started-but-unfinished segment.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from flows.trainable import SegmentContext, trainable

__all__ = ["WorkerLost", "train_faults"]


class WorkerLost(BaseException):
    """Simulated loss of the process running a segment (see module docs)."""


def _maybe_crash(ctx: SegmentContext) -> None:
    crash_at = ctx.args.get("crash_once_at")
    marker = ctx.args.get("crash_marker")
    if crash_at is None or marker is None or float(ctx.stop) != float(crash_at):
        return
    try:
        # O_EXCL: exactly one segment wins the marker, even with concurrency.
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return
    os.close(fd)
    raise WorkerLost(f"injected: worker lost while training {ctx.trial_id} to {ctx.stop:g}")


@trainable("faults")
def train_faults(ctx: SegmentContext) -> None:
    """Deterministic learner with injectable flow-run failures (see module docs)."""
    state = ctx.restore()
    if ctx.start > 0 and (state is None or float(state["resource"]) != float(ctx.start)):
        raise RuntimeError(f"{ctx.trial_id}: expected a checkpoint at {ctx.start:g}, got {state}")
    delay = float(ctx.args.get("seconds_per_unit", 0.0))
    offset = sum(float(v) for v in ctx.config.values() if isinstance(v, (int, float)))
    resource = float(ctx.start)
    while resource < ctx.stop:
        if delay > 0:
            time.sleep(delay)
        resource = min(float(ctx.stop), resource + 1.0)
        if resource == ctx.stop:
            _maybe_crash(ctx)
        ctx.report(resource, loss=offset + 1.0 / (1.0 + resource))
    ctx.save({"resource": resource})


def marker_exists(path: str | Path) -> bool:
    """Whether the crash marker at ``path`` has fired."""
    return Path(path).exists()
