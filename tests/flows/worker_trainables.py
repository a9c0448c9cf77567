"""Trainables that say which process trained them, for process-pool and Dask tests.

They are registered with ``@trainable`` in an importable module (not
``__main__``), so worker processes find them by importing this module: the
flows layer adds a trainable's module to what workers import.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from examples.digits import train_digits
from flows.trainable import SegmentContext, trainable


@trainable("digits-pid")
def train_digits_pid(ctx: SegmentContext) -> None:
    """``digits`` plus the worker's pid and its parent's in the last report."""
    train_digits(ctx)
    ctx.reports[-1]["pid"] = os.getpid()
    ctx.reports[-1]["ppid"] = os.getppid()  # a Ray worker's raylet: which node


@trainable("noop-pid")
def train_noop_pid(ctx: SegmentContext) -> None:
    """Report ``loss`` and the worker's pid at ``stop``; save the pid as checkpoint."""
    state = ctx.restore()
    ctx.report(ctx.stop, loss=1.0 / (1.0 + ctx.stop), pid=os.getpid())
    ctx.save({"pids": [*(state or {}).get("pids", []), os.getpid()]})


@trainable("ray-probe")
def train_ray_probe(ctx: SegmentContext) -> None:
    """``noop-pid`` plus what the worker sees: its Prefect API and its child processes.

    The checkpoint records the API URL the Prefect task engine uses in this
    worker and the command lines of the worker's children (a Prefect server of
    its own would be one).
    """
    import psutil
    from prefect.settings import PREFECT_API_URL

    ctx.report(ctx.stop, loss=1.0 / (1.0 + ctx.stop), pid=os.getpid())
    children = [" ".join(p.cmdline()) for p in psutil.Process().children(recursive=True)]
    ctx.save({"pid": os.getpid(), "ppid": os.getppid(), "api_url": PREFECT_API_URL.value(),
              "children": children})


@trainable("stall-once")
def train_stall_once(ctx: SegmentContext) -> None:
    """``noop-pid``, except that the first attempt of segment 0->1 of trial
    ``args['trial']`` writes its pid to ``args['marker']`` and waits to be killed.

    Its retry (the marker exists) trains normally. The wait is bounded so that a
    test whose kill never comes fails instead of hanging.
    """
    marker = Path(ctx.args["marker"])
    if ctx.trial_id == ctx.args["trial"] and ctx.start == 0 and not marker.exists():
        tmp = marker.with_suffix(".tmp")
        tmp.write_text(str(os.getpid()))
        tmp.rename(marker)  # atomic: the test never reads a half-written pid
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            time.sleep(0.05)
        raise TimeoutError("stall-once was not killed")
    train_noop_pid(ctx)
