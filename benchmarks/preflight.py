"""Time to an error before the boot, and to re-print a finished experiment.

Each case runs the real ``rungflow`` command in a fresh interpreter and
measures its wall time and CPU time (user + system, of the process and its
children). With ``--baseline-src DIR`` (a checkout of an older rungflow, e.g.
``git archive e17bc4c | tar -x -C DIR``) every case also runs against that
code (``PYTHONPATH=DIR``), interleaved with the current one, so both see the
same machine load. Prints min/median/max per case and variant, the ratio of
medians, and the load average.

    python benchmarks/preflight.py --repeats 3 --baseline-src /tmp/base
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

SPEC: dict[str, Any] = {
    "name": "bench-pre",
    "trainable": "noop",
    "metric": "loss",
    "space": {"x": {"type": "float", "low": 0.0, "high": 1.0}},
    "scheduler": "hyperband",
    "scheduler_args": {"max_t": 4, "reduction_factor": 2},
    "budget": {"max_trials": 4},
    "max_concurrency": 1,
}


def finished_experiment(url: str, root: Path) -> None:
    """SPEC run to the end without Prefect, segments inline (as the CLI snapshots do)."""
    import examples.noop  # noqa: F401
    from flows.engine.runner import ExperimentRunner
    from flows.engine.segment import run_segment
    from flows.spec import load_spec
    from storage import EventStore

    class Inline:
        def __init__(self) -> None:
            self.jobs: list[Any] = []

        def submit(self, job: Any) -> int:
            self.jobs.append(job)
            return len(self.jobs) - 1

        def wait_first(self, handles: Any, timeout: float | None = None) -> Any:
            return handles[0]

        def result(self, handle: int) -> Any:
            return run_segment(self.jobs[handle])

    with EventStore(url) as store:
        ExperimentRunner(store, load_spec(SPEC), str(root / "ckpt")).run(Inline())


def timed(args: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, float, int]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, timeout=900)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, proc.returncode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--baseline-src", type=Path, default=None)
    opts = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="rungflow-bench-preflight-"))
    db = work / "finished.db"
    finished_experiment(f"sqlite:///{db}", work)
    (work / "good.yaml").write_text(yaml.safe_dump(SPEC))
    (work / "bad.yaml").write_text(yaml.safe_dump({**SPEC, "seed": -1}))
    (work / "corrupt.db").write_bytes(b"not a database " * 100)
    cases = {
        "validation error (seed: -1)": ["run", "bad.yaml"],
        "store error (corrupt SQLite)": [
            "run", "good.yaml", "--db", f"sqlite:///{work / 'corrupt.db'}"
        ],
        "re-print finished experiment": ["run", "good.yaml", "--db", f"sqlite:///{db}"],
    }
    variants = {"current": None}
    if opts.baseline_src is not None:
        variants = {"baseline": str(opts.baseline_src.resolve()), "current": None}
    base_env = {
        k: v for k, v in os.environ.items() if not k.startswith(("RUNGFLOW_", "PREFECT_API"))
    }
    base_env.update(
        RUNGFLOW_HOME=str(work / "home"),
        RUNGFLOW_CHECKPOINTS=str(work / "ckpt"),
        PREFECT_HOME=str(work / "prefect-home"),
    )
    results: dict[tuple[str, str], list[tuple[float, float, int]]] = {}
    print(f"load average before: {os.getloadavg()}")
    for rep in range(opts.repeats):
        for case, args in cases.items():
            for variant, src in variants.items():
                env = dict(base_env)
                if src is not None:
                    env["PYTHONPATH"] = src
                cmd = [sys.executable, "-m", "flows.cli", *args]
                results.setdefault((case, variant), []).append(timed(cmd, work, env))
        print(f"repeat {rep + 1}/{opts.repeats} done, load average {os.getloadavg()}", flush=True)
    print(f"\n{'case':32} {'variant':9} {'wall min/med/max s':>22} {'cpu min/med/max s':>22}  exit")
    for case in cases:
        medians = {}
        for variant in variants:
            rows = results[(case, variant)]
            walls, cpus = [r[0] for r in rows], [r[1] for r in rows]
            medians[variant] = statistics.median(walls)
            codes = sorted({r[2] for r in rows})
            print(
                f"{case:32} {variant:9} "
                f"{min(walls):6.2f}/{statistics.median(walls):6.2f}/{max(walls):6.2f}  "
                f"{min(cpus):6.2f}/{statistics.median(cpus):6.2f}/{max(cpus):6.2f}  {codes}"
            )
        if "baseline" in medians:
            print(f"{'':32} ratio baseline/current wall median: "
                  f"{medians['baseline'] / medians['current']:.1f}x")
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
