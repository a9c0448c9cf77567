"""DyHPO decision latency against history size, on one core.

Builds scheduler states by folding synthetic events (``tell`` only), with 200
paused trials (fewer when there are fewer observations than that) and the
observations spread evenly over them on linear rungs, then times ``ask(1)``:

* ``cold``: first model decision, hyperparameters fitted from scratch;
* ``refit``: a warm-started refit (happens every ``refit_every`` decisions);
* ``cached``: hyperparameters taken from the last recorded fit (the common case).

RandomScheduler's ``ask(1)`` on the same history is timed in the same run as a
floor. Run: ``python benchmarks/dyhpo_latency.py [--repeats 5]``.
"""

from __future__ import annotations

import os

# One core, as the requirement states; must be set before numpy loads BLAS.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import math  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

from schedulers import (  # noqa: E402
    RandomScheduler,
    SearchSpace,
    SegmentFinished,
    SegmentStarted,
    TrialCreated,
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
SIZES = (100, 500, 1000, 2000)
PAUSED = 200


def curve(config: dict[str, Any], r: float) -> float:
    q = (math.log10(config["lr"]) + 2.5) ** 2 + abs(config["dropout"] - 0.2)
    return q + 2.0 / (1.0 + 0.2 * r * (1 + config["layers"] / 6))


def history(n_obs: int, seed: int = 0) -> list[Any]:
    """Events of ``min(PAUSED, n_obs)`` paused trials sharing ``n_obs`` observations."""
    rng = np.random.default_rng(seed)
    n_trials = min(PAUSED, n_obs)
    events: list[Any] = []
    for k in range(n_trials):
        tid = f"t{k:04d}"
        config = SPACE.sample(rng)
        events.append(TrialCreated(tid, config))
        steps = n_obs // n_trials + (1 if k < n_obs % n_trials else 0)
        for r in range(steps):
            events.append(SegmentStarted(tid, r, r + 1, config))
            loss = curve(config, r + 1) + 0.01 * float(rng.normal())
            events.append(
                SegmentFinished(tid, r, r + 1, ({"resource": r + 1, "loss": loss},), {"loss": loss})
            )
    return events


def build(factory: Callable[[], Scheduler], events: list[Any]) -> Scheduler:
    s = factory()
    for e in events:
        s.tell(e)
    return s


def timed(s: Scheduler, repeats: int) -> tuple[float, float]:
    """Median CPU and wall time of ``ask(1)`` in ms (ask is pure: repeating is exact).

    CPU time of this process is what one core spends; wall time also counts
    waiting for the core when the machine is shared.
    """
    cpu, wall = [], []
    for _ in range(repeats):
        c0, w0 = time.process_time(), time.perf_counter()
        s.ask(1)
        cpu.append(time.process_time() - c0)
        wall.append(time.perf_counter() - w0)
    return 1e3 * statistics.median(cpu), 1e3 * statistics.median(wall)


def _fmt(t: tuple[float, float]) -> str:
    return f"{t[0]:.1f} ({t[1]:.1f})"


def dyhpo(refit_every: int = 5) -> DyHPOScheduler:
    return DyHPOScheduler(
        space=SPACE,
        metric="loss",
        max_t=MAX_T,
        rung_spacing="linear",
        refit_every=refit_every,
        seed=0,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print(f"one core; {PAUSED} paused trials max; num_candidates=128, max_gp_points=256")
    print("CPU ms per ask(1) (wall ms in parentheses); medians of --repeats calls")
    print(
        f"{'obs':>6} {'paused':>6} {'n_gp':>5} {'cold':>15} {'refit':>15} "
        f"{'cached':>15} {'random':>8} {'cached/random':>14}"
    )
    for n_obs in SIZES:
        events = history(n_obs)
        cold = build(dyhpo, events)
        t_cold = timed(cold, args.repeats)
        # Fold the first decision (it records the fit) so the next one reuses it.
        warm = build(dyhpo, events)
        action = warm.ask(1)[0]
        for e in action_events(action):
            warm.tell(e)
        n_gp = dict(getattr(action, "info", {})).get("n_gp", 0)
        t_cached = timed(warm, args.repeats)
        refit = build(lambda: dyhpo(refit_every=1), events)
        for e in action_events(refit.ask(1)[0]):
            refit.tell(e)
        t_refit = timed(refit, args.repeats)
        rand = build(lambda: RandomScheduler(space=SPACE, metric="loss", max_t=MAX_T), events)
        t_rand = timed(rand, max(args.repeats, 50))
        paused = sum(1 for t in cold.trials.values() if t.status == "paused")
        print(
            f"{n_obs:>6} {paused:>6} {n_gp:>5} {_fmt(t_cold):>15} {_fmt(t_refit):>15} "
            f"{_fmt(t_cached):>15} {t_rand[0]:>8.3f} {t_cached[0] / t_rand[0]:>13.0f}x"
        )


if __name__ == "__main__":
    main()
