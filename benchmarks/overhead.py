"""Per-segment orchestration overhead of rungflow against a bare Prefect task loop.

Both loops run in this process against the same Prefect API (ephemeral unless
PREFECT_API_URL is set), with the same bounded thread pool and the same
"keep N in flight, take whichever finishes first" pattern. The no-op trainable
makes the difference rungflow's own cost: the SQL event log (write-ahead of every
decision and result), scheduler decisions and checkpoint-free bookkeeping.

With ``--artifacts both`` (the default) the rungflow loop runs twice, with
Prefect artifacts off and on (progress updates throttled to one per 2 s, plus
leaderboard and summary at the end), so their cost per segment is printed too.

Every variant is timed between two drains of the Prefect server (see
``benchmarks/_cpu.py``): the client's CPU (this process) and the server's
(its process tree, from /proc) are both counted, including the seconds the
server needs to catch up after the flow returned. Variants are interleaved
and their order rotated per repeat; min / median / max are printed with the
load average.

The client's CPU is also split by thread (``benchmarks/_threads.py``): the
flow's thread (this one, which runs the loop and rungflow's decisions and
commits), the task runner's workers (each task's body and Prefect's task
engine around it), Prefect's services (its event and log workers and
event-loop threads), rungflow's own threads (the lease heartbeat) and the
rest, with the garbage collections' share (in whichever thread triggered
them). The groups add up to the process's CPU.

Usage:
    python benchmarks/overhead.py [--segments 200] [--concurrency 4] [--db URL]
        [--artifacts on|off|both] [--repeat 3] [--json out.json]

To compare source trees (this one against an older commit) in one run, see
``benchmarks/own_cost_ab.py``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# A loaded two-core machine needs more than Prefect's 20 s to boot the ephemeral API.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")  # no network here

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _threads
from _cpu import CpuSample, drain, load_average, sample, spread

# Before Prefect starts its service threads: name them in the kernel, record their exits.
_threads.install()

from prefect import flow, task  # noqa: E402
from prefect.cache_policies import NO_CACHE  # noqa: E402
from prefect.futures import as_completed  # noqa: E402
from prefect.task_runners import ThreadPoolTaskRunner  # noqa: E402


@task(cache_policy=NO_CACHE, persist_result=False)
def bare_task(i: int) -> dict[str, float]:
    return {"resource": 1.0, "loss": 1.0 / (1 + i)}


@flow(persist_result=False)
def bare_loop(n: int, concurrency: int) -> int:
    """The baseline: n tasks, up to ``concurrency`` in flight, as_completed refill."""
    done = 0
    submitted = 0
    with ThreadPoolTaskRunner(max_workers=concurrency) as runner:
        pending = []
        while done < n:
            while submitted < n and len(pending) < concurrency:
                pending.append(runner.submit(bare_task, {"i": submitted}))
                submitted += 1
            first = next(iter(as_completed(pending)))
            pending.remove(first)
            first.result()
            done += 1
    return done


def rungflow_loop(n: int, concurrency: int, name: str) -> dict[str, Any]:
    from flows.spec import load_spec
    from flows.tune import tune

    spec = load_spec(
        {
            "name": name,
            "trainable": "noop",
            "metric": "loss",
            "space": {"x": {"type": "float", "low": 0.0, "high": 1.0}},
            "scheduler": "random",
            "scheduler_args": {"max_t": 1},
            "budget": {"max_trials": n},
            "max_concurrency": concurrency,
        }
    )
    return tune(spec)


#: Seconds spent inside artifact code per method, per rungflow run (see _instrument).
ARTIFACT_SECONDS: dict[str, float] = {}


def _instrument() -> None:
    """Time every entry into :class:`flows.artifacts.ExperimentArtifacts`.

    Wall-clock differences between whole runs are noisy on a shared machine;
    the time spent inside the hook, the start and the final publish is the
    artifacts' own cost, measured directly.
    """
    from flows.artifacts import ExperimentArtifacts

    def wrap(name: str) -> None:
        original = getattr(ExperimentArtifacts, name)

        def timed_method(self: Any, *args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return original(self, *args, **kwargs)
            finally:
                elapsed = time.perf_counter() - t0
                ARTIFACT_SECONDS[name] = ARTIFACT_SECONDS.get(name, 0.0) + elapsed

        setattr(ExperimentArtifacts, name, timed_method)

    for name in ("__call__", "__enter__", "publish"):
        wrap(name)


@dataclass(frozen=True)
class Measured:
    """One variant's run between two drains."""

    returned: CpuSample  # until ``fn`` returned
    caught_up: CpuSample  # until the server caught up
    flow_thread: float  # CPU seconds of this thread, which runs the flow's loop
    groups: dict[str, float]  # this process's CPU seconds per thread group (until caught up)
    gc: float  # of which in garbage collections (in any thread)
    out: Any


def _measure(fn: Any, *args: Any) -> Measured:
    """Run ``fn`` between two drains."""
    drain()
    before = sample()
    threads_before = _threads.sample()
    thread_before = time.thread_time()
    out = fn(*args)
    flow_thread = time.thread_time() - thread_before
    returned = sample() - before
    drain()
    threads_after = _threads.sample()
    groups = _threads.split(threads_before, threads_after)
    collections = _threads.gc_split(threads_before, threads_after)
    caught_up = sample() - before
    return Measured(returned, caught_up, flow_thread, groups, collections, out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--segments", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--db", default=None, help="SQLAlchemy URL (default: temp SQLite)")
    parser.add_argument(
        "--artifacts", choices=["on", "off", "both"], default="both",
        help="Run the rungflow loop with Prefect artifacts on, off or both (default).",
    )
    parser.add_argument("--repeat", type=int, default=3, help="Repeats (order rotated).")
    parser.add_argument(
        "--gc", choices=["freeze", "default"], default="freeze",
        help="Freeze the warm-up heap before timing (default), or leave the collector as is.",
    )
    parser.add_argument(
        "--json", type=Path, default=None,
        help="Also write the per-repeat figures (ms/segment) here, for own_cost_ab.py.",
    )
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="rungflow-overhead-"))
    os.environ.setdefault("RUNGFLOW_HOME", str(tmp))
    if args.db:
        os.environ["RUNGFLOW_DATABASE_URL"] = args.db

    # Warm-up outside the measurement: start the ephemeral API and import the
    # flow module (about 1 s of one-time import cost), then one small run of each loop.
    import examples.noop  # noqa: F401  (registers "noop")
    import flows.tune  # noqa: F401

    bare_loop(5, 2)
    # A first rungflow run creates the store's schema (Alembic) and imports the
    # scheduler stack: once per installation and per process, not per segment.
    os.environ["RUNGFLOW_ARTIFACTS"] = "off"
    rungflow_loop(5, 2, f"overhead-warmup-{int(time.time())}")
    _instrument()
    if args.gc == "freeze":
        # The same frozen heap for every variant: see the module docstring.
        gc.collect()
        gc.freeze()
    n, c = args.segments, args.concurrency
    modes = ["off", "on"] if args.artifacts == "both" else [args.artifacts]
    variants = ["bare", *modes]
    load_start = load_average()
    wall: dict[str, list[float]] = {v: [] for v in variants}
    client: dict[str, list[float]] = {v: [] for v in variants}
    server: dict[str, list[float]] = {v: [] for v in variants}
    # The flow thread alone (the loop, rungflow's decisions and commits): the
    # process figure also holds the task threads and Prefect's client workers.
    flow_thread: dict[str, list[float]] = {v: [] for v in variants}
    # The whole process's CPU split by thread group (see benchmarks/_threads.py).
    groups: dict[str, dict[str, list[float]]] = {
        v: {g: [] for g in _threads.GROUPS} for v in variants
    }
    collections: dict[str, list[float]] = {v: [] for v in variants}
    inside: list[tuple[float, float]] = []  # (all artifact code, the per-result hook)
    for r in range(args.repeat):
        # Rotate the order so that warm caches and machine load favour no variant.
        for variant in variants[r % len(variants):] + variants[: r % len(variants)]:
            if variant == "bare":
                m = _measure(bare_loop, n, c)
            else:
                # Settings are read at flow start, so the env switches artifacts per run.
                os.environ["RUNGFLOW_ARTIFACTS"] = variant
                ARTIFACT_SECONDS.clear()
                name = f"overhead-{variant}-{r}-{int(time.time())}"
                m = _measure(rungflow_loop, n, c, name)
                assert m.out["segments_run"] == n, m.out
                if variant == "on":
                    hook = ARTIFACT_SECONDS.get("__call__", 0.0)
                    inside.append((sum(ARTIFACT_SECONDS.values()), hook))
            wall[variant].append(1000 * m.returned.wall / n)
            client[variant].append(1000 * m.caught_up.client / n)
            server[variant].append(1000 * m.caught_up.server / n)
            flow_thread[variant].append(1000 * m.flow_thread / n)
            for g, seconds in m.groups.items():
                groups[variant][g].append(1000 * seconds / n)
            collections[variant].append(1000 * m.gc / n)

    if args.json is not None:
        args.json.write_text(
            json.dumps({"wall": wall, "client": client, "server": server,
                        "flow_thread": flow_thread, "threads": groups, "gc": collections,
                        "segments": n})
        )
    db = "custom" if args.db else "sqlite"
    print(
        f"segments={n} concurrency={c} db={db} gc={args.gc} repeats={args.repeat} (order rotated; "
        f"the Prefect server drained before and after each run)"
    )
    print(f"load average at start: {load_start}; at end: {load_average()}")
    print("ms per segment, min / median / max over repeats:")
    print(f"{'variant':28s} {'wall':>22s} {'client CPU':>22s} {'server CPU':>22s}")
    label = {"bare": "bare prefect task loop", "off": "rungflow, artifacts off",
             "on": "rungflow, artifacts on"}
    for v in variants:
        print(
            f"{label[v]:28s} {spread(wall[v]):>22s} {spread(client[v]):>22s} "
            f"{spread(server[v]):>22s}"
        )
    med = {v: statistics.median(client[v]) for v in variants}
    med_server = {v: statistics.median(server[v]) for v in variants}
    for v in modes:
        own = [a - b for a, b in zip(client[v], client["bare"], strict=True)]
        total_ratio = (med[v] + med_server[v]) / (med["bare"] + med_server["bare"])
        print(
            f"rungflow's own client CPU ({v:3s}): {spread(own)} ms/segment "
            f"(rungflow minus bare, paired by repeat); client+server CPU ratio "
            f"{total_ratio:.2f}x; server share of rungflow's total "
            f"{med_server[v] / (med[v] + med_server[v]):.0%}"
        )
    print("client CPU by thread group, ms per segment, min / median / max "
          "(rungflow minus bare paired by repeat in the last columns):")
    print(f"{'thread group':18s} " + " ".join(f"{label[v][:22]:>22s}" for v in variants)
          + " " + " ".join(f"{'own, ' + v:>22s}" for v in modes))
    for g in _threads.GROUPS:
        own_g = [
            spread([a - b for a, b in zip(groups[v][g], groups["bare"][g], strict=True)])
            for v in modes
        ]
        print(f"{g:18s} " + " ".join(f"{spread(groups[v][g]):>22s}" for v in variants)
              + " " + " ".join(f"{o:>22s}" for o in own_g))
    own_gc = [
        spread([a - b for a, b in zip(collections[v], collections["bare"], strict=True)])
        for v in modes
    ]
    print(f"{'(in any, GC)':18s} " + " ".join(f"{spread(collections[v]):>22s}" for v in variants)
          + " " + " ".join(f"{o:>22s}" for o in own_gc))
    if len(modes) == 2:
        diff = [a - b for a, b in zip(client["on"], client["off"], strict=True)]
        print(f"artifacts on - off, client CPU: {spread(diff)} ms/segment (noisy)")
    if inside:
        total_s, hook = min(inside)
        print(
            f"time inside artifact code   : {total_s:7.2f} s  {1000 * total_s / n:7.2f} ms/segment"
            f"  (per-result hook {1000 * hook:.0f} ms in all, {1e6 * hook / n:.0f} us/segment;"
            f" the rest is the start and the final publish, once per flow run)"
        )


if __name__ == "__main__":
    main()
