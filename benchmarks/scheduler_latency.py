"""Decision latency (ask + tell) of HyperBand and ASHA with 10,000 trials in history.

Each scheduler is driven like the flow drives it (ask(1), tell the action's
events, tell results as simulated workers finish) until it holds
``--history`` trials; then the next ``--decisions`` decisions are timed. A
decision's cost is its ``ask`` plus every ``tell`` it causes (its own events
and the result that later comes back). The baseline is RandomScheduler
measured the same way in the same run. Goals: <= 1 ms per decision on
average, max <= 5 ms.

The loop is live, collector included, so the max shows its pauses. Each
decision is timed twice: wall time and the thread's CPU time. On a shared
machine the wall max also counts the moments the OS ran someone else; the
CPU max does not, so it is the figure to hold against the goal there. ``--gc``
compares collector policies (see ``benchmarks/pbt_latency.py``): ``default``
(main's live run), ``freeze-once`` (one freeze when the history is built: main
after a resume) and ``runner`` (:class:`flows.engine.gc_policy.HeapFreezer`
as the runner uses it), repeated ``--repeats`` times with the order rotated.

``--runner`` times the flow thread instead of the scheduler alone: the real
:class:`~flows.engine.runner.ExperimentRunner` loop on a SQLite event log,
with the live artifacts hook (:class:`~flows.artifacts.ExperimentArtifacts`,
its Prefect API calls replaced by no-ops) and in-process segments that finish
at once, 8 in flight. Every gap between two consecutive ``wait_first`` calls
(one result recorded, the decisions it triggers, the periodic snapshot, the
progress hook) is timed, wall and thread CPU, once the scheduler holds
``--history`` trials, for ``--decisions`` gaps. The runner's snapshot period
is set to events only (``--snapshot-seconds``, default 0: a snapshot every
2,000 events), so the window holds several snapshot saves.

Run: ``python benchmarks/scheduler_latency.py [--history 10000] [--decisions 3000]
[--gc default freeze-once runner] [--repeats 2] [--runner]``; with ``--tree
before=/tmp/base --tree after=.`` (``--runner`` only) each (tree, repeat) runs
in a fresh child with that tree first on ``PYTHONPATH``, trees rotated per repeat.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import heapq
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from _gcprobe import GCProbe

from examples.synthetic import SPACE, synthetic_curve
from schedulers import (
    Budget,
    Done,
    RandomScheduler,
    RunSegment,
    SegmentFinished,
    Wait,
    action_events,
)
from schedulers.asha import ASHAScheduler
from schedulers.base import Scheduler
from schedulers.events import CheckpointRef
from schedulers.hyperband import HyperBandScheduler

COMMON: dict[str, Any] = {"space": SPACE, "metric": "loss", "mode": "min", "seed": 0}


def drive(scheduler: Scheduler, history: int, decisions: int, workers: int = 8,
          policy: str = "default") -> tuple[np.ndarray, np.ndarray]:
    """Per-decision seconds, (wall, thread CPU), for ``decisions`` decisions taken
    after ``history`` trials."""
    from flows.engine.gc_policy import HeapFreezer

    freezer = HeapFreezer() if policy == "runner" else None
    frozen = False
    jitter = np.random.default_rng(0)
    heap: list[tuple[float, int, RunSegment]] = []
    now, counter = 0.0, 0
    costs: list[float] = []
    cpu: list[float] = []
    timing = False
    while len(costs) < decisions:
        timing = timing or len(scheduler.trials) >= history
        if timing and not frozen and policy != "default":
            gc.freeze()  # the history exists: what a resume (or the runner) froze
            frozen = True
        while len(heap) < workers:
            t0, c0 = time.perf_counter(), time.thread_time()
            action = scheduler.ask(1)[0]
            events = [] if isinstance(action, Wait) else action_events(action)
            for event in events:
                scheduler.tell(event)
            elapsed, used = time.perf_counter() - t0, time.thread_time() - c0
            if freezer is not None:
                freezer.tick(len(events))
            if isinstance(action, Wait):
                break
            if timing:
                costs.append(elapsed)
                cpu.append(used)
            if not isinstance(action, RunSegment):
                if isinstance(action, Done):
                    raise RuntimeError(f"{scheduler.name} finished before the measurement")
                continue
            counter += 1
            duration = (action.stop - action.start) * float(jitter.lognormal(0, 0.3))
            heapq.heappush(heap, (now + duration, counter, action))
        now, _, action = heapq.heappop(heap)
        loss = synthetic_curve(action.config, action.stop)
        report = {"resource": action.stop, "loss": loss}
        ref = CheckpointRef(f"b/{action.trial_id}/{action.stop}", 0, "", action.trial_id, 0.0)
        event = SegmentFinished(action.trial_id, action.start, action.stop, (report,), report, ref)
        t0, c0 = time.perf_counter(), time.thread_time()
        scheduler.tell(event)
        if timing and costs:
            costs[-1] += time.perf_counter() - t0  # results are part of the decision loop
            cpu[-1] += time.thread_time() - c0
        if freezer is not None:
            freezer.tick(1)
    return np.array(costs), np.array(cpu)


SCHEDULERS: dict[str, Callable[[], Scheduler]] = {
    "random (baseline)": lambda: RandomScheduler(**COMMON, max_t=81, budget=Budget()),
    "hyperband": lambda: HyperBandScheduler(**COMMON, max_t=81, reduction_factor=3),
    "asha promotion": lambda: ASHAScheduler(
        **COMMON, max_t=81, grace_period=1, reduction_factor=3
    ),
    "asha stopping": lambda: ASHAScheduler(
        **COMMON, max_t=81, grace_period=1, reduction_factor=3, variant="stopping"
    ),
    "asha promotion, 3 brackets": lambda: ASHAScheduler(
        **COMMON, max_t=81, grace_period=1, reduction_factor=3, brackets=3
    ),
}


RUNNER_SCHEDULERS: dict[str, tuple[str, dict[str, Any]]] = {
    "asha": ("asha", {"max_t": 81, "grace_period": 1, "reduction_factor": 3}),
    "hyperband": ("hyperband", {"max_t": 81, "reduction_factor": 3}),
    "pbt": ("pbt", {"perturbation_interval": 1, "population_size": 10_000,
                    "max_generations": 3}),
}


class _Enough(Exception):
    """Raised by :class:`GapExecutor` once it timed enough gaps."""


class GapExecutor:
    """In-process segments that finish at once; times the flow thread between waits."""

    def __init__(self, history: int, gaps: int) -> None:
        self.history, self.wanted = history, gaps
        self.runner: Any = None
        self.jobs: dict[int, Any] = {}
        self.counter = 0
        self.wall: list[float] = []
        self.cpu: list[float] = []
        self._last: tuple[float, float] | None = None
        #: The collector's passes during the timed window only.
        self.probe = GCProbe()
        self.first_seq = 0

    def submit(self, job: Any) -> int:
        self.counter += 1
        self.jobs[self.counter] = job
        return self.counter

    def wait_first(self, handles: Any, timeout: float | None = None) -> Any:
        now, cpu = time.perf_counter(), time.thread_time()
        if self._last is not None and len(self.runner.scheduler.trials) >= self.history:
            if not self.wall:
                self.probe.start()
                self.first_seq = self.runner.seq
            self.wall.append(now - self._last[0])
            self.cpu.append(cpu - self._last[1])
            if len(self.wall) >= self.wanted:
                raise _Enough
        self._last = (time.perf_counter(), time.thread_time())  # not our own cost
        return min(handles)

    def result(self, handle: Any) -> Any:
        from flows.trainable import SegmentOutcome

        job = self.jobs.pop(handle)
        report = {"resource": job.stop, "loss": synthetic_curve(job.config, job.stop)}
        ref = CheckpointRef(f"b/{job.trial_id}/{job.stop:g}", 1, "", job.trial_id, job.stop)
        return SegmentOutcome((report,), ref)


def runner_gaps(scheduler: str, history: int, gaps: int, snapshot_seconds: float,
                tmp: str) -> dict[str, Any]:
    """Drive the real runner loop (see the module doc); the flow thread's gaps in ms."""
    from flows.artifacts import ExperimentArtifacts
    from flows.engine.runner import ExperimentRunner
    from flows.spec import ExperimentSpec
    from storage import EventStore

    class QuietArtifacts(ExperimentArtifacts):
        """The live hook, flow-thread work and background thread, minus the API."""

        def _put(self, *args: Any, **kwargs: Any) -> Any:
            return None

        def _set_progress(self, *args: Any, **kwargs: Any) -> None:
            self.updates += 1

    name, sargs = RUNNER_SCHEDULERS[scheduler]
    spec = ExperimentSpec.model_validate({
        "name": f"gaps-{scheduler}", "trainable": "synthetic", "metric": "loss",
        "space": {
            "lr": {"type": "float", "low": 1e-4, "high": 1.0, "log": True},
            "width": {"type": "int", "low": 16, "high": 256, "log": True},
            "dropout": {"type": "float", "low": 0.0, "high": 0.6, "step": 0.05},
            "act": {"type": "categorical", "choices": ["relu", "tanh", "sigmoid"]},
        },
        "scheduler": name, "scheduler_args": sargs,
        "budget": {"max_trials": 3 * history}, "max_concurrency": 8, "seed": 0,
    })
    store = EventStore(f"sqlite:///{tmp}/gaps-{scheduler}.db")
    hook = QuietArtifacts(spec)
    runner = ExperimentRunner(store, spec, f"{tmp}/ckpt", on_progress=hook)
    runner.snapshot_every_seconds = snapshot_seconds
    executor = GapExecutor(history, gaps)
    executor.runner = runner
    t0 = time.perf_counter()
    try:
        with contextlib.suppress(_Enough):
            runner.run(executor)
    finally:
        if executor.wall:
            executor.probe.stop()
        store.close()
    wall, cpu = np.array(executor.wall) * 1e3, np.array(executor.cpu) * 1e3
    return {
        "gaps": len(wall), "trials": len(runner.scheduler.trials),
        "events": runner.seq - executor.first_seq,
        "p50": float(np.percentile(wall, 50)), "p95": float(np.percentile(wall, 95)),
        "p99": float(np.percentile(wall, 99)), "max": float(wall.max()),
        "cpu_p50": float(np.percentile(cpu, 50)), "cpu_p95": float(np.percentile(cpu, 95)),
        "cpu_p99": float(np.percentile(cpu, 99)), "cpu_max": float(cpu.max()),
        "over5": int((cpu > 5.0).sum()), "total_s": time.perf_counter() - t0,
        "live_updates": hook.live_updates, "gc": executor.probe.summary(),
    }


GAP_KEYS = ("p50", "p95", "p99", "max", "cpu_p50", "cpu_p95", "cpu_p99", "cpu_max", "over5")


def runner_main(args: argparse.Namespace) -> None:
    """``--runner``: the flow thread's gaps, in this process or per tree in children."""
    if not args.tree:
        import tempfile

        import examples.objectives  # noqa: F401  (registers the synthetic trainable)

        out = {}
        for scheduler in args.schedulers:
            with tempfile.TemporaryDirectory() as tmp:
                out[scheduler] = runner_gaps(scheduler, args.history, args.decisions,
                                             args.snapshot_seconds, tmp)
        print(json.dumps(out))
        return
    figures: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for rep in range(args.repeats):
        trees = args.tree if rep % 2 == 0 else list(reversed(args.tree))
        for label, root in trees:
            cmd = [sys.executable, __file__, "--runner", "--history", str(args.history),
                   "--decisions", str(args.decisions), "--snapshot-seconds",
                   str(args.snapshot_seconds), "--schedulers", *args.schedulers]
            env = {**os.environ, "PYTHONPATH": str(root)}
            done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
            if done.returncode:
                raise SystemExit(f"{label}: {done.stderr[-3000:]}")
            result = json.loads(done.stdout.strip().splitlines()[-1])
            for scheduler, fig in result.items():
                figures.setdefault((label, scheduler), []).append(fig)
                print(f"repeat {rep} {label:<8} {scheduler:<10} gaps {fig['gaps']} trials "
                      f"{fig['trials']} events {fig['events']} ms p50/p95/p99/max "
                      f"{fig['p50']:.2f}/{fig['p95']:.2f}/{fig['p99']:.2f}/{fig['max']:.1f} "
                      f"cpu {fig['cpu_p50']:.2f}/{fig['cpu_p95']:.2f}/{fig['cpu_p99']:.2f}/"
                      f"{fig['cpu_max']:.1f} cpu>5ms {fig['over5']} live {fig['live_updates']} "
                      f"{fig['total_s']:.0f}s load {os.getloadavg()[0]:.1f} {fig['gc']}",
                      flush=True)
    print(f"flow-thread gaps at {args.history} trials, ms, min / median / max over "
          f"{args.repeats} repeat(s)")
    for (label, scheduler), figs in figures.items():
        cells = []
        for key in GAP_KEYS:
            values = [f[key] for f in figs]
            cells.append(f"{key} {min(values):.2f}/{statistics.median(values):.2f}/"
                         f"{max(values):.2f}")
        print(f"{label:<8} {scheduler:<10} " + "  ".join(cells))
    print(f"load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}")


def _tree(arg: str) -> tuple[str, Path]:
    label, sep, path = arg.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"--tree must be LABEL=PATH, got {arg!r}")
    return label, Path(path).resolve()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--history", type=int, default=10_000)
    parser.add_argument("--decisions", type=int, default=3_000)
    parser.add_argument("--runner", action="store_true",
                        help="time the flow thread's gaps in the real runner loop")
    parser.add_argument("--schedulers", nargs="+", default=["asha"],
                        choices=sorted(RUNNER_SCHEDULERS), help="with --runner")
    parser.add_argument("--snapshot-seconds", type=float, default=0.0, help="with --runner")
    parser.add_argument("--tree", type=_tree, action="append", help="with --runner: LABEL=PATH")
    parser.add_argument("--gc", nargs="+", default=["default"],
                        choices=["default", "freeze-once", "runner"])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--only", nargs="+", help="scheduler names to run (default: all)")
    args = parser.parse_args()
    if args.runner:
        runner_main(args)
        return
    print(f"{args.history} trials in history, {args.decisions} timed decisions, 8 workers; "
          "ms per decision")
    print(f"{'scheduler / gc policy':<40}{'mean':>8}{'p50':>8}{'p95':>8}{'p99':>8}{'max':>9}"
          f"{'cpu p95':>8}{'cpu max':>8}{'x random':>9}{'setup s':>8}")
    baseline = None
    maxes: dict[str, list[float]] = {}
    cpu_maxes: dict[str, list[float]] = {}
    for rep in range(args.repeats):
        policies = args.gc if rep % 2 == 0 else list(reversed(args.gc))
        for name, make in SCHEDULERS.items():
            if args.only and name not in args.only:
                continue
            for policy in policies:
                gc.collect()
                t0 = time.perf_counter()
                probe = GCProbe().start()
                costs, cpu = drive(make(), args.history, args.decisions, policy=policy)
                costs, cpu = costs * 1e3, cpu * 1e3
                probe.stop()
                gc.unfreeze()
                setup = time.perf_counter() - t0 - costs.sum() / 1e3
                mean = float(costs.mean())
                p50, p95, p99 = (float(np.percentile(costs, q)) for q in (50, 95, 99))
                baseline = mean if baseline is None else baseline
                label = f"{name} / {policy}"
                maxes.setdefault(label, []).append(float(costs.max()))
                cpu_maxes.setdefault(label, []).append(float(cpu.max()))
                print(f"{label:<40}{mean:>8.3f}{p50:>8.3f}{p95:>8.3f}{p99:>8.3f}"
                      f"{costs.max():>9.2f}{float(np.percentile(cpu, 95)):>8.3f}"
                      f"{cpu.max():>8.2f}{mean / baseline:>9.1f}{setup:>8.1f}   "
                      f"{probe.summary()}", flush=True)
    for label, values in maxes.items():
        print(f"max ms over repeats, {label}: min {min(values):.2f} median "
              f"{statistics.median(values):.2f} max {max(values):.2f}; CPU max: min "
              f"{min(cpu_maxes[label]):.2f} median {statistics.median(cpu_maxes[label]):.2f} "
              f"max {max(cpu_maxes[label]):.2f}")
    print(f"load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
