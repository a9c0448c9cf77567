"""Resume and status time on a 10,000-trial log, SQLite and PostgreSQL (not a test).

Builds once per backend the log of a long run that crashed with segments in
flight: PBT (default) or ASHA with ``--trials`` trials and ``--results``
finished segments (~242k events at the default size), simulated like
:func:`schedulers.simulate.simulate` does, and written in big batches
straight through :class:`storage.EventStore` (so the projections are
maintained exactly as the flow maintains them). Then it
times, ``--repeats`` times with the variants interleaved:

* ``resume``: open a fresh store, construct the runner as ``tune`` does and
  run it until the first new segment starts (``open()`` replays, takes a
  lease, reclaims the crashed segments; then the first decision is claimed);
* ``status``: ``experiment_status`` in this process;
* ``end-of-run``: what the end of a flow run computes besides its API calls:
  the status its verdict judges (the final artifacts reuse it), the verdict,
  the leaderboard rows, the summary markdown and the curves' copy of the
  scheduler, given the run's folded runner (``run_end_status`` where the code
  has it, else ``experiment_status``), wall time, with ``end-of-run-cpu`` its
  CPU time (this process's: PostgreSQL's own work is not in it);
* ``end-after-crash``: the same status without the run's runner, as the
  artifacts of a run that failed before its first result compute it (the
  latest snapshot plus the log's tail), likewise with ``end-after-crash-cpu``;
* ``status-table``: what the table of ``rungflow status NAME`` reads and
  prints, in this process (``experiment_summary``; code without it reads
  ``experiment_status``, as its table did);
* ``status-cli``: ``rungflow status NAME --json`` in a fresh interpreter,
  wall time, with ``status-cli-cpu`` its CPU time;
* ``export-cli``: ``rungflow export NAME --format json`` likewise (and
  ``export-cli-cpu``);
* ``table-cli``: ``rungflow status NAME`` (the table) in a fresh interpreter,
  wall time, with ``table-cli-cpu`` its CPU time (user + system, from
  ``wait4``).

Each timing runs on a fresh copy of the crashed run's database (resume and
status may leave snapshots behind), in a fresh interpreter.

It prints min/median/max seconds per figure, the range of the 1-minute load
average over its timings, and the load average before and after.

Run: ``python benchmarks/resume.py [--trials 10000] [--repeats 3]
[--pg postgresql+psycopg://postgres@127.0.0.1:5432/test] [--no-sqlite]
[--baseline DIR]``. With ``--baseline`` (a source tree, e.g. ``git archive
main | tar -x -C DIR``) each figure is also taken with that code, in the same
run, on a copy of the same log whose snapshot that code took, variants
interleaved.
The PostgreSQL figures need a database URL (skipped without ``--pg``); the
script creates and drops its own database next to the one named.
"""

from __future__ import annotations

import argparse
import dataclasses
import heapq
import json
import logging
import os
import pickle
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa
from _pg import scratch_database

import examples.objectives  # noqa: F401 - registers the "synthetic" trainable
from examples.synthetic import synthetic_curve
from flows.engine.runner import ExperimentRunner
from flows.engine.status import experiment_status
from flows.spec import ExperimentSpec
from schedulers import (
    CheckpointRef,
    Done,
    Event,
    RunSegment,
    SegmentFinished,
    SegmentStarted,
    Wait,
    action_events,
)
from storage import EventStore

NAME = "resume-bench"
BATCH = 5000


def make_spec(scheduler: str, trials: int) -> ExperimentSpec:
    """PBT with ``trials`` members (ten segments each by the cut), or ASHA."""
    if scheduler == "pbt":
        # Room for more generations than the cut leaves time for: still running.
        # compare="latest" (Ray's rule): "matched" ranks against every member
        # at each boundary, O(population) per decision, which makes simulating
        # a 10k-member log take hours; the log's shape is what is timed here.
        args: dict[str, Any] = {"perturbation_interval": 1, "population_size": trials,
                                "max_generations": 20, "compare": "latest"}
        budget: dict[str, Any] = {}
    else:
        args = {"max_t": 1024, "grace_period": 1, "reduction_factor": 2}
        budget = {"max_trials": trials * 2}
    return ExperimentSpec(
        name=NAME,
        trainable="synthetic",
        metric="loss",
        mode="min",
        space={
            "lr": {"type": "float", "low": 1e-4, "high": 1.0, "log": True},
            "width": {"type": "int", "low": 16, "high": 256, "log": True},
            "dropout": {"type": "float", "low": 0.0, "high": 0.6, "step": 0.05},
            "act": {"type": "categorical", "choices": ["relu", "tanh", "sigmoid"]},
        },
        scheduler=scheduler,
        scheduler_args=args,
        budget=budget,
        max_concurrency=8,
        seed=0,
    )


def build_events(spec: ExperimentSpec, trials: int, results: int) -> list[Event]:
    """A crashed run's log (without ExperimentCreated), cut once ``trials`` trials
    exist and ``results`` segments have finished.

    The flow's loop in memory (ask, record, run with a jittered duration, record
    the result), like :func:`schedulers.simulate.simulate`, stopped early.
    """
    scheduler = spec.build_scheduler()
    owner = "crashed-host/1/dead"  # the crashed runner: its lease row is gone
    jitter = np.random.default_rng(1)
    events: list[Event] = []
    heap: list[tuple[float, int, RunSegment]] = []
    now, counter, finished = 0.0, 0, 0

    def record(event: Event) -> None:
        events.append(event)
        scheduler.tell(event)

    while True:
        while len(heap) < spec.max_concurrency:
            action = scheduler.ask(1)[0]
            if isinstance(action, Wait):
                break
            for event in action_events(action):
                if isinstance(event, SegmentStarted):
                    event = dataclasses.replace(event, info={**event.info, "owner": owner})
                record(event)
            if isinstance(action, Done):
                raise RuntimeError("the run finished before the cut: raise the budget")
            if isinstance(action, RunSegment):
                counter += 1
                d = (action.stop - action.start) * float(jitter.lognormal(0.0, 0.3))
                heapq.heappush(heap, (now + d, counter, action))
        if len(scheduler.trials) >= trials and finished >= results:
            return events  # the crash: what is in the heap never finishes
        now, _, action = heapq.heappop(heap)
        report = {"resource": action.stop, "loss": synthetic_curve(action.config, action.stop)}
        ref = CheckpointRef(f"{NAME}/{action.trial_id}/{action.stop:g}.ckpt", 1, "0" * 64,
                            action.trial_id, action.stop)
        record(SegmentFinished(action.trial_id, action.start, action.stop, (report,), report,
                               ref))
        finished += 1


def write_log(store: EventStore, spec: ExperimentSpec, events: list[Event]) -> None:
    if store.has_experiment(NAME):
        store.delete_experiment(NAME)
    store.delete_leases(NAME)
    store.create_experiment(NAME, spec.to_json())
    seq = 1
    for i in range(0, len(events), BATCH):
        seq = store.append(NAME, events[i : i + BATCH], expected_seq=seq)


def time_resume(url: str, spec: ExperimentSpec, root: str) -> float:
    """Seconds from opening the store to the first new segment claimed."""
    t0 = time.perf_counter()
    store = EventStore(url)
    runner = ExperimentRunner(store, spec, root)
    try:
        orphans = runner.open()
        if not orphans:  # nothing to reclaim: the first decision starts a segment
            while True:
                action = runner.scheduler.ask(1)[0]
                if runner.commit(runner.claim_events(action_events(action))) and isinstance(
                    action, RunSegment
                ):
                    break
        elapsed = time.perf_counter() - t0
    finally:
        runner.close()
        store.close()
    return elapsed


def time_status(url: str, root: str) -> float:
    t0 = time.perf_counter()
    with EventStore(url) as store:
        data = experiment_status(store, NAME, checkpoints=root)
    assert data["n_trials"] > 0
    return time.perf_counter() - t0


def time_status_table(url: str, root: str) -> float:
    """The table's read and its printing (to nowhere), in this process."""
    import flows.engine.status as status_module
    from flows.cli.status import console, print_status

    read = getattr(status_module, "experiment_summary", experiment_status)
    t0 = time.perf_counter()
    with EventStore(url) as store:
        data = read(store, NAME, checkpoints=root)
    with console.capture():  # rendered as the terminal would get it, then dropped
        print_status(data, 10)
    return time.perf_counter() - t0


def time_status_cli(url: str, root: str, *args: str, command: str = "status"
                    ) -> tuple[float, float]:
    """Wall and CPU seconds of ``rungflow COMMAND NAME *args`` in a fresh interpreter."""
    env = {**os.environ, "RUNGFLOW_DATABASE_URL": url, "RUNGFLOW_CHECKPOINTS": root}
    exe = Path(sys.executable).with_name("rungflow")
    t0 = time.perf_counter()
    child = subprocess.Popen([str(exe), command, NAME, *args], env=env,
                             stdout=subprocess.DEVNULL)
    _, code, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - t0
    child.returncode = os.waitstatus_to_exitcode(code)
    assert child.returncode == 0, child.returncode
    return wall, usage.ru_utime + usage.ru_stime


def fmt(values: list[float]) -> str:
    return (f"min {min(values):7.2f}  median {statistics.median(values):7.2f}  "
            f"max {max(values):7.2f} s")


def time_end_of_run(url: str, spec: ExperimentSpec, root: str, *, crashed: bool = False
                    ) -> tuple[float, float]:
    """Wall and CPU seconds of what the end of a flow run computes besides its
    API calls (see the module docstring), given the run's folded runner unless
    ``crashed``."""
    import flows.engine.status as status_module
    from flows.artifacts import leaderboard_rows, live_snapshot, summary_markdown

    with EventStore(url) as store:
        runner = ExperimentRunner(store, spec, root)
        runner.replay()  # the state the run ended with (not timed)
        given = None if crashed else runner
        t0, c0 = time.perf_counter(), time.process_time()
        if hasattr(status_module, "run_end_status"):
            status = status_module.run_end_status(store, NAME, given)
        else:  # the verdict's status, which the final artifacts reuse
            status = experiment_status(store, NAME, runner=given)
        status_module.run_verdict(status)
        leaderboard_rows(status)
        summary_markdown(spec, status, None)
        if not crashed:
            live_snapshot(spec, runner.scheduler)
        return time.perf_counter() - t0, time.process_time() - c0


def take_snapshot(url: str, spec: ExperimentSpec) -> float:
    """The crashed run's last periodic snapshot, taken by the code timed."""
    with EventStore(url) as store:
        runner = ExperimentRunner(store, spec, "")
        runner.replay()
        runner.save_snapshot()
    return 0.0


def measure(url: str, what: str, root: str, spec_json: str) -> float | dict[str, float]:
    """One timing in this interpreter (the parent runs each in a fresh process)."""
    spec = ExperimentSpec.model_validate_json(spec_json)
    if what == "snapshot":
        return take_snapshot(url, spec)
    if what == "resume":
        return time_resume(url, spec, root)
    if what == "status":
        return time_status(url, root)
    if what in ("end-of-run", "end-after-crash"):
        wall, cpu = time_end_of_run(url, spec, root, crashed=what == "end-after-crash")
        return {what: wall, f"{what}-cpu": cpu}
    if what == "export-cli":
        wall, cpu = time_status_cli(url, root, "--format", "json", command="export")
        return {"export-cli": wall, "export-cli-cpu": cpu}
    if what == "status-table":
        return time_status_table(url, root)
    if what == "table-cli":
        wall, cpu = time_status_cli(url, root)
        return {"table-cli": wall, "table-cli-cpu": cpu}
    wall, cpu = time_status_cli(url, root, "--json")
    return {"status-cli": wall, "status-cli-cpu": cpu}


def copy_db(label: str, src: str, dst_name: str) -> str:
    """A copy of the database at ``src`` named ``dst_name``, replacing any; its URL."""
    if label == "sqlite":
        path = Path(sa.make_url(src).database or "")
        dst = path.with_name(f"{dst_name}.db")
        with sqlite3.connect(path) as a, sqlite3.connect(dst) as b:
            a.backup(b)
        return f"sqlite:///{dst}"
    parsed = sa.make_url(src)
    admin = sa.create_engine(parsed.set(database="postgres"), isolation_level="AUTOCOMMIT")
    db = f"{parsed.database.split('__')[0]}__{dst_name}"  # type: ignore[union-attr]
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)'))
        conn.execute(sa.text(f'CREATE DATABASE "{db}" TEMPLATE "{parsed.database}"'))
    admin.dispose()
    return parsed.set(database=db).render_as_string(hide_password=False)


def run_code(code: str | None, *argv: str) -> dict[str, float]:
    """``--measure argv`` in a fresh interpreter running the tree ``code`` (None: this
    one); ``{what: seconds}``."""
    env = dict(os.environ)
    if code:
        env["PYTHONPATH"] = code
    # Not from this tree's directory: `python -m`/`-c` would put it first on sys.path.
    out = subprocess.run([sys.executable, __file__, "--measure", *argv], env=env,
                         check=True, capture_output=True, text=True, cwd=tempfile.gettempdir())
    value = json.loads(out.stdout.strip().splitlines()[-1])
    return value if isinstance(value, dict) else {argv[1]: float(value)}


def build(label: str, url: str, spec: ExperimentSpec, events: list[Event], tail: int,
          codes: dict[str, str | None]) -> dict[str, str]:
    """The crashed run's database for each code: the log up to ``tail`` events
    before its end, the snapshot that code's runner takes there (its last
    periodic one), then the tail. Returns each code's pristine database URL;
    every timing runs on a fresh copy of it (resume and status write snapshots)."""
    with EventStore(url) as store:
        write_log(store, spec, events[:-tail])
    pristine = {code: copy_db(label, url, f"pristine_{code}") for code in codes}
    for code, path in codes.items():
        run_code(path, pristine[code], "snapshot", "", spec.model_dump_json())
        with EventStore(pristine[code]) as store:
            seq = store.last_seq(NAME)
            for i in range(len(events) - tail, len(events), BATCH):
                seq = store.append(NAME, events[i : min(i + BATCH, len(events))],
                                   expected_seq=seq)
    return pristine


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10_000)
    parser.add_argument("--results", type=int, default=100_000)
    parser.add_argument("--scheduler", choices=["pbt", "asha"], default="pbt")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--pg", help="PostgreSQL URL of an existing database (admin rights)")
    parser.add_argument("--no-sqlite", action="store_true")
    parser.add_argument("--skip-cli", action="store_true")
    parser.add_argument("--events-cache", help="pickle of the simulated log: read if it "
                        "exists (same --scheduler/--trials/--results), else written")
    parser.add_argument("--only", help="comma-separated figures to take (e.g. "
                        "status,status-table,table-cli)")
    parser.add_argument("--baseline", help="source tree of the code to compare with "
                        "(e.g. a `git archive` of main), timed on a copy of the same log")
    parser.add_argument("--tail", type=int, default=2000,
                        help="events written after the last snapshot")
    parser.add_argument("--measure", nargs=4, metavar=("URL", "WHAT", "ROOT", "SPEC"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    logging.getLogger("rungflow").setLevel(logging.ERROR)  # "took over ..." per repeat
    if args.measure:
        print(json.dumps(measure(*args.measure)))
        return

    spec = make_spec(args.scheduler, args.trials)
    t0 = time.perf_counter()
    cache = Path(args.events_cache) if args.events_cache else None
    if cache is not None and cache.exists():
        with cache.open("rb") as f:
            cached_spec, events = pickle.load(f)  # our own scratch file
        if cached_spec != spec.model_dump_json():
            raise SystemExit(f"error: {cache} holds the log of another spec")
    else:
        events = build_events(spec, args.trials, args.results)
        if cache is not None:
            with cache.open("wb") as f:
                pickle.dump((spec.model_dump_json(), events), f)
    n_results = sum(isinstance(e, SegmentFinished) for e in events)
    print(f"log: {args.scheduler}, {args.trials} trials, {n_results} results, "
          f"{len(events) + 1} events (simulated in {time.perf_counter() - t0:.1f} s)")
    print(f"load average before: {os.getloadavg()}")

    with tempfile.TemporaryDirectory() as tmp, _backends(args, tmp) as backends:
        root = str(Path(tmp) / "ckpt")
        variants: list[tuple[str, str, str | None]] = []  # (code, backend, url), env
        codes: dict[str, str | None] = {"this": None}
        if args.baseline:
            codes = {"baseline": str(Path(args.baseline).resolve()), "this": None}
        for label, url in backends:
            t0 = time.perf_counter()
            pristine = build(label, url, spec, events, args.tail, codes)
            print(f"{label}: logs written in {time.perf_counter() - t0:.1f} s", flush=True)
            for code in codes:
                variants.append((code, label, pristine[code]))
        whats = ["resume", "status", "status-table", "end-of-run", "end-after-crash"]
        whats += [] if args.skip_cli else ["status-cli", "table-cli", "export-cli"]
        if args.only:
            whats = [w for w in whats if w in args.only.split(",")]
        figures: dict[tuple[str, str, str], list[float]] = {}
        loads: dict[tuple[str, str, str], list[float]] = {}  # 1-min load at each timing
        for rep in range(args.repeats):
            # Rotate the order so no variant always runs first (cold caches).
            k = rep % len(variants)
            for code, label, url in variants[k:] + variants[:k]:
                for what in whats:
                    work = copy_db(label, url, "work")
                    values = run_code(codes[code], work, what, root, spec.model_dump_json())
                    load = os.getloadavg()[0]
                    for name, value in values.items():
                        figures.setdefault((label, name, code), []).append(value)
                        loads.setdefault((label, name, code), []).append(load)
                        print(f"  ({label} {name} {code}: {value:.2f} s, load {load:.2f})",
                              flush=True)
        for (label, what, code), values in sorted(figures.items()):
            low, high = min(loads[label, what, code]), max(loads[label, what, code])
            line = f"{label:10s} {what:15s} {code:9s} {fmt(values)}  load {low:.1f}-{high:.1f}"
            base = figures.get((label, what, "baseline"))
            if code == "this" and base:
                line += f"   x{statistics.median(base) / statistics.median(values):.1f} faster"
            print(line)
    print(f"load average after: {os.getloadavg()}")


@contextmanager
def _backends(args: argparse.Namespace, tmp: str) -> Iterator[list[tuple[str, str]]]:
    out: list[tuple[str, str]] = []
    if not args.no_sqlite:
        out.append(("sqlite", f"sqlite:///{Path(tmp) / 'resume.db'}"))
    if args.pg:
        with scratch_database(args.pg, "rungflow_resume") as url:
            out.append(("postgresql", url))
            yield out
    else:
        yield out


if __name__ == "__main__":
    main()
