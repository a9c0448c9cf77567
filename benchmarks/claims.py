"""Decision + claim latency on PostgreSQL vs SQLite, alone and with 4 contending runners.

One *claim* is what a cooperating runner does before it may start a segment:
ask the scheduler (random search, so the decision itself is cheap and the
number measures the log) and append the decision's events with optimistic
concurrency, catching up and deciding again after every lost race. Each
claimed segment's result is then appended, untimed, so the experiment moves on
as it would in a real run.

Usage::

    python benchmarks/claims.py [--claims 300] [--threads 4] [--pg URL]

PostgreSQL defaults to a fresh database on 127.0.0.1:5432 (tests/pg.py); it is
skipped with a note if the server is unreachable.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from flows.engine.leases import LeaseSettings
from flows.engine.runner import ExperimentRunner
from flows.spec import ExperimentSpec
from schedulers import Done, RunSegment, SegmentFinished, Wait, action_events
from storage import EventStore


def _spec(name: str, n: int) -> ExperimentSpec:
    return ExperimentSpec.model_validate(
        {"name": name, "trainable": "bench", "metric": "loss",
         "space": {"x": {"type": "float", "low": 0.0, "high": 1.0}},
         "scheduler": "random", "scheduler_args": {"max_t": 1},
         "budget": {"max_trials": n}, "max_concurrency": 1},
        context={"check_trainable": False},
    )


def _worker(store: EventStore, spec: ExperimentSpec, quota: int, out: list[float],
            conflicts: list[int], start: threading.Barrier) -> None:
    runner = ExperimentRunner(store, spec, "", lease_settings=LeaseSettings())
    runner.replay()
    runner.lease.acquire()
    lost = 0
    start.wait()
    try:
        claimed = 0
        while claimed < quota:
            t0 = time.perf_counter()
            while True:  # decide + claim, again after every lost race
                runner.catch_up()
                action = runner.scheduler.ask(1)[0]
                if isinstance(action, (Wait, Done)):
                    return
                if runner.commit(runner.claim_events(action_events(action))):
                    break
                lost += 1
            out.append(time.perf_counter() - t0)
            if isinstance(action, RunSegment):
                claimed += 1
                result = SegmentFinished(
                    action.trial_id, action.start, action.stop,
                    reports=({"resource": action.stop, "loss": 0.5},), metrics={"loss": 0.5},
                )
                while not runner.commit([result]):
                    pass
    finally:
        conflicts.append(lost)
        runner.close()


def measure(url: str, claims: int, threads: int) -> dict[str, float]:
    """Median/p95 latency (ms) and throughput of decide+claim with ``threads`` runners."""
    name = f"bench{threads}"
    store = EventStore(url)
    try:
        spec = _spec(name, claims * 2)
        store.create_experiment(name, spec.to_json())
        out: list[float] = []
        conflicts: list[int] = []
        barrier = threading.Barrier(threads)
        workers = [
            threading.Thread(target=_worker,
                             args=(store, spec, claims // threads, out, conflicts, barrier))
            for _ in range(threads)
        ]
        t0 = time.perf_counter()
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        wall = time.perf_counter() - t0
    finally:
        store.close()
    out.sort()
    return {
        "decisions": len(out),
        "median_ms": 1000 * statistics.median(out),
        "p95_ms": 1000 * out[int(0.95 * (len(out) - 1))],
        "lost_races": sum(conflicts),
        "per_s": len(out) / wall,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--claims", type=int, default=300)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--pg", default=None, help="PostgreSQL URL (default: fresh test DB)")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="rungflow-claims-"))
    urls = {"sqlite": f"sqlite:///{tmp / 'claims.db'}"}
    pg = args.pg
    if pg is None:
        try:
            from tests.pg import pg_available, pg_url

            pg = pg_url() if pg_available() else None
        except Exception:
            pg = None
    if pg:
        urls["postgresql"] = pg
    else:
        print("PostgreSQL unreachable: measuring SQLite only")

    rows: dict[tuple[str, int], dict[str, float]] = {}
    for backend, url in urls.items():
        for threads in (1, args.threads):
            rows[(backend, threads)] = measure(url, args.claims, threads)
    print(f"{'backend':<11} {'runners':>7} {'decisions':>9} {'median ms':>9} "
          f"{'p95 ms':>8} {'lost races':>10} {'decisions/s':>11}")
    for (backend, threads), r in rows.items():
        print(f"{backend:<11} {threads:>7} {r['decisions']:>9.0f} {r['median_ms']:>9.2f} "
              f"{r['p95_ms']:>8.2f} {r['lost_races']:>10.0f} {r['per_s']:>11.0f}")
    if "postgresql" in urls:
        for threads in (1, args.threads):
            ratio = rows[("postgresql", threads)]["median_ms"] / rows[("sqlite", threads)][
                "median_ms"]
            print(f"median latency PostgreSQL / SQLite with {threads} runner(s): {ratio:.2f}x")


if __name__ == "__main__":
    main()
