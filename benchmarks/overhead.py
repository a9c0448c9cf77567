"""Per-segment orchestration overhead of rungflow against a bare Prefect task loop.

Both loops run in this process against the same Prefect API (ephemeral unless
PREFECT_API_URL is set), with the same bounded thread pool and the same
"keep N in flight, take whichever finishes first" pattern. The no-op trainable
makes the difference rungflow's own cost: the SQL event log (write-ahead of every
decision and result), scheduler decisions and checkpoint-free bookkeeping.

Usage:
    python benchmarks/overhead.py [--segments 200] [--concurrency 4] [--db URL]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.futures import as_completed
from prefect.task_runners import ThreadPoolTaskRunner


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


def timed(fn: Any, *args: Any) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - t0, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--segments", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--db", default=None, help="SQLAlchemy URL (default: temp SQLite)")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="rungflow-overhead-"))
    os.environ.setdefault("RUNGFLOW_HOME", str(tmp))
    if args.db:
        os.environ["RUNGFLOW_DATABASE_URL"] = args.db

    # Warm-up outside the measurement: start the ephemeral API and import the
    # flow module (about 1 s of one-time import cost).
    import examples.noop  # noqa: F401  (registers "noop")
    import flows.tune  # noqa: F401

    bare_loop(5, 2)
    n, c = args.segments, args.concurrency
    t_bare, _ = timed(bare_loop, n, c)
    t_rung, summary = timed(rungflow_loop, n, c, f"overhead-{int(time.time())}")
    assert summary["segments_run"] == n, summary
    per_bare = 1000 * t_bare / n
    per_rung = 1000 * t_rung / n
    print(f"segments={n} concurrency={c} db={'custom' if args.db else 'sqlite'}")
    print(f"bare prefect task loop : {t_bare:7.2f} s  {per_bare:7.2f} ms/segment")
    print(f"rungflow tune (noop)   : {t_rung:7.2f} s  {per_rung:7.2f} ms/segment")
    print(f"overhead per segment   : {per_rung - per_bare:7.2f} ms  ratio {t_rung / t_bare:.2f}x")


if __name__ == "__main__":
    main()
