"""Claim latency and lost races with 1, 2 and 4 cooperating runners (not a test).

One *claim* is what a cooperating runner does before it may start a segment:
:func:`flows.engine.commit.decide_and_commit` with ``runs=1``, the flow's own
path. It asks the scheduler (random search, so the decision itself is cheap
and the number measures the log) and appends the decision with its
concurrency check; a *lost race* is a transaction rolled back because another
runner appended first (then the runner catches up and decides again). The
claimed segment's result is then recorded the same way, untimed, so the
experiment moves on as it would in a real run.

Every runner is its own process (as cooperating flow runs are), all started
together on one fresh database per measurement. With ``--baseline DIR`` (a
source tree, e.g. ``git archive main | tar -x -C DIR``) each measurement is
also taken with that code in the same run; variants alternate and their order
rotates per repeat. Prints min/median/max over repeats of the median and p95
claim latency, lost races per 100 claims and claims/s, and the load average.

With ``--async-commit`` the runners of this code (not the baseline's, which
may lack the setting) also commit with ``synchronous_commit`` off, as with
``RUNGFLOW_PG_SYNCHRONOUS_COMMIT=off``: a runner holds the experiment lock
until its commit returns, so the flush is part of every other runner's wait.

Usage::

    python benchmarks/claims.py [--claims 240] [--runners 1 2 4] [--repeats 3]
        [--pg postgresql+psycopg://postgres@127.0.0.1:5432/test] [--sqlite]
        [--baseline DIR] [--async-commit]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from _pg import scratch_database  # this script's directory (sys.path[0])

# The code under test: the tree named by RUNGFLOW_BENCH_TREE (a baseline), else this one.
_TREE = os.environ.get("RUNGFLOW_BENCH_TREE") or str(Path(__file__).resolve().parents[1])
sys.path.insert(0, _TREE)

NAME = "claims"


def _spec(n: int) -> Any:
    from flows.spec import ExperimentSpec

    return ExperimentSpec.model_validate(
        {"name": NAME, "trainable": "bench", "metric": "loss",
         "space": {"x": {"type": "float", "low": 0.0, "high": 1.0}},
         "scheduler": "random", "scheduler_args": {"max_t": 1},
         "budget": {"max_trials": n}, "max_concurrency": 1},
        context={"check_trainable": False},
    )


def _runner_process(
    url: str, quota: int, budget: int, barrier: Any, out: Any, sync: bool = True
) -> None:
    import inspect

    from flows.engine.commit import decide_and_commit
    from flows.engine.leases import LeaseSettings
    from flows.engine.runner import ExperimentRunner
    from schedulers import RunSegment, SegmentFinished
    from storage import ConcurrencyError, EventStore

    store = EventStore(url)
    kwargs = {} if sync else {"synchronous_commit": False}
    assert sync or "synchronous_commit" in inspect.signature(ExperimentRunner).parameters
    runner = ExperimentRunner(store, _spec(budget), "", lease_settings=LeaseSettings(), **kwargs)
    runner.open()  # replay, lease, and (here) a look at the other runners' leases
    lost = [0]
    transact = runner.transact

    def counted(*args: Any, **kwargs: Any) -> Any:
        try:
            return transact(*args, **kwargs)
        except ConcurrencyError:
            lost[0] += 1
            raise

    runner.transact = counted  # type: ignore[method-assign]
    latencies: list[float] = []
    barrier.wait()
    t_start = time.perf_counter()
    try:
        while len(latencies) < quota:
            t0 = time.perf_counter()
            actions = decide_and_commit(runner, runs=1).actions
            if not actions or not isinstance(actions[-1], RunSegment):
                break
            latencies.append(time.perf_counter() - t0)
            a = actions[-1]
            report = {"resource": a.stop, "loss": 0.5}
            result = SegmentFinished(a.trial_id, a.start, a.stop, (report,), report)
            seq = runner._started_seq[a.trial_id]

            def holds(a: Any = a, seq: int = seq) -> bool:  # as the runner records a result
                return runner.claims.holds(runner.owner.id, a.trial_id, a.start, a.stop, seq)

            decide_and_commit(runner, [result], runs=None, valid=holds)
        wall = time.perf_counter() - t_start
    finally:
        runner.close()
        store.close()
    out.put({"latencies": latencies, "lost": lost[0], "wall": wall,
             "caught_up": getattr(runner, "caught_up_in_transaction", 0)})


def child(url: str, runners: int, claims: int, sync: bool = True) -> dict[str, Any]:
    """One measurement in this interpreter: ``runners`` processes, ``claims`` in all."""
    from storage import EventStore

    budget = claims * 2
    with EventStore(url) as store:
        store.create_experiment(NAME, _spec(budget).to_json())
    ctx = mp.get_context("spawn")
    barrier, out = ctx.Barrier(runners), ctx.Queue()
    procs = [ctx.Process(target=_runner_process, args=(url, claims // runners, budget,
                                                       barrier, out, sync))
             for _ in range(runners)]
    for p in procs:
        p.start()
    parts = [out.get(timeout=600) for _ in procs]
    for p in procs:
        p.join()
    lat = sorted(x for part in parts for x in part["latencies"])
    n = len(lat)
    return {
        "claims": n,
        "median_ms": 1000 * statistics.median(lat),
        "p95_ms": 1000 * lat[int(0.95 * (n - 1))],
        "max_ms": 1000 * lat[-1],
        "lost_per_100": 100 * sum(p["lost"] for p in parts) / n,
        "caught_up_per_100": 100 * sum(p["caught_up"] for p in parts) / n,
        "per_s": n / max(p["wall"] for p in parts),
    }


def _fmt(values: list[float], width: int = 7, digits: int = 2) -> str:
    return (f"{min(values):{width}.{digits}f} {statistics.median(values):{width}.{digits}f} "
            f"{max(values):{width}.{digits}f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--claims", type=int, default=240, help="claims per measurement")
    parser.add_argument("--runners", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--pg", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    parser.add_argument("--sqlite", action="store_true", help="also measure SQLite")
    parser.add_argument("--baseline", help="source tree of the code to compare with")
    parser.add_argument("--async-commit", action="store_true",
                        help="also measure this code with synchronous_commit off")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        url, runners, sync = args.child.rsplit("|", 2)
        print(json.dumps(child(url, int(runners), args.claims, sync == "on")))
        return

    codes: dict[str, str | None] = {"this": None}
    if args.baseline:
        codes = {"baseline": str(Path(args.baseline).resolve()), "this": None}
    if args.async_commit:
        codes["this-async"] = None
    backends = ["postgresql"] + (["sqlite"] if args.sqlite else [])
    figures: dict[tuple[str, int, str], list[dict[str, Any]]] = {}
    tmp = Path(tempfile.mkdtemp(prefix="rungflow-claims-"))
    order = list(codes)
    for rep in range(args.repeats):
        for backend in backends:
            for runners in args.runners:
                for code in order:
                    database = (
                        nullcontext(f"sqlite:///{tmp / f'{uuid.uuid4().hex[:8]}.db'}")
                        if backend == "sqlite"
                        else scratch_database(args.pg, "rungflow_claims")
                    )
                    env = dict(os.environ)
                    env.pop("RUNGFLOW_BENCH_TREE", None)
                    if codes[code]:
                        env["RUNGFLOW_BENCH_TREE"] = codes[code] or ""
                        env["PYTHONPATH"] = codes[code] or ""
                    with database as url:
                        out = subprocess.run(
                            [sys.executable, __file__, "--claims", str(args.claims),
                             "--child",
                             f"{url}|{runners}|{'off' if code == 'this-async' else 'on'}"],
                            env=env, check=True, capture_output=True, text=True)
                    row = json.loads(out.stdout.strip().splitlines()[-1])
                    figures.setdefault((backend, runners, code), []).append(row)
                    print(f"  repeat {rep + 1} {backend} {runners} runner(s) {code}: "
                          f"median {row['median_ms']:.2f} ms, p95 {row['p95_ms']:.2f} ms, "
                          f"lost {row['lost_per_100']:.1f}/100", flush=True)
        order.reverse()
    print(f"\n{args.claims} claims per measurement, {args.repeats} repeats; "
          "each cell is min median max over repeats")
    print(f"{'backend':<10} {'runners':>7} {'code':<9} {'median ms':>23} {'p95 ms':>23} "
          f"{'lost races/100 claims':>23} {'claims/s':>23}")
    for (backend, runners, code), rows in figures.items():
        print(f"{backend:<10} {runners:>7} {code:<9} "
              f"{_fmt([r['median_ms'] for r in rows])} {_fmt([r['p95_ms'] for r in rows])} "
              f"{_fmt([r['lost_per_100'] for r in rows], 7, 1)} "
              f"{_fmt([r['per_s'] for r in rows], 7, 0)}")
    if args.baseline:
        print("\nratio this / baseline (medians over repeats)")
        for backend in backends:
            for runners in args.runners:
                this, base = figures[(backend, runners, "this")], figures[
                    (backend, runners, "baseline")]
                def med(rows: list[dict[str, Any]], key: str) -> float:
                    return statistics.median(r[key] for r in rows)
                print(f"  {backend} {runners} runner(s): median latency "
                      f"{med(this, 'median_ms') / med(base, 'median_ms'):.2f}x, p95 "
                      f"{med(this, 'p95_ms') / med(base, 'p95_ms'):.2f}x, lost races "
                      f"{med(this, 'lost_per_100'):.1f} vs {med(base, 'lost_per_100'):.1f} "
                      "per 100 claims")
    print(f"load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
