"""Throughput, worker utilization and CPU cost per segment: threads, processes, Dask, Ray.

Each run trains the installed ``synthetic`` trainable with
``trainable_args.seconds_per_unit`` (default 0.2 s of sleep per resource unit),
so the useful work of every segment is known exactly and every CPU second
spent is orchestration. The same experiment (same scheduler, seed and
budget) runs on every task runner, variants interleaved within each repeat,
with one Prefect API server for the flow and every worker (as ``rungflow run``
has):

* ``thread``: a thread pool of ``workers`` threads in the flow process (the
  baseline);
* ``process``: a process pool of ``workers`` processes, started by each run;
* ``dask``: a LocalCluster of ``workers`` single-threaded worker processes,
  started once per worker count and reached through ``RUNGFLOW_DASK_ADDRESS``,
  as an external cluster is;
* ``ray``: a Ray head node of ``workers`` CPUs (``ray start --head``), started
  once per worker count and reached through ``RUNGFLOW_RAY_ADDRESS``; every
  run is a Ray job of its own.

Schedulers: ASHA (max_t 4, grace 1, eta 2: segments of 1 or 2 units) and
asynchronous PBT (perturbation interval 1: segments of 1 unit), with a
resource budget proportional to the worker count.

Figures per variant, min / median / max over ``--repeats``:

* util: useful seconds / (workers x wall), wall = first submit to last result,
  with every worker process already started (see :func:`start_workers`);
* start s: seconds the run spent starting its worker processes before the
  window (process pool and Ray job: every run; Dask: once per cluster);
* 1st s: first submit to first result;
* seg/s: finished segments per second of wall;
* CPU per segment in ms, read from /proc for process trees before and after
  the run: ``flow`` (the flow process: the Prefect client, the runner loop,
  the event log, and for ``thread`` the task engine too), ``api`` (every
  Prefect API server process: the one the benchmark starts for the flow and
  its workers, and any a worker started for itself), ``workers`` (the
  runner's processes: process-pool workers, Dask nanny and worker processes,
  Ray daemons and worker processes); ``client+server`` is
  flow + api + workers, i.e. all CPU that rungflow, Prefect and the engine
  spent per segment (the trainable only sleeps).

Usage:
    python benchmarks/scaling.py [--runner thread,dask,ray] [--workers 2]
        [--seconds 0.2] [--units 20] [--schedulers asha] [--oversubscribe 2]
        [--repeats 3]

``--runner`` (or ``--runners``) takes names separated by commas or spaces, and
may be repeated; the thread baseline is always included. ``--oversubscribe``
applies to Dask and Ray (segments in flight per worker); a thread or process
pool runs exactly ``workers`` segments at once.

Figures: see docs/scaling.md ("Which task runner") for a full run.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Hashable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

# Quiet the cluster before distributed is imported (workers inherit the env).
os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
# A loaded machine starts the ephemeral API slowly (Prefect waits 20 s by default).
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")

RUNNERS = ("thread", "process", "dask", "ray")
#: Runners whose pool *is* the flow's in-flight limit: one worker per segment
#: in flight, so they run ``workers`` segments at once, never oversubscribed.
POOLS = ("thread", "process")


@dataclass
class TimedExecutor:
    """A SegmentExecutor that times the first submit and the last result."""

    inner: Any
    first_submit: float | None = None
    first_result: float | None = None
    last_result: float = 0.0
    segments: int = 0
    sleeps: int = 0

    def submit(self, job: Any) -> Hashable:
        if self.first_submit is None:
            self.first_submit = time.perf_counter()
        handle: Hashable = self.inner.submit(job)
        return handle

    def wait_first(self, handles: Sequence[Hashable], *args: Any, **kwargs: Any) -> Any:
        return self.inner.wait_first(handles, *args, **kwargs)

    def result(self, handle: Hashable) -> Any:
        try:
            outcome = self.inner.result(handle)
        finally:
            self.last_result = time.perf_counter()
            if self.first_result is None:
                self.first_result = self.last_result
        self.segments += 1
        # The synthetic trainable sleeps once per report (one per unit).
        self.sleeps += len(outcome.reports)
        return outcome


# -- CPU of process trees, from /proc ------------------------------------------


def _cpu(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return float(times.user + times.system)


def _is_api(proc: psutil.Process) -> bool:
    cmd = " ".join(proc.cmdline())
    return "prefect.server" in cmd or "uvicorn" in cmd


@dataclass
class CpuMeter:
    """CPU seconds of the flow process, Prefect API servers and cluster processes.

    ``cluster`` lists the cluster's root processes besides this process's
    children (a Ray head's process group); every descendant counts too.
    Processes are sampled by pid before and after a run, so one that starts
    during the run counts from zero and one that exits during it is missed
    (the engines' worker processes live as long as their cluster).
    """

    cluster: Callable[[], list[psutil.Process]] = list
    #: Processes of another runner's cluster that are children of this
    #: process too (the Dask LocalCluster): never counted here.
    exclude: set[int] = field(default_factory=set)

    def sample(self) -> dict[str, float]:
        me = psutil.Process()
        seen: dict[int, psutil.Process] = {}
        for root in [*me.children(), *self.cluster()]:
            with contextlib.suppress(psutil.NoSuchProcess):
                for proc in [root, *root.children(recursive=True)]:
                    if proc.pid not in self.exclude:
                        seen[proc.pid] = proc
        out = {"flow": _cpu(me), "api": 0.0, "workers": 0.0}
        for proc in seen.values():
            with contextlib.suppress(psutil.NoSuchProcess, psutil.ZombieProcess):
                out["api" if _is_api(proc) else "workers"] += _cpu(proc)
        return out


# -- clusters ---------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


#: The Dask LocalCluster's processes: children of this process, like a
#: process pool's workers and the Prefect API, but only the Dask runner's.
DASK_PIDS: set[int] = set()


@contextlib.contextmanager
def cluster_for(runner: str, workers: int, tmp: Path) -> Iterator[CpuMeter]:
    """Start the runner's cluster once; point RUNGFLOW_*_ADDRESS at it."""
    if runner in POOLS:
        # A process pool's workers are children of this process.
        yield CpuMeter(exclude=DASK_PIDS)
    elif runner == "dask":
        from distributed import LocalCluster

        me = psutil.Process()
        before = {p.pid for p in me.children(recursive=True)}
        with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                          dashboard_address=None) as cluster:
            DASK_PIDS.update(p.pid for p in me.children(recursive=True) if p.pid not in before)
            os.environ["RUNGFLOW_DASK_ADDRESS"] = cluster.scheduler_address
            try:
                yield CpuMeter()  # workers are children of this process
            finally:
                os.environ.pop("RUNGFLOW_DASK_ADDRESS", None)
    else:
        yield from _ray_head(workers, tmp)


def _ray_head(workers: int, tmp: Path) -> Iterator[CpuMeter]:
    """``ray start --head`` in a process group of its own, killed at the end."""
    temp_dir = Path(tempfile.mkdtemp(prefix="rf-ray-", dir="/tmp"))  # short socket paths
    port = _free_port()
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_TMPDIR": str(temp_dir)}
    ray = str(Path(sys.executable).with_name("ray"))
    group = 0
    saved = {k: os.environ.get(k) for k in ("RUNGFLOW_RAY_ADDRESS", "RAY_AUTH_MODE")}

    def members() -> list[psutil.Process]:
        out = []
        for p in psutil.process_iter():
            with contextlib.suppress(psutil.NoSuchProcess, ProcessLookupError):
                if os.getpgid(p.pid) == group:
                    out.append(p)
        return out

    def stop() -> None:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(group, sig)
            _, alive = psutil.wait_procs(members(), timeout=20)
            if not alive:
                break

    try:
        # Ray gives a raylet 30 s to register: a loaded machine may need a retry.
        for attempt in range(3):
            with open(tmp / f"ray-head-{workers}.log", "wb") as log:
                proc = subprocess.Popen(
                    [ray, "start", "--head", "--port", str(port), "--num-cpus", str(workers),
                     "--node-ip-address", "127.0.0.1", "--include-dashboard", "false",
                     "--disable-usage-stats", "--temp-dir", str(temp_dir)],
                    env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                )
            group = proc.pid
            if proc.wait(timeout=600) == 0:
                break
            stop()
            if attempt == 2:
                log_text = (tmp / f"ray-head-{workers}.log").read_text()[-2000:]
                raise RuntimeError(f"ray start failed:\n{log_text}")
        os.environ.update(RUNGFLOW_RAY_ADDRESS=f"127.0.0.1:{port}", RAY_AUTH_MODE="disabled")
        yield CpuMeter(cluster=members, exclude=DASK_PIDS)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        stop()
        shutil.rmtree(temp_dir, ignore_errors=True)


# -- one run ----------------------------------------------------------------------


def _ray_nap(seconds: float) -> int:
    """A Ray task that imports the task engine, naps, and says which worker it was."""
    importlib.import_module("flows.tune")
    time.sleep(seconds)
    return os.getpid()


def start_workers(task_runner: Any, runner: str, workers: int) -> float:
    """Bring up all ``workers`` worker processes of a connected runner; seconds taken.

    A process pool and a Ray job start their worker processes for each run
    (Ray's workers belong to one job); Dask's live as long as the cluster and
    were started by the warm-up run. Without this, the start-up (import Prefect,
    rungflow, the trainable) would be counted in the first segments' time, and
    ``util`` would measure the start-up instead of the steady state. The time
    is printed as ``start s``: it is a per-run cost the user pays too.
    """
    begin = time.perf_counter()
    if runner == "process":
        # One process per submit while none is idle, up to max_workers.
        executor = task_runner._executor
        futures = [executor.submit(exec, "import flows.tune") for _ in range(workers)]
        for future in futures:
            future.result()
    elif runner == "ray":
        import ray

        nap = ray.remote(num_cpus=1, max_retries=0)(_ray_nap)
        # Naps hold a CPU each, so Ray starts one worker process per nap; a
        # worker that started late may let an early one nap twice: go again.
        pids: set[int] = set()
        for _ in range(5):
            pids.update(ray.get([nap.remote(2.0) for _ in range(workers)]))
            if len(pids) >= workers:
                break
    return time.perf_counter() - begin


def spec_for(scheduler: str, runner: str, workers: int, in_flight: int, units: int,
             seconds: float, tag: str = "") -> Any:
    """The experiment: the same decisions on every runner (same seed and budget)."""
    from examples.synthetic import SPACE
    from flows.spec import load_spec

    if scheduler == "asha":
        args: dict[str, Any] = {"max_t": 4, "grace_period": 1, "reduction_factor": 2}
    else:
        args = {"perturbation_interval": 1, "population_size": max(2 * in_flight, 4)}
    return load_spec(
        {
            "name": f"scaling-{scheduler}-{runner}-w{workers}-f{in_flight}{tag}-{os.getpid()}",
            "trainable": "synthetic",
            "metric": "loss",
            "space": SPACE.to_json(),
            "scheduler": scheduler,
            "scheduler_args": args,
            "budget": {"max_resource": float(units * workers)},
            "max_concurrency": in_flight,
            "task_runner": runner,
            "trainable_args": {"seconds_per_unit": seconds},
            "seed": 0,
        }
    )


@dataclass
class Run:
    """One experiment run: wall time, useful time, CPU by process tree."""

    segments: int
    wall: float
    useful: float
    cpu: dict[str, float] = field(default_factory=dict)
    #: Seconds from the first submit to the first result.
    first: float = 0.0
    #: Seconds to start the run's worker processes (see :func:`start_workers`).
    start: float = 0.0


def run_one(spec: Any, root: Path, meter: CpuMeter, seconds: float, workers: int) -> Run:
    """Run ``spec`` in a flow on its runner; time it and meter the CPU."""
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
            with make_task_runner(spec) as task_runner:  # connected before timing
                start = start_workers(task_runner, spec.task_runner, workers)
                executor = TimedExecutor(PrefectExecutor(task_runner, retries=0))
                before = meter.sample()
                summary = runner.run(executor)
                after = meter.sample()
            if summary.segments_failed:
                raise RuntimeError(f"{summary.segments_failed} segment(s) failed")
            assert executor.first_submit is not None and executor.first_result is not None
            out["run"] = Run(
                executor.segments,
                executor.last_result - executor.first_submit,
                executor.sleeps * seconds,
                {k: after[k] - before[k] for k in before},
                executor.first_result - executor.first_submit,
                start,
            )
        finally:
            store.close()

    scaling_flow()
    return out["run"]


def _mmm(values: Sequence[float], fmt: str) -> str:
    return "/".join(format(v, fmt) for v in (min(values), statistics.median(values),
                                               max(values)))


def report(label: str, workers: int, runs: Sequence[Run], base: Sequence[Run] | None) -> str:
    """One table row: min/median/max over repeats; CPU ratio to the baseline's median."""
    util = [r.useful / (workers * r.wall) for r in runs]
    rate = [r.segments / r.wall for r in runs]

    def per_seg(r: Run, *keys: str) -> float:
        return 1000 * sum(r.cpu[k] for k in keys) / r.segments

    flow_ms = [per_seg(r, "flow") for r in runs]
    api_ms = [per_seg(r, "api") for r in runs]
    work_ms = [per_seg(r, "workers") for r in runs]
    total = [per_seg(r, "flow", "api", "workers") for r in runs]
    ratio = ""
    if base:
        ref = statistics.median(per_seg(r, "flow", "api", "workers") for r in base)
        ratio = f"{statistics.median(total) / ref:5.2f}x"
    first = statistics.median(r.first for r in runs)
    start = statistics.median(r.start for r in runs)
    return (f"{label:22} {runs[0].segments:>5} {_mmm(util, '.0%'):>14} {_mmm(rate, '.1f'):>14} "
            f"{start:>7.1f} {first:>5.1f} | "
            f"{statistics.median(flow_ms):>6.0f} {statistics.median(api_ms):>5.0f} "
            f"{statistics.median(work_ms):>7.0f} | {_mmm(total, '.0f'):>14} {ratio:>6}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runner", "--runners", dest="runners", nargs="+", action="extend",
                        default=[], metavar="RUNNER",
                        help=f"runners, comma- or space-separated, repeatable: {','.join(RUNNERS)} "
                             "(default: thread,dask,ray; thread is always included)")
    parser.add_argument("--workers", type=int, nargs="+", default=[2])
    parser.add_argument("--seconds", type=float, default=0.2, help="sleep per resource unit")
    parser.add_argument("--units", type=int, default=20, help="budget units per worker")
    parser.add_argument("--schedulers", nargs="+", default=["asha"], choices=["asha", "pbt"])
    parser.add_argument("--oversubscribe", type=int, nargs="+", default=[2],
                        help="segments in flight per worker")
    parser.add_argument("--repeats", type=int, default=3)
    opts = parser.parse_args()
    # SIGTERM runs the cleanup (clusters, the Ray head's process group) too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    names = [n.strip() for arg in opts.runners for n in arg.split(",") if n.strip()]
    unknown = sorted(set(names) - set(RUNNERS))
    if unknown:
        parser.error(f"unknown runner(s) {', '.join(unknown)}; choose from {', '.join(RUNNERS)}")
    # The thread baseline always runs, first; then the others in the order given.
    runners = list(dict.fromkeys(["thread", *(names or ("dask", "ray"))]))

    import examples.objectives  # noqa: F401  (registers 'synthetic' in this process)

    print(f"{os.cpu_count()} CPU(s), load average {os.getloadavg()[0]:.1f} at start; "
          f"{opts.seconds:g} s of sleep per resource unit; budget {opts.units} units per "
          f"worker; {opts.repeats} repeats, runners interleaved; min/median/max\n")
    header = (f"{'variant':22} {'segs':>5} {'util':>14} {'seg/s':>14} {'start s':>7} "
              f"{'1st s':>5} | {'flow':>6} {'api':>5} {'workers':>7} | "
              f"{'client+server':>14} {'vs thr':>6}")
    from flows.prefect_api import owned_prefect_api

    # One Prefect API for the flow and every worker, as `rungflow run` has:
    # without it each process-pool worker would boot an ephemeral API of its own.
    with owned_prefect_api(), tempfile.TemporaryDirectory(prefix="rungflow-scaling-") as tmp:
        for workers in opts.workers:
            with contextlib.ExitStack() as stack:
                # Ray first: its nodes must register within 30 s, easier on a
                # machine not yet busy with the Dask cluster.
                meters = {r: stack.enter_context(cluster_for(r, workers, Path(tmp)))
                          for r in sorted(runners, key=lambda r: r != "ray")}
                for runner in runners:
                    # Warm-up (not reported): workers import Prefect, rungflow and
                    # the trainable on their first task.
                    warm = spec_for("asha", runner, workers, workers, 2, 0.0, tag="warm")
                    (Path(tmp) / warm.name).mkdir()
                    run_one(warm, Path(tmp) / warm.name, meters[runner], 0.0, workers)
                print(header)
                print("-" * len(header), flush=True)
                for scheduler in opts.schedulers:
                    for factor in opts.oversubscribe:
                        runs: dict[str, list[Run]] = {r: [] for r in runners}
                        for rep in range(opts.repeats):
                            for runner in runners:  # interleaved within each repeat
                                in_flight = workers * (1 if runner in POOLS else factor)
                                spec = spec_for(scheduler, runner, workers, in_flight,
                                                opts.units, opts.seconds, tag=f"r{rep}")
                                root = Path(tmp) / spec.name
                                root.mkdir()
                                runs[runner].append(
                                    run_one(spec, root, meters[runner], opts.seconds, workers))
                        base = runs.get("thread")
                        for runner in runners:
                            over = 1 if runner in POOLS else factor
                            label = f"{scheduler} {runner} w{workers} x{over}"
                            print(report(label, workers, runs[runner], base), flush=True)
    print(
        f"\nload average {os.getloadavg()[0]:.1f} at the end.\n"
        "util = training seconds / (workers x wall), wall = first submit to last result;\n"
        "start s = starting the run's worker processes before the window (process pool\n"
        "and Ray job: per run; Dask: once per cluster, 0 here), 1st s = first submit to\n"
        "first result (medians);\n"
        "CPU in ms per segment (median):\n"
        "flow = the flow process (Prefect client, runner loop, event log; the task engine\n"
        "too for threads), api = Prefect API server processes, workers = the cluster's\n"
        "processes; client+server = their sum (min/median/max), vs thr = its median over\n"
        "the thread runner's."
    )


if __name__ == "__main__":
    main()
