"""A run's Prefect servers, orphans after SIGKILL, and Ctrl-C to exit.

For each ``--python`` (a venv whose rungflow to measure: e.g. a baseline
checkout and this one, interleaved) and each task runner, a ``rungflow run``
with no ``PREFECT_API_URL`` is started, and once a first segment finished
(so every worker is up):

* ``servers``: Prefect API server processes in the run's process tree (its
  own, plus one per worker that booted its own ephemeral API);
* ``orphans``: processes of that tree still alive 10 s after SIGKILL of the
  main pid (``orphan servers``: those of them that are API servers);
* ``ctrl-c``: seconds from SIGINT to the whole process group to exit (capped
  at ``--cap``), the exit code, the experiment's stored state, and how many
  lines reached stderr after the signal.

Usage:
    python benchmarks/lifecycle.py [--python NAME=PATH ...] [--runners thread,process,dask]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

SERVER_SIGNS = ("prefect.server.api.server:create_app", "rungflow-owned-prefect-api")


def spec(runner: str) -> dict[str, Any]:
    return {
        "name": "life", "trainable": "faults", "metric": "loss",
        "space": {"x": {"type": "float", "low": 0.0, "high": 1.0}},
        "scheduler": "random", "scheduler_args": {"max_t": 4},
        "budget": {"max_trials": 12}, "max_concurrency": 2, "task_runner": runner,
        "trainable_args": {"seconds_per_unit": 3},
    }


def table() -> dict[int, tuple[int, str]]:
    out = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if fields[0] != "Z":
                out[int(entry)] = (int(fields[1]), cmd)
    return out


def tree(pid: int) -> dict[int, str]:
    t = table()
    found: dict[int, str] = {}
    frontier = [pid]
    while frontier:
        p = frontier.pop()
        for c, (pp, cmd) in t.items():
            if pp == p and c not in found:
                found[c] = cmd
                frontier.append(c)
    return found


def finished(db: Path) -> int:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as conn:
            q = "select count(*) from events where kind = 'SegmentFinished'"
            return int(conn.execute(q).fetchone()[0])
    except sqlite3.Error:
        return 0


def state(db: Path) -> str:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as conn:
            return str(conn.execute("select state from experiments").fetchone()[0])
    except (sqlite3.Error, TypeError):
        return "?"


def launch(py: str, runner: str, work: Path, env: dict[str, str]) -> tuple[Any, Path]:
    home = work / f"{time.monotonic_ns()}"
    home.mkdir(parents=True)
    (home / "spec.json").write_text(json.dumps(spec(runner)))
    e = {**env, "RUNGFLOW_HOME": str(home)}
    proc = subprocess.Popen([py, "-m", "flows.cli", "run", "spec.json"], cwd=home, env=e,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    db = home / "rungflow.db"
    deadline = time.monotonic() + 600
    # A first result: the workers are up (and, before this change, had each
    # booted their own Prefect API by the time they ran a task).
    while finished(db) < 1 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    return proc, db


def kill_all(pids: list[int]) -> None:
    for p in pids:
        with contextlib.suppress(OSError):
            os.kill(p, signal.SIGKILL)


def sigkill(py: str, runner: str, work: Path, env: dict[str, str]) -> dict[str, Any]:
    proc, _ = launch(py, runner, work, env)
    if proc.poll() is not None:
        return {"exited_first": proc.returncode, "stderr": proc.stderr.read()[-300:]}
    members = tree(proc.pid)
    servers = sum(any(s in cmd for s in SERVER_SIGNS) for cmd in members.values())
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    time.sleep(10)
    now = table()
    left = [p for p in members if p in now]
    left_servers = [p for p in left if any(s in now[p][1] for s in SERVER_SIGNS)]
    kill_all(left)
    return {"servers": servers, "orphans": len(left), "orphan_servers": len(left_servers)}


def ctrl_c(py: str, runner: str, work: Path, env: dict[str, str], cap: float) -> dict[str, Any]:
    proc, db = launch(py, runner, work, env)
    if proc.poll() is not None:
        return {"exited_first": proc.returncode, "stderr": proc.stderr.read()[-300:]}
    members = list(tree(proc.pid))
    t0 = time.perf_counter()
    os.killpg(proc.pid, signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=cap)
        took = f"{time.perf_counter() - t0:.1f}"
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        _, err = proc.communicate()
        took = f">{cap:.0f}"
    time.sleep(2)
    left = [p for p in members if p in table()]
    kill_all(left)
    lines = [x for x in err.splitlines() if x.strip()]
    return {"exit_s": took, "rc": proc.returncode, "state": state(db),
            "stderr_lines": len(lines), "last": lines[-1][:90] if lines else "",
            "left": len(left)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--python", action="append", default=[])
    parser.add_argument("--runners", default="thread,process,dask")
    parser.add_argument("--cap", type=float, default=150.0)
    args = parser.parse_args()
    pythons = dict(p.split("=", 1) for p in args.python) or {"this": sys.executable}
    work = Path(tempfile.mkdtemp(prefix="rungflow-lifecycle-"))
    env = dict(os.environ)
    env.pop("PREFECT_API_URL", None)
    env.update(PREFECT_HOME=str(work / "prefect"), PREFECT_SERVER_ANALYTICS_ENABLED="false",
               PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="300", COLUMNS="120")
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}  cpus: {os.cpu_count()}")
    runners = args.runners.split(",")
    for runner in runners:  # interleaved: each python in turn, per runner
        for name, py in pythons.items():
            print(f"{name:10} {runner:8} sigkill: {sigkill(py, runner, work, env)}", flush=True)
    for name, py in pythons.items():
        print(f"{name:10} thread   ctrl-c:  {ctrl_c(py, 'thread', work, env, args.cap)}",
              flush=True)
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
