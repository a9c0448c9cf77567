"""Throughput and worker utilization of rungflow on Dask, for 1, 2 and 4 workers.

Each run trains the installed ``synthetic`` trainable with
``trainable_args.seconds_per_unit`` (default 0.2 s of sleep per resource unit),
so the useful work of every segment is known exactly and the rest is
orchestration. For every worker count a LocalCluster of that many
single-threaded worker processes is started once (startup is not measured) and
reached through ``RUNGFLOW_DASK_ADDRESS``, exactly as an external cluster is.

Schedulers: ASHA (max_t 4, grace 1, eta 2: segments of 1 or 2 units) and
asynchronous PBT (perturbation interval 1: segments of 1 unit), each with a
resource budget proportional to the worker count so every run has the same
ideal length. Two concurrency levels:

* ``in flight = workers``: a worker that finishes a segment idles until the
  flow has recorded the result, asked the scheduler, recorded the start and
  submitted the next task;
* ``in flight = 2 x workers``: Dask keeps the second task queued on the worker
  (worker-saturation), so the flow's turnaround overlaps with training.

Figures per run:

* throughput: finished segments per second of wall time (first submit to last
  result) and its ideal, ``segments / (useful / workers)``;
* utilization: useful seconds / (workers x wall) -- the ratio to ideal;
* where the flow thread's time went: ``submit`` (Prefect task submission, the
  call site), ``wait`` (idle in ``as_completed``), ``result`` and ``record``
  (event-log appends, scheduler ask/tell, retention); and the implied
  per-segment loss, ``(workers x wall - useful) / segments``, which includes
  the Prefect task engine in the worker (task-run creation, state events).

Usage:
    python benchmarks/scaling.py [--workers 1 2 4] [--seconds 0.2] [--units 30]
        [--schedulers asha pbt] [--oversubscribe 1 2]

Runs in about 4 minutes on 2 busy cores with the defaults.

Figures (2 cores, load average ~7 from other jobs, 0.2 s per unit, 40 units
per worker; util / segments per second; "x2" = two in flight per worker)::

    ASHA  1 worker  60% / 2.6   x2 69% / 3.1     PBT  56% / 2.8   x2 56% / 2.8
    ASHA  2 workers 51% / 4.4   x2 50% / 4.4     PBT  53% / 5.3   x2 50% / 5.0
    ASHA  4 workers 34% / 5.9   x2 35% / 6.2     PBT  32% / 6.5   x2 34% / 6.7

Where the time goes: the Prefect task engine around each segment in the worker
costs ~90-300 ms of CPU (per task run it rebuilds Prefect's settings from the
serialized context with pydantic-settings and opens a new API client, whose
SSL context alone loads the CA bundle), and submitting a task to Dask costs the
flow thread 30-110 ms (context serialization, pickling). Queuing a second
segment per worker hides the flow's turnaround (idle drops from ~60-90 ms to
<10 ms per segment) but not the engine. With 4 workers on 2 cores both are
CPU-bound and the flow thread (submit + result + record ~150 ms per segment)
caps throughput near 6-7 segments/s. The 95% goal needs segments ~20x longer
than that fixed cost (a few seconds: a real epoch), not 0.2 s sleeps.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Quiet the cluster before distributed is imported (workers inherit the env).
os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


@dataclass
class TimedExecutor:
    """A SegmentExecutor that times the flow thread's calls into the task runner."""

    inner: Any
    submit_s: float = 0.0
    wait_s: float = 0.0
    result_s: float = 0.0
    first_submit: float | None = None
    last_result: float = 0.0
    segments: int = 0
    sleeps: int = 0

    def submit(self, job: Any) -> Hashable:
        t0 = time.perf_counter()
        if self.first_submit is None:
            self.first_submit = t0
        handle: Hashable = self.inner.submit(job)
        self.submit_s += time.perf_counter() - t0
        return handle

    def wait_first(self, handles: Sequence[Hashable], *args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return self.inner.wait_first(handles, *args, **kwargs)
        finally:
            self.wait_s += time.perf_counter() - t0

    def result(self, handle: Hashable) -> Any:
        t0 = time.perf_counter()
        try:
            outcome = self.inner.result(handle)
        finally:
            self.last_result = time.perf_counter()
            self.result_s += self.last_result - t0
        self.segments += 1
        # The synthetic trainable sleeps once per report (one per unit).
        self.sleeps += len(outcome.reports)
        return outcome


def spec_for(
    scheduler: str, workers: int, in_flight: int, units: int, seconds: float, tag: str = ""
) -> Any:
    """The experiment: same ideal length for every worker count."""
    from examples.synthetic import SPACE
    from flows.spec import load_spec

    if scheduler == "asha":
        args: dict[str, Any] = {"max_t": 4, "grace_period": 1, "reduction_factor": 2}
    else:
        args = {"perturbation_interval": 1, "population_size": max(2 * in_flight, 4)}
    return load_spec(
        {
            "name": f"scaling-{scheduler}-w{workers}-f{in_flight}{tag}-{os.getpid()}",
            "trainable": "synthetic",
            "metric": "loss",
            "space": SPACE.to_json(),
            "scheduler": scheduler,
            "scheduler_args": args,
            "budget": {"max_resource": float(units * workers)},
            "max_concurrency": in_flight,
            "task_runner": "dask",
            "trainable_args": {"seconds_per_unit": seconds},
            "seed": 0,
        }
    )


@dataclass
class Run:
    """Timings of one experiment run."""

    executor: TimedExecutor
    total: float  # flow thread, run() start to end
    compute: float  # Dask task-stream compute time summed over tasks (worker side)
    tasks: int


def run_one(spec: Any, root: Path) -> Run:
    """Run ``spec`` in a flow on the cluster at RUNGFLOW_DASK_ADDRESS; time it."""
    from distributed import get_task_stream
    from prefect import flow

    from flows.engine.retention import Retention
    from flows.engine.runner import ExperimentRunner
    from flows.tune import PrefectExecutor, make_task_runner
    from storage import EventStore

    out: dict[str, Run] = {}

    @flow(name="scaling", persist_result=False)
    def scaling_flow() -> None:
        store = EventStore(f"sqlite:///{root / 'rungflow.db'}")
        ckpt = str(root / "checkpoints")
        try:
            runner = ExperimentRunner(store, spec, ckpt, on_progress=Retention(ckpt))
            task_runner: Any = make_task_runner(spec)  # a DaskTaskRunner
            with task_runner:
                # Connect before timing: the first submit would otherwise pay it.
                client = task_runner.client
                executor = TimedExecutor(PrefectExecutor(task_runner, retries=0))
                with get_task_stream(client) as stream:
                    t0 = time.perf_counter()
                    summary = runner.run(executor)
                    total = time.perf_counter() - t0
                if summary.segments_failed:
                    raise RuntimeError(f"{summary.segments_failed} segment(s) failed")
                # Each Dask task is one Prefect task run: the Prefect task engine
                # (task-run creation, state events) plus the trainable.
                compute = [
                    ss["stop"] - ss["start"]
                    for rec in stream.data
                    for ss in rec.get("startstops", ())
                    if ss.get("action") == "compute"
                ]
                out["run"] = Run(executor, total, sum(compute), len(compute))
        finally:
            store.close()

    scaling_flow()
    return out["run"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--seconds", type=float, default=0.2, help="sleep per resource unit")
    parser.add_argument("--units", type=int, default=30, help="budget units per worker")
    parser.add_argument("--schedulers", nargs="+", default=["asha", "pbt"],
                        choices=["asha", "pbt"])
    parser.add_argument("--oversubscribe", type=int, nargs="+", default=[1, 2],
                        help="segments in flight per worker")
    opts = parser.parse_args()

    from distributed import LocalCluster

    import examples.objectives  # noqa: F401  (registers 'synthetic' in this process)

    load = os.getloadavg()[0]
    print(f"{os.cpu_count()} CPU(s), load average {load:.1f} at start; {opts.seconds:g} s "
          f"of sleep per resource unit; budget {opts.units} units per worker\n")
    header = (f"{'scheduler':9} {'workers':>7} {'in flight':>9} {'segs':>5} "
              f"{'seg/s':>6} {'ideal':>6} {'util':>6} | {'train':>6} {'engine':>6} "
              f"{'idle':>6} | {'submit':>6} {'wait':>6} {'result':>6} {'record':>6}")
    print(header)
    print("-" * len(header))
    with tempfile.TemporaryDirectory(prefix="rungflow-scaling-") as tmp:
        for workers in opts.workers:
            with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                              dashboard_address=None) as cluster:
                os.environ["RUNGFLOW_DASK_ADDRESS"] = cluster.scheduler_address
                # Warm-up (not reported): workers import Prefect, rungflow and
                # the trainable on their first task.
                warm = spec_for("asha", workers, workers, 2, 0.0, tag="warmup")
                (Path(tmp) / warm.name).mkdir()
                run_one(warm, Path(tmp) / warm.name)
                for scheduler in opts.schedulers:
                    for factor in opts.oversubscribe:
                        in_flight = workers * factor
                        spec = spec_for(scheduler, workers, in_flight, opts.units, opts.seconds)
                        root = Path(tmp) / spec.name
                        root.mkdir()
                        report(scheduler, workers, in_flight, run_one(spec, root), opts.seconds)
                os.environ.pop("RUNGFLOW_DASK_ADDRESS", None)
    print(
        "\nutil = training seconds / (workers x wall), wall = first submit to last result.\n"
        "Per segment, worker side: train (the trainable's sleep), engine (Prefect task\n"
        "engine around it in the worker), idle (worker waiting: flow turnaround, Dask\n"
        "dispatch, start/end of the run). Flow thread: submit (Prefect task submission),\n"
        "wait (blocked in as_completed), result, record (event log, scheduler, retention)."
    )


def report(scheduler: str, workers: int, in_flight: int, run: Run, seconds: float) -> None:
    """Print one row of the table."""
    ex = run.executor
    assert ex.first_submit is not None
    wall = ex.last_result - ex.first_submit
    useful = ex.sleeps * seconds
    n = ex.segments
    ms = 1000 / n
    train = useful * ms
    engine = max(run.compute - useful, 0.0) * ms
    idle = max(workers * wall - run.compute, 0.0) * ms
    record = run.total - ex.submit_s - ex.wait_s - ex.result_s
    print(f"{scheduler:9} {workers:>7} {in_flight:>9} {n:>5} "
          f"{n / wall:>6.2f} {n / (useful / workers):>6.2f} {useful / (workers * wall):>6.1%} | "
          f"{train:>6.0f} {engine:>6.0f} {idle:>6.0f} | "
          f"{ex.submit_s * ms:>6.1f} {ex.wait_s * ms:>6.0f} {ex.result_s * ms:>6.1f} "
          f"{record * ms:>6.1f}", flush=True)


if __name__ == "__main__":
    main()
