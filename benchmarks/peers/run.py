"""rungflow against Ray Tune, Optuna and Syne Tune, side by side, in one command.

Usage (in the benchmark venv made by ``benchmarks/peers/setup.sh``)::

    .bench-venv/bin/python benchmarks/peers/run.py [--quick] [--seeds 5]

Writes ``benchmarks/peers/out/report.md``, ``overhead.png`` and
``regret_vs_resource.png``. Each system runs in its own subprocess, one after
the other (never concurrently: they would share the two cores). A peer that
is not installed is skipped and the report says so. Full run: ~15-20 minutes
on 2 cores (19 on a shared, loaded machine); ``--quick``: ~5 minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.peers.report import write_report  # noqa: E402

#: System -> module whose import proves it is installed.
SYSTEMS = {"rungflow": "flows.tune", "optuna": "optuna", "ray": "ray.tune",
           "synetune": "syne_tune.optimizer.baselines"}


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    # Two workers fill the two cores; multi-threaded BLAS inside each would
    # thrash and make every system slower in a different way.
    for key in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[key] = "1"
    env.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    env.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    return env


def _missing(python: str, module: str) -> str | None:
    probe = subprocess.run([python, "-c", f"import {module}"], capture_output=True, text=True,
                           env=_env(), cwd=ROOT)
    if probe.returncode == 0:
        return None
    last = (probe.stderr.strip().splitlines() or ["import failed"])[-1]
    return f"`import {module}` failed ({last}); run benchmarks/peers/setup.sh"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="~5 minute smoke run")
    parser.add_argument("--seeds", type=int, default=None, help="seeds per method (default 5, "
                        "quick 2)")
    parser.add_argument("--systems", default=",".join(SYSTEMS))
    parser.add_argument("--python", default=sys.executable, help="interpreter with the peers")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "peers" / "out")
    parser.add_argument("--overhead-only", action="store_true",
                        help="only the orchestration-overhead figures, no search quality")
    parser.add_argument("--report-only", action="store_true",
                        help="rewrite report.md from the JSON of the last run, run nothing")
    args = parser.parse_args()
    if args.report_only:
        meta = json.loads((args.out / "meta.json").read_text())
        results = {s: json.loads((args.out / f"{s}.json").read_text()) for s in meta["ran"]}
        print(write_report(results, meta["skipped"], args.out, meta["quick"], meta["elapsed"],
                           tuple(meta["load"])))
        return
    seeds = args.seeds or (2 if args.quick else 5)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "logs").mkdir(exist_ok=True)

    load_start = os.getloadavg()[0]
    started = time.perf_counter()
    results, skipped = {}, {}
    for system in args.systems.split(","):
        reason = _missing(args.python, SYSTEMS[system])
        if reason:
            skipped[system] = reason
            print(f"skip {system}: {reason}", flush=True)
            continue
        out_json = args.out / f"{system}.json"
        out_json.unlink(missing_ok=True)
        cmd = [args.python, "-m", "benchmarks.peers.worker", system, "--out", str(out_json),
               "--seeds", str(seeds)] + (["--quick"] if args.quick else []) \
            + (["--overhead-only"] if args.overhead_only else [])
        print(f"== {system}: {' '.join(cmd[1:])}", flush=True)
        t0 = time.perf_counter()
        with open(args.out / "logs" / f"{system}.log", "w") as log:
            try:
                proc = subprocess.run(cmd, env=_env(), cwd=ROOT, stdout=log,
                                      stderr=subprocess.STDOUT, timeout=1500)
                code = proc.returncode
            except subprocess.TimeoutExpired:
                code = "timeout"
        print(f"   {system} done in {time.perf_counter() - t0:.0f}s (exit {code})", flush=True)
        if out_json.exists():
            results[system] = json.loads(out_json.read_text())
        else:
            skipped[system] = f"worker exited {code} without results (see logs/{system}.log)"
    elapsed, load = time.perf_counter() - started, (load_start, os.getloadavg()[0])
    (args.out / "meta.json").write_text(json.dumps({
        "ran": sorted(results), "skipped": skipped, "quick": args.quick, "elapsed": elapsed,
        "load": load,
    }))
    report = write_report(results, skipped, args.out, args.quick, elapsed, load)
    print(f"report: {report}")


if __name__ == "__main__":
    main()
