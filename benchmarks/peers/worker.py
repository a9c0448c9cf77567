"""Run one system's share of the peer benchmark in this process; write JSON.

``python -m benchmarks.peers.worker SYSTEM --out FILE [--quick] [--seeds N]``

Each system runs in its own process (started by ``run.py``) so that Ray's
workers, Prefect's ephemeral API and global RNG seeding never meet.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import platform
import sys
import time
import traceback
from importlib import metadata
from typing import Any

from benchmarks._cpu import load_average
from benchmarks.peers.cost import summarise
from benchmarks.peers.problems import PROBLEMS

__all__ = ["ADAPTERS", "OVERHEAD_SCENARIOS", "main"]

ADAPTERS = {
    "rungflow": "benchmarks.peers.rungflow_adapter",
    "ray": "benchmarks.peers.ray_adapter",
    "optuna": "benchmarks.peers.optuna_adapter",
    "synetune": "benchmarks.peers.synetune_adapter",
}

#: Overhead scenarios: name -> (trials, reports per trial) for full / quick mode.
OVERHEAD_SCENARIOS = {
    "1 result per trial": ((200, 1), (40, 1)),
    "9 results per trial": ((60, 9), (10, 9)),
}

_DISTRIBUTIONS = ("rungflow", "prefect", "optuna", "ray", "syne-tune", "numpy", "scikit-learn")


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for dist in _DISTRIBUTIONS:
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[dist] = metadata.version(dist)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("system", choices=sorted(ADAPTERS))
    parser.add_argument("--out", required=True)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--problems", default=",".join(PROBLEMS))
    parser.add_argument("--no-overhead", action="store_true")
    parser.add_argument("--overhead-only", action="store_true")
    args = parser.parse_args()

    adapter = importlib.import_module(ADAPTERS[args.system])
    out: dict[str, Any] = {"system": args.system, "versions": versions(), "quality": [],
                           "overhead": {}, "errors": []}

    def save() -> None:
        with open(args.out, "w") as fh:
            json.dump(out, fh)

    if hasattr(adapter, "overhead") and not args.no_overhead:
        for scenario, (full, quick) in OVERHEAD_SCENARIOS.items():
            n_trials, n_reports = quick if args.quick else full
            try:
                # Every repeat is kept (min / median / max in the report); the
                # adapter rotates its variants' order by the repeat's index.
                runs = [adapter.overhead(n_trials, n_reports, i)
                        for i in range(1 if args.quick else 3)]
                costs = {label: [run[label] for run in runs] for label in runs[0]}
                results = n_trials * n_reports
                out["overhead"][scenario] = {
                    "trials": n_trials, "results": results, "runs": costs,
                }
                for label, label_runs in costs.items():
                    figures = summarise(label_runs, results)
                    print(f"[{args.system}] overhead {scenario}, {label}: ms per result, "
                          f"wall {figures['wall']}, CPU {figures['cpu']} "
                          f"(load {load_average()})", flush=True)
            except Exception:
                out["errors"].append(f"overhead {scenario}: {traceback.format_exc()}")
            save()

    for pname in [] if args.overhead_only else args.problems.split(","):
        problem = PROBLEMS[pname]
        budget = problem.quick_budget if args.quick else problem.budget
        for method in adapter.METHODS:
            for seed in range(args.seeds):
                t0 = time.perf_counter()
                try:
                    result = adapter.quality(problem, method, seed, budget)
                except Exception:
                    out["errors"].append(f"{pname} {method} seed {seed}: {traceback.format_exc()}")
                    save()
                    continue
                out["quality"].append({"problem": pname, "method": method, "seed": seed,
                                       "budget": budget, "mode": "simulated"
                                       if args.system in ("rungflow", "synetune") else "real",
                                       **result})
                print(f"[{args.system}] {pname} {method} seed {seed}: "
                      f"{len(result['rows'])} results, {time.perf_counter() - t0:.1f}s",
                      flush=True)
                save()

    if args.system == "rungflow" and not args.overhead_only:
        # Sanity: the same ASHA experiment through the real Prefect flow.
        problem = PROBLEMS["synthetic"]
        budget = problem.quick_budget if args.quick else problem.budget
        try:
            result = adapter.real_flow_run(problem, "asha", 0, budget)
            out["quality"].append({"problem": "synthetic", "method": "asha", "seed": 0,
                                   "budget": budget, "mode": "prefect flow", **result})
            print(f"[rungflow] real flow asha seed 0: {result['seconds']:.1f}s", flush=True)
        except Exception:
            out["errors"].append(f"real flow: {traceback.format_exc()}")
    save()
    sys.exit(0)


if __name__ == "__main__":
    main()
