"""Trainables that say which process trained them, for process-pool and Dask tests.

They are registered with ``@trainable`` in an importable module (not
``__main__``), so worker processes find them by importing this module: the
flows layer adds a trainable's module to what workers import.
"""

from __future__ import annotations

import os

from examples.digits import train_digits
from flows.trainable import SegmentContext, trainable


@trainable("digits-pid")
def train_digits_pid(ctx: SegmentContext) -> None:
    """``digits`` plus the worker's pid in the last report."""
    train_digits(ctx)
    ctx.reports[-1]["pid"] = os.getpid()


@trainable("noop-pid")
def train_noop_pid(ctx: SegmentContext) -> None:
    """Report ``loss`` and the worker's pid at ``stop``; save the pid as checkpoint."""
    state = ctx.restore()
    ctx.report(ctx.stop, loss=1.0 / (1.0 + ctx.stop), pid=os.getpid())
    ctx.save({"pids": [*(state or {}).get("pids", []), os.getpid()]})
