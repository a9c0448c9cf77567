"""The Jaderberg et al. toy: Q over time for PBT against the two fixed baselines.

Runs :mod:`examples.pbt_toy` in the simulator (two workers, jittered segment
durations): asynchronous PBT, synchronous PBT, and the two members alone with
exploit/explore off (``h = (1, 0)`` and ``h = (0, 1)``). Prints, per generation
(every ``perturbation_interval`` = 2 steps), the best Q among members that
reached that boundary, then how many of ``--seeds`` seeds reach Q >= 1.19.

Run: ``python benchmarks/pbt_toy.py [--seed 0] [--every 5] [--seeds 20]``.
"""

from __future__ import annotations

import argparse

from examples.pbt_toy import make_pbt, objective
from schedulers import SegmentFinished
from schedulers.simulate import SimulationResult, simulate


def q_by_boundary(result: SimulationResult) -> dict[str, dict[float, float]]:
    """``trial -> boundary -> Q`` at the end of each finished segment."""
    out: dict[str, dict[float, float]] = {}
    for e in result.events:
        if isinstance(e, SegmentFinished):
            out.setdefault(e.trial_id, {})[float(e.stop)] = float(e.metrics["Q"])
    return out


def best_at(curves: dict[str, dict[float, float]], b: float) -> float | None:
    values = [c[b] for c in curves.values() if b in c]
    return max(values) if values else None


def fmt(x: float | None) -> str:
    return f"{x:>9.4f}" if x is not None else f"{'-':>9}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--every", type=int, default=5, help="print every N generations")
    parser.add_argument("--seeds", type=int, default=20)
    args = parser.parse_args()
    runs = {
        "pbt async": q_by_boundary(simulate(make_pbt(args.seed), objective, max_concurrency=2,
                                            seed=args.seed)),
        "pbt sync": q_by_boundary(simulate(make_pbt(args.seed, synch=True), objective,
                                           max_concurrency=2, seed=args.seed)),
    }
    baseline = q_by_boundary(simulate(make_pbt(args.seed, baseline=True), objective,
                                      max_concurrency=2, seed=args.seed))
    runs["h=(1,0) alone"] = {"t0000": baseline["t0000"]}
    runs["h=(0,1) alone"] = {"t0001": baseline["t0001"]}
    interval, generations = 2, 50
    print(f"seed {args.seed}: best Q per generation (step = 2 x generation)")
    print(f"{'gen':>4} {'step':>5} " + " ".join(f"{name:>14}" for name in runs))
    for g in range(1, generations + 1):
        if g % args.every and g != 1:
            continue
        b = float(g * interval)
        print(f"{g:>4} {int(b):>5} " + " ".join(f"{fmt(best_at(c, b)):>14}" for c in runs.values()))
    print()
    for synch in (False, True):
        finals = []
        for s in range(args.seeds):
            curves = q_by_boundary(simulate(make_pbt(s, synch=synch), objective,
                                            max_concurrency=2, seed=s))
            finals.append(max(c[max(c)] for c in curves.values()))
        ok = sum(f >= 1.19 for f in finals)
        print(f"pbt {'sync ' if synch else 'async'}: {ok}/{args.seeds} seeds reach Q >= 1.19; "
              f"worst final Q {min(finals):.4f}")


if __name__ == "__main__":
    main()
