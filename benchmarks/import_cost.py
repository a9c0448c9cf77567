"""What ``import storage`` and ``import schedulers.events`` cost, and what they pull in.

Each measurement is a fresh interpreter (imports are cached per process), so
the figure is the cold import time a CLI command or a worker pays. With
``--baseline DIR`` (a checkout of another commit, e.g. made with
``git archive <commit> | tar -x -C DIR``) the same modules are measured from
that tree in the same run, variants interleaved, and the ratio is printed.

    python benchmarks/import_cost.py --baseline /tmp/rungflow-main --repeats 7
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

HEAVY = ("numpy", "scipy", "optuna", "sqlalchemy", "prefect")
MODULES = ("storage", "schedulers.events", "schedulers.actions", "flows.trainable")
HERE = Path(__file__).resolve().parents[1]

PROBE = """
import json, sys, time
t = time.perf_counter()
import {module}
dt = time.perf_counter() - t
print(json.dumps({{"s": dt, "heavy": [m for m in {heavy!r} if m in sys.modules]}}))
"""


def measure(root: Path, module: str) -> tuple[float, list[str]]:
    env = dict(os.environ, PYTHONPATH=str(root))
    out = subprocess.run(
        [sys.executable, "-c", PROBE.format(module=module, heavy=HEAVY)],
        capture_output=True, text=True, check=True, env=env, cwd=root,
    )
    data = json.loads(out.stdout.strip().splitlines()[-1])
    return float(data["s"]), list(data["heavy"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--baseline", type=Path, help="source tree to compare against")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    variants = {"this tree": HERE}
    if args.baseline:
        variants = {"baseline": args.baseline.resolve(), **variants}
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    for module in MODULES:
        times: dict[str, list[float]] = {name: [] for name in variants}
        heavy: dict[str, list[str]] = {}
        for _ in range(args.repeats):
            for name, root in variants.items():  # interleaved
                seconds, loaded = measure(root, module)
                times[name].append(seconds)
                heavy[name] = loaded
        print(f"\nimport {module}")
        for name, values in times.items():
            ms = sorted(v * 1000 for v in values)
            loads = ", ".join(heavy[name]) or "none of " + "/".join(HEAVY)
            print(f"  {name:10s} min {ms[0]:7.1f} ms  median {statistics.median(ms):7.1f} ms  "
                  f"max {ms[-1]:7.1f} ms  loads: {loads}")
        if "baseline" in times:
            ratio = statistics.median(times["this tree"]) / statistics.median(times["baseline"])
            print(f"  ratio this/baseline (median): {ratio:.2f}")


if __name__ == "__main__":
    main()
