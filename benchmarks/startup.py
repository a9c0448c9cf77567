"""How long ``rungflow run`` takes to start, against a bare Prefect flow's first run.

Variants (each a fresh subprocess, no ``PREFECT_API_URL``: every run starts
its own Prefect API, as a user's first command does):

* ``bare-prefect``: a one-task Prefect flow; "first" is when its result prints.
* ``first-result``: ``rungflow run`` of a one-segment spec (no-op trainable);
  "first" is when the first ``SegmentFinished`` is in the event log.
* ``validation-error``: ``rungflow run`` of a spec with an out-of-range field.
* ``reprint-finished``: ``rungflow run`` of an experiment already finished.

Wall is spawn to exit (and spawn to first result); CPU is user+sys of the
whole process tree, Prefect servers included: this process makes itself a
child subreaper, so even a server orphaned by its parent is reparented here,
reaped, and counted in ``RUSAGE_CHILDREN`` (processes still alive when a run
exits are counted as ``left``, killed, then reaped). Variants are interleaved
(round-robin per repeat); min/median/max over repeats; load average printed.
With several ``--python`` (e.g. a baseline checkout's venv), each rungflow
variant runs under each, interleaved too: figures before/after in one run.

Usage:
    python benchmarks/startup.py [--repeat 3] [--python NAME=PATH ...]
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import resource
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BARE = """
from prefect import flow, task
@task(persist_result=False)
def one() -> int:
    return 1
@flow(persist_result=False)
def first() -> int:
    return one()
print("result", first(), flush=True)
"""

SPEC = {
    "name": "startup",
    "trainable": "noop",
    "metric": "loss",
    "space": {"x": {"type": "float", "low": 0.0, "high": 1.0}},
    "scheduler": "random",
    "scheduler_args": {"max_t": 1},
    "budget": {"max_trials": 1},
    "max_concurrency": 1,
}


def subreaper() -> None:
    """Become the reaper of orphaned descendants (Linux), so their CPU is counted."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(36, 1)  # PR_SET_CHILD_SUBREAPER


def children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def reap_leftovers() -> int:
    """Kill and reap every remaining child (orphans reparented here); return how many."""
    left = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == os.getpid() and fields[0] != "Z":
            left += 1
            with contextlib.suppress(OSError):
                os.kill(int(entry), signal.SIGKILL)
    while True:
        try:
            pid, _ = os.waitpid(-1, 0 if left else os.WNOHANG)
        except ChildProcessError:
            break
        if pid == 0:
            break
    return left


def segment_finished(db: Path) -> bool:
    if not db.exists():
        return False
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as conn:
            row = conn.execute("select 1 from events where kind = 'SegmentFinished' limit 1")
            return row.fetchone() is not None
    except sqlite3.Error:
        return False


def measure(cmd: list[str], env: dict[str, str], db: Path | None) -> dict[str, Any]:
    """Run ``cmd``; wall to exit, wall to the first result, CPU of the tree, leftovers."""
    cpu0 = children_cpu()
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    first: float | None = None
    if db is not None:  # poll the event log for the first result
        while proc.poll() is None:
            if segment_finished(db):
                first = time.perf_counter() - t0
                break
            time.sleep(0.02)
        out, err = proc.communicate()
    else:  # the bare flow prints its result
        assert proc.stdout is not None
        out = ""
        for line in proc.stdout:
            out += line
            if line.startswith("result") and first is None:
                first = time.perf_counter() - t0
        err = proc.stderr.read() if proc.stderr else ""
        proc.wait()
    wall = time.perf_counter() - t0
    left = reap_leftovers()
    return {"wall": wall, "first": first, "cpu": children_cpu() - cpu0, "left": left,
            "rc": proc.returncode, "err": err[-400:]}


def fmt(values: list[float]) -> str:
    if not values:
        return "-"
    return f"{min(values):6.1f} {statistics.median(values):6.1f} {max(values):6.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--python", action="append", default=[],
                        help="NAME=PATH of a python whose rungflow to measure (repeatable).")
    args = parser.parse_args()
    pythons = dict(p.split("=", 1) for p in args.python) or {"this": sys.executable}
    subreaper()
    work = Path(tempfile.mkdtemp(prefix="rungflow-startup-"))
    env = dict(os.environ)
    env.pop("PREFECT_API_URL", None)
    env.update(PREFECT_HOME=str(work / "prefect"), PREFECT_SERVER_ANALYTICS_ENABLED="false",
               PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="300",
               PREFECT_LOGGING_LEVEL="WARNING")
    env.pop("RUNGFLOW_DATABASE_URL", None)
    bad = work / "bad.json"
    bad.write_text(json.dumps({**SPEC, "max_concurrency": 0}))
    first_python = next(iter(pythons.values()))

    def variants(i: int) -> list[tuple[str, list[str], dict[str, str], Path | None]]:
        out: list[tuple[str, list[str], dict[str, str], Path | None]] = [
            ("bare-prefect", [first_python, "-c", BARE], env, None)
        ]
        for name, py in pythons.items():
            home = work / f"{name}-{i}"
            spec = home / "spec.json"
            spec.parent.mkdir(parents=True, exist_ok=True)
            spec.write_text(json.dumps(SPEC))
            e = {**env, "RUNGFLOW_HOME": str(home)}
            run = [py, "-m", "flows.cli", "run"]
            out += [
                (f"{name}:first-result", [*run, str(spec)], e, home / "rungflow.db"),
                (f"{name}:validation-error", [*run, str(bad)], e, None),
                (f"{name}:reprint-finished", [*run, str(spec)], e, None),
            ]
        return out

    # Warm-up (not counted): migrates the Prefect database, fills OS caches.
    for _, cmd, e, db in variants(-1):
        measure(cmd, e, db)
    results: dict[str, list[dict[str, Any]]] = {}
    for i in range(args.repeat):
        for label, cmd, e, db in variants(i):
            results.setdefault(label, []).append(measure(cmd, e, db))
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}  "
          f"cpus: {os.cpu_count()}  repeats: {args.repeat}")
    print(f"{'variant':34} {'wall s (min med max)':>21} {'first s (min med max)':>21} "
          f"{'cpu s (min med max)':>21} {'left':>4} {'rc':>4}")
    for label, rows in results.items():
        firsts = [r["first"] for r in rows if r["first"] is not None]
        print(f"{label:34} {fmt([r['wall'] for r in rows]):>21} {fmt(firsts):>21} "
              f"{fmt([r['cpu'] for r in rows]):>21} {max(r['left'] for r in rows):4d} "
              f"{rows[-1]['rc']:4d}")
    bare = statistics.median(r["first"] or r["wall"] for r in results["bare-prefect"])
    print(f"\nratios to bare-prefect's median first result ({bare:.1f} s):")
    for label, rows in results.items():
        if label == "bare-prefect":
            continue
        key = "first" if label.endswith("first-result") else "wall"
        med = statistics.median(r[key] or r["wall"] for r in rows)
        print(f"  {label:34} {key:5} {med:6.1f} s  x{med / bare:.2f}")


if __name__ == "__main__":
    main()
