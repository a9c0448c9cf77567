"""DyHPO decision latency in a live ask/tell loop, up to 2,000 observations.

A live loop, not frozen states: the scheduler decides, the decision's events
are told back, segments finish (``--workers`` in flight, completion order
drawn from a seeded generator), and every ``ask(1)`` is timed as it happens,
refits included. Latency per decision is reported as p50 / p95 / max CPU ms
(one core) in buckets of history size (observations = finished (trial, rung)
results), plus the total CPU of the loop. RandomScheduler's ``ask(1)`` over the
same loop is the floor, measured in the same run.

Run: ``python benchmarks/dyhpo_latency.py [--max-obs 2000] [--workers 4]``.
By default it times Syne Tune's rung defaults and rungflow's defaults one
after the other in the same run (``--variants NAME=JSON ...`` for others;
``--scheduler-args '{"surrogate": "dkgp"}'`` times one variant).
"""

from __future__ import annotations

import os

# One core, as the requirement states; must be set before numpy loads BLAS.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

from schedulers import (  # noqa: E402
    Budget,
    Done,
    RandomScheduler,
    RunSegment,
    SearchSpace,
    SegmentFinished,
    Wait,
    action_events,
)
from schedulers.base import Scheduler  # noqa: E402
from schedulers.dyhpo import DyHPOScheduler  # noqa: E402

SPACE = SearchSpace.parse(
    {
        "lr": {"type": "float", "low": 1e-5, "high": 1.0, "log": True},
        "width": {"type": "int", "low": 16, "high": 512, "log": True},
        "dropout": {"type": "float", "low": 0.0, "high": 0.5},
        "act": {"type": "categorical", "choices": ["relu", "tanh", "gelu"]},
        "layers": {"type": "int", "low": 1, "high": 6},
    }
)
MAX_T = 50
BUCKETS = (250, 500, 1000, 2000)


def curve(config: dict[str, Any], r: float) -> float:
    q = (math.log10(config["lr"]) + 2.5) ** 2 + abs(config["dropout"] - 0.2)
    return q + 2.0 / (1.0 + 0.2 * r * (1 + config["layers"] / 6))


def n_observations(s: Scheduler) -> int:
    return sum(len(t.results) for t in s.trials.values())


def live_loop(
    factory: Callable[[], Scheduler], max_obs: int, workers: int, seed: int = 0
) -> tuple[list[tuple[int, float]], float]:
    """Run ask/tell until ``max_obs`` observations; ``[(obs, cpu_ms)]`` per decision."""
    s = factory()
    rng = np.random.default_rng(seed)
    inflight: list[RunSegment] = []
    times: list[tuple[int, float]] = []
    total0 = time.process_time()
    while n_observations(s) < max_obs:
        while len(inflight) < workers:
            obs = n_observations(s)
            c0 = time.process_time()
            action = s.ask(1)[0]
            times.append((obs, 1e3 * (time.process_time() - c0)))
            if isinstance(action, (Wait, Done)):
                break
            for e in action_events(action):
                s.tell(e)
            if isinstance(action, RunSegment):
                inflight.append(action)
        if not inflight:
            break
        a = inflight.pop(int(rng.integers(len(inflight))))
        reports = []
        r = math.floor(a.start) + 1
        while r <= a.stop:
            loss = curve(dict(a.config), r) + 0.01 * float(rng.normal())
            reports.append({"resource": float(r), "loss": loss})
            r += 1
        s.tell(SegmentFinished(a.trial_id, a.start, a.stop, tuple(reports), reports[-1]))
    return times, time.process_time() - total0


def summary(times: list[tuple[int, float]], lo: int, hi: int) -> str:
    sel = [t for obs, t in times if lo <= obs < hi]
    if not sel:
        return f"{'-':>30}"
    p50, p95 = np.percentile(sel, [50, 95])
    return f"{len(sel):>6} {p50:>7.1f} {p95:>7.1f} {max(sel):>8.1f}"


#: Variants timed by default, in one run: Syne Tune's rung defaults (linear
#: rungs 1, 3, 5, ..., probability_sh 0.25) and rungflow's defaults.
DEFAULT_VARIANTS = (
    'syne-tune={"rung_increment": 2, "probability_sh": 0.25}',
    "defaults={}",
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-obs", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--scheduler-args", default=None,
                        help="JSON kwargs for DyHPO (one variant; overrides --variants)")
    parser.add_argument("--variants", nargs="+", default=list(DEFAULT_VARIANTS),
                        metavar="NAME=JSON", help="DyHPO variants timed one after the other")
    args = parser.parse_args()
    variants = [v.partition("=")[::2] for v in args.variants]
    if args.scheduler_args is not None:
        variants = [("dyhpo", args.scheduler_args)]
    budget = Budget(max_resource=1e9)

    def random() -> Scheduler:
        return RandomScheduler(space=SPACE, metric="loss", max_t=MAX_T, seed=0, budget=budget)

    print(
        f"live ask/tell loop, one core, {args.workers} workers, max_t={MAX_T}, "
        f"up to {args.max_obs} observations; load average {os.getloadavg()[0]:.2f}"
    )
    _, total_random = live_loop(random, min(args.max_obs, 400), args.workers)
    for name, raw in variants:
        extra = json.loads(raw)

        def dyhpo(extra: dict[str, Any] = extra) -> Scheduler:
            return DyHPOScheduler(
                space=SPACE, metric="loss", max_t=MAX_T, seed=0, budget=budget, **extra
            )

        times, total = live_loop(dyhpo, args.max_obs, args.workers)
        print(f"\nDyHPO {name}: {extra or 'defaults'}; rungs {dyhpo().rung_levels}")
        print(f"{'observations':<14}{'asks':>6} {'p50 ms':>7} {'p95 ms':>7} {'max ms':>8}")
        lo = 0
        for hi in BUCKETS:
            if hi > args.max_obs:
                break
            print(f"[{lo}, {hi}){'':<{13 - len(f'[{lo}, {hi})')}}{summary(times, lo, hi)}")
            lo = hi
        print(f"{'all':<14}{summary(times, 0, args.max_obs + 1)}")
        print(f"total CPU of the DyHPO loop: {total:.1f} s over {len(times)} asks")
    print(f"\nrandom's loop to 400 obs: {total_random:.2f} s; "
          f"load average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
