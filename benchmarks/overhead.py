"""Per-segment orchestration overhead of rungflow against a bare Prefect task loop.

Both loops run in this process against the same Prefect API (ephemeral unless
PREFECT_API_URL is set), with the same bounded thread pool and the same
"keep N in flight, take whichever finishes first" pattern. The no-op trainable
makes the difference rungflow's own cost: the SQL event log (write-ahead of every
decision and result), scheduler decisions and checkpoint-free bookkeeping.

With ``--artifacts both`` (the default) the rungflow loop runs twice, with
Prefect artifacts off and on (progress updates throttled to one per 2 s, plus
leaderboard and summary at the end), so their cost per segment is printed too.

Usage:
    python benchmarks/overhead.py [--segments 200] [--concurrency 4] [--db URL]
        [--artifacts on|off|both] [--repeat 1]
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


def timed(fn: Any, *args: Any) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - t0, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--segments", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--db", default=None, help="SQLAlchemy URL (default: temp SQLite)")
    parser.add_argument(
        "--artifacts", choices=["on", "off", "both"], default="both",
        help="Run the rungflow loop with Prefect artifacts on, off or both (default).",
    )
    parser.add_argument("--repeat", type=int, default=1, help="Repeat and keep the best.")
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
    _instrument()
    n, c = args.segments, args.concurrency
    modes = ["off", "on"] if args.artifacts == "both" else [args.artifacts]
    times: dict[str, list[float]] = {"bare": []} | {m: [] for m in modes}
    inside: list[tuple[float, float]] = []  # (all artifact code, the per-result hook)
    for r in range(args.repeat):
        times["bare"].append(timed(bare_loop, n, c)[0])
        for mode in modes:
            # Settings are read at flow start, so the env switches artifacts per run.
            os.environ["RUNGFLOW_ARTIFACTS"] = mode
            ARTIFACT_SECONDS.clear()
            t, summary = timed(rungflow_loop, n, c, f"overhead-{mode}-{r}-{int(time.time())}")
            assert summary["segments_run"] == n, summary
            times[mode].append(t)
            if mode == "on":
                hook = ARTIFACT_SECONDS.get("__call__", 0.0)
                inside.append((sum(ARTIFACT_SECONDS.values()), hook))
    best = {k: min(v) for k, v in times.items()}  # least disturbed of the repeats
    per = {k: 1000 * v / n for k, v in best.items()}
    db = "custom" if args.db else "sqlite"
    print(f"segments={n} concurrency={c} db={db} repeat={args.repeat} (best of repeats)")
    print(f"bare prefect task loop       : {best['bare']:7.2f} s  {per['bare']:7.2f} ms/segment")
    for mode in modes:
        print(
            f"rungflow tune, artifacts {mode:3s} : {best[mode]:7.2f} s  {per[mode]:7.2f} ms/segment"
            f"  overhead {per[mode] - per['bare']:6.2f} ms  ratio {best[mode] / best['bare']:.2f}x"
        )
    if len(modes) == 2:
        print(f"artifacts on - off           : {per['on'] - per['off']:7.2f} ms/segment (noisy)")
    if inside:
        total, hook = min(inside)
        print(
            f"time inside artifact code   : {total:7.2f} s  {1000 * total / n:7.2f} ms/segment"
            f"  (per-result hook {1000 * hook:.0f} ms in all, {1e6 * hook / n:.0f} us/segment;"
            f" the rest is the start and the final publish, once per flow run)"
        )

if __name__ == "__main__":
    main()
