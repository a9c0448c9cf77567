"""SQL per result on PostgreSQL: the runner's result transaction against the floor (not a test).

A *result* is what the flow's runner writes when a segment finishes:
:func:`flows.engine.commit.decide_and_commit` with the ``SegmentFinished``
and ``runs=1``, so the decisions it triggers (random search: ``Stop``, then
the next trial's ``TrialCreated`` and ``SegmentStarted``) commit with it in
one transaction through the runner's held connection. Per result the script
reports CPU and wall milliseconds, then statements and round trips, counted
from libpq's protocol trace of the writer's connection over a few more results
after the timed ones (the trace costs time): statements are the queries the
server runs (``Execute`` and simple ``Query`` messages; a simple query with
several statements counts once, a row of an ``executemany`` once each), round
trips the times the client sent messages and then waited for the server's.

The *floor* is a bare psycopg loop of one ``INSERT`` and ``COMMIT`` per
transaction on the same server: what any durable write costs here.

Each figure is taken durable (the server's ``synchronous_commit``) and with
``RUNGFLOW_PG_SYNCHRONOUS_COMMIT=off``; with ``--baseline DIR`` (a source
tree, e.g. ``git archive 52e99e7 | tar -x -C DIR``) also with that code.
Every measurement runs in a fresh interpreter on a fresh database; variants
alternate and their order flips per repeat. Prints min/median/max over
repeats and the load average.

Usage::

    python benchmarks/result_sql.py [--results 400] [--repeats 3]
        [--pg postgresql+psycopg://postgres@127.0.0.1:5432/test] [--baseline DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _pg import scratch_database  # this script's directory (sys.path[0])

# The code under test: the tree named by RUNGFLOW_BENCH_TREE (a baseline), else this one.
_TREE = os.environ.get("RUNGFLOW_BENCH_TREE") or str(Path(__file__).resolve().parents[1])
sys.path.insert(0, _TREE)

WARM_UP = 50
#: Results after the timed ones whose protocol messages are counted.
TRACED = 20


def _spec(n: int) -> Any:
    from flows.spec import ExperimentSpec

    return ExperimentSpec.model_validate(
        {
            "name": "results",
            "trainable": "bench",
            "metric": "loss",
            "space": {"x": {"type": "float", "low": 0.0, "high": 1.0}},
            "scheduler": "random",
            "scheduler_args": {"max_t": 1},
            "budget": {"max_trials": n},
            "max_concurrency": 1,
        },
        context={"check_trainable": False},
    )


def runner_child(url: str, n: int, synchronous_commit: bool) -> dict[str, float]:
    """``n`` results through one runner (after a warm-up); per-result figures."""
    import inspect

    from psycopg import pq

    from flows.engine.commit import decide_and_commit
    from flows.engine.runner import ExperimentRunner
    from schedulers import RunSegment, SegmentFinished
    from storage import EventStore

    store = EventStore(url)
    kwargs: dict[str, Any] = {}
    if "synchronous_commit" in inspect.signature(ExperimentRunner).parameters:
        kwargs["synchronous_commit"] = synchronous_commit
    elif not synchronous_commit:
        return {}  # this code has no such setting
    runner = ExperimentRunner(store, _spec(10 * (n + WARM_UP)), "", snapshots=False, **kwargs)
    runner.open()
    actions = decide_and_commit(runner, runs=1).actions
    tmp = tempfile.TemporaryDirectory()
    trace = Path(tmp.name) / "trace"

    def result(actions: list[Any]) -> list[Any]:
        action = actions[-1]
        assert isinstance(action, RunSegment), action
        report = {"resource": action.stop, "loss": 0.5}
        result = SegmentFinished(action.trial_id, action.start, action.stop, (report,), report)
        seq = runner._started_seq[action.trial_id]

        def holds(a: RunSegment = action, seq: int = seq) -> bool:  # as the runner checks
            return runner.claims.holds(runner.owner.id, a.trial_id, a.start, a.stop, seq)

        return decide_and_commit(runner, [result], runs=1, valid=holds).actions

    for i in range(n + WARM_UP):
        if i == WARM_UP:
            cpu0, wall0 = time.process_time(), time.perf_counter()
        actions = result(actions)
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    pgconn = runner.writer()._conn.connection.driver_connection.pgconn
    with trace.open("w") as out:
        pgconn.trace(out.fileno())
        pgconn.set_trace_flags(pq.Trace.SUPPRESS_TIMESTAMPS | pq.Trace.REGRESS_MODE)
        for _ in range(TRACED):
            actions = result(actions)
        pgconn.untrace()
    statements, round_trips = _count(trace.read_text())
    tmp.cleanup()
    runner.close()
    store.close()
    return {
        "cpu_ms": 1000 * cpu / n,
        "wall_ms": 1000 * wall / n,
        "statements": statements / TRACED,
        "round_trips": round_trips / TRACED,
    }


def _count(trace: str) -> tuple[int, int]:
    """Statements and round trips in a libpq trace (see the module doc)."""
    statements = round_trips = 0
    last = ""
    for line in trace.splitlines():
        parts = line.split("\t")
        if len(parts) < 3:
            continue
        side, message = parts[0], parts[2].split()[0] if parts[2].split() else ""
        if side == "F" and message in ("Execute", "Query"):
            statements += 1
        if side == "B" and last == "F":
            round_trips += 1
        last = side
    return statements, round_trips


def floor_child(url: str, n: int, synchronous_commit: bool) -> dict[str, float]:
    """A bare psycopg ``INSERT`` + ``COMMIT`` per transaction: the server's floor."""
    import psycopg
    import sqlalchemy as sa

    parsed = sa.make_url(url)
    dsn = parsed.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(dsn) as conn:
        conn.execute("CREATE TABLE floor (id int PRIMARY KEY, payload jsonb)")
        conn.commit()
        for i in range(n + WARM_UP):
            if i == WARM_UP:
                cpu0, wall0 = time.process_time(), time.perf_counter()
            if not synchronous_commit:
                conn.execute("SET LOCAL synchronous_commit TO off")
            conn.execute("INSERT INTO floor VALUES (%s, %s)", (i, '{"loss": 0.5}'))
            conn.commit()
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    return {
        "cpu_ms": 1000 * cpu / n,
        "wall_ms": 1000 * wall / n,
        "statements": 1.0,
        "round_trips": 3.0 + (not synchronous_commit),
    }


def _fmt(values: list[float]) -> str:
    return f"{min(values):6.3f} {statistics.median(values):6.3f} {max(values):6.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=int, default=400, help="results per measurement")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--pg", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    parser.add_argument("--baseline", help="source tree of the code to compare with")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, url, sync = args.child.split("|")
        fn = floor_child if kind == "floor" else runner_child
        print(json.dumps(fn(url, args.results, sync == "on")))
        return

    codes: dict[str, str | None] = {"floor": None, "this": None}
    if args.baseline:
        codes = {"floor": None, "baseline": str(Path(args.baseline).resolve()), "this": None}
    figures: dict[tuple[str, str], list[dict[str, float]]] = {}
    order = [(code, sync) for code in codes for sync in ("on", "off")]
    for _ in range(args.repeats):
        for code, sync in order:
            env = dict(os.environ)
            env.pop("RUNGFLOW_BENCH_TREE", None)
            tree = codes[code]
            if tree:
                env["RUNGFLOW_BENCH_TREE"] = env["PYTHONPATH"] = tree
            kind = "floor" if code == "floor" else "runner"
            with scratch_database(args.pg, "rungflow_results") as url:
                out = subprocess.run(
                    [
                        sys.executable,
                        __file__,
                        "--results",
                        str(args.results),
                        "--child",
                        f"{kind}|{url}|{sync}",
                    ],
                    env=env,
                    check=True,
                    capture_output=True,
                    text=True,
                )
            row = json.loads(out.stdout.strip().splitlines()[-1])
            if row:
                figures.setdefault((code, sync), []).append(row)
        order.reverse()
    print(
        f"{args.results} results per measurement, {args.repeats} repeats; "
        "ms per result as min median max over repeats"
    )
    print(
        f"{'code':<9} {'sync':<4} {'wall ms':>20} {'CPU ms':>20} {'statements':>10} "
        f"{'round trips':>11}"
    )
    for (code, sync), rows in sorted(figures.items()):
        print(
            f"{code:<9} {sync:<4} {_fmt([r['wall_ms'] for r in rows]):>20} "
            f"{_fmt([r['cpu_ms'] for r in rows]):>20} "
            f"{statistics.median(r['statements'] for r in rows):10.1f} "
            f"{statistics.median(r['round_trips'] for r in rows):11.1f}"
        )
    print(f"load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
