"""Which Prefect settings cut the API server's CPU per task, and what they cost the UI.

Each profile runs in a fresh child process with its own ephemeral Prefect API
(settings of the server are read when it starts) and its own PREFECT_HOME. The
child warms the server up, drains it, runs the bare task loop of
``benchmarks/overhead.py`` (N tasks, 4 in flight), drains again (the server
records task runs seconds after the flow returned) and reports, per task:
client CPU, server CPU (its process tree, from /proc) and wall time. It then
asks the API what the UI would show: how many task runs were recorded and in
which final state, and how many log lines.

Profiles are interleaved and their order rotated per repeat; min / median /
max are printed with the load average.

Usage:
    python benchmarks/prefect_settings.py [--tasks 300] [--repeat 3] [--profiles a,b]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _cpu import load_average, spread

#: name -> (environment, what the UI loses)
PROFILES: dict[str, tuple[dict[str, str], str]] = {
    "default": ({}, "nothing"),
    "no-api-logs": (
        {"PREFECT_LOGGING_TO_API_ENABLED": "false"},
        "task and flow log lines in the UI (the terminal keeps them)",
    ),
    "batched-recorder": (
        {
            "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_BATCH_SIZE": "200",
            "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_READ_BATCH_SIZE": "50",
            "PREFECT_SERVER_SERVICES_EVENT_PERSISTER_BATCH_SIZE": "500",
            "PREFECT_SERVER_SERVICES_EVENT_PERSISTER_READ_BATCH_SIZE": "50",
        },
        "nothing (task runs appear up to the flush interval, 5 s, later)",
    ),
    "no-triggers": (
        {"PREFECT_SERVER_SERVICES_TRIGGERS_ENABLED": "false"},
        "event-triggered automations",
    ),
    "no-event-persister": (
        {"PREFECT_SERVER_SERVICES_EVENT_PERSISTER_ENABLED": "false"},
        "the Events feed (task runs are still recorded)",
    ),
    "recommended": (
        {
            "PREFECT_LOGGING_TO_API_ENABLED": "false",
            "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_BATCH_SIZE": "200",
            "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_READ_BATCH_SIZE": "50",
            "PREFECT_SERVER_SERVICES_EVENT_PERSISTER_BATCH_SIZE": "500",
            "PREFECT_SERVER_SERVICES_EVENT_PERSISTER_READ_BATCH_SIZE": "50",
            "PREFECT_SERVER_SERVICES_TRIGGERS_ENABLED": "false",
        },
        "task log lines and automations; task runs and flow runs stay",
    ),
}


def child(n: int) -> None:
    """Run in the profile's environment; print one JSON line of figures."""
    from _cpu import drain, sample
    from overhead import bare_loop
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    bare_loop(4, 2)  # boot and warm the ephemeral API
    drain()
    before = sample()
    flow_state = bare_loop(n, 4, return_state=True)  # type: ignore[call-arg]
    returned = sample() - before
    flow_run_id = flow_state.state_details.flow_run_id
    only_this_run = FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
    with get_client(sync_client=True) as client:
        # The UI shows a task run once the server's recorder has written it:
        # poll (bounded) until all n are there, and report how long that took.
        completed, lag_start = 0, time.perf_counter()
        while time.perf_counter() - lag_start < 60:
            runs = client.read_task_runs(flow_run_filter=only_this_run, limit=n + 50)
            completed = sum(r.state is not None and r.state.is_completed() for r in runs)
            if completed >= n:
                break
            time.sleep(0.5)
        lag = time.perf_counter() - lag_start
        drain()
        total = sample() - before
        logs = client.read_logs(limit=n + 50)
    print(
        "RESULT "
        + json.dumps(
            {
                "wall": 1000 * returned.wall / n,
                "client": 1000 * total.client / n,
                "server": 1000 * total.server / n,
                "completed": completed,
                "lag": lag,
                "logs": len(logs),
            }
        ),
        flush=True,
    )


def run_profile(name: str, n: int) -> dict[str, Any]:
    env = {
        **os.environ,
        **PROFILES[name][0],
        "PREFECT_HOME": tempfile.mkdtemp(prefix=f"rungflow-prefect-{name}-"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    }
    env.pop("PREFECT_API_URL", None)
    out = subprocess.run(
        [sys.executable, __file__, "--child", str(n)],
        env=env, capture_output=True, text=True, timeout=900, check=False,
    )
    for line in out.stdout.splitlines():
        if line.startswith("RESULT "):
            return dict(json.loads(line[len("RESULT ") :]))
    raise RuntimeError(f"profile {name} failed:\n{out.stderr[-2000:]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=300)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--profiles", default=",".join(PROFILES))
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        child(args.child)
        return
    names = [p for p in args.profiles.split(",") if p]
    unknown = sorted(set(names) - set(PROFILES))
    if unknown:
        parser.error(f"--profiles has {unknown}, but must be among {sorted(PROFILES)}")
    load_start = load_average()
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    for r in range(args.repeat):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            results[name].append(run_profile(name, args.tasks))
    print(f"tasks={args.tasks} repeats={args.repeat}; load average {load_start} -> "
          f"{load_average()}")
    print("ms per task, min / median / max; 'recorded' = completed task runs the UI shows, "
          "'lag' = seconds after the flow returned until all were recorded (median)")
    header = f"{'profile':20s} {'server CPU':>22s} {'client CPU':>22s} {'wall':>22s}"
    print(header + "  recorded   lag  logs  UI loses")
    base = statistics.median(x["server"] + x["client"] for x in results.get("default", []) or [{}])
    for name in names:
        rows = results[name]
        server = [x["server"] for x in rows]
        client = [x["client"] for x in rows]
        wall = [x["wall"] for x in rows]
        recorded = min(x["completed"] for x in rows)
        lag = statistics.median(x["lag"] for x in rows)
        logs = min(x["logs"] for x in rows)
        total = statistics.median(s + c for s, c in zip(server, client, strict=True))
        ratio = f"  total {total / base:.2f}x default" if "default" in results else ""
        print(
            f"{name:20s} {spread(server):>22s} {spread(client):>22s} {spread(wall):>22s}"
            f"  {recorded:>8d} {lag:5.1f}  {logs:>4d}  {PROFILES[name][1]}{ratio}"
        )


if __name__ == "__main__":
    main()
