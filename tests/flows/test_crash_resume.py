"""Crash safety for real: SIGKILL a running `rungflow run`, rerun it, check the log.

Each kill lands after the log has grown by a random number of events, so it
hits the flow at arbitrary points: between a decision and its task, mid
segment, between a result and the next decision.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from storage import EventStore
from tests.log_checks import assert_log_integrity, decision_view

CLI = [sys.executable, "-m", "flows.cli"]


def write_spec(path: Path, scheduler: str, args: dict[str, Any], budget: dict[str, Any],
               concurrency: int, name: str) -> Path:
    spec = {
        "name": name,
        "trainable": "digits",
        "metric": "error",
        "space": {
            "lr": {"type": "float", "low": 1e-3, "high": 0.2, "log": True},
            "hidden": {"type": "int", "low": 8, "high": 24, "step": 8},
        },
        "scheduler": scheduler,
        "scheduler_args": args,
        "budget": budget,
        "max_concurrency": concurrency,
        "seed": 11,
    }
    path.write_text(json.dumps(spec))
    return path


API_URL: list[str] = []


@pytest.fixture(autouse=True)
def _shared_server(prefect_api_url: str) -> None:
    API_URL[:] = [prefect_api_url]


def env_for(tmp: Path) -> dict[str, str]:
    (tmp / "prefect").mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env.update(
        PREFECT_HOME=str(tmp / "prefect"),
        RUNGFLOW_HOME=str(tmp / "home"),
        PREFECT_LOGGING_LEVEL="WARNING",
        PREFECT_API_URL=API_URL[0],
    )
    return env


def event_count(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
            return int(conn.execute("select count(*) from events").fetchone()[0])
    except sqlite3.OperationalError:
        return 0


def run_until_done(tmp: Path, spec: Path, kills: int, seed: int, timeout: float = 420) -> int:
    """Start the run, SIGKILL it ``kills`` times mid-run, then let it finish."""
    rng = np.random.default_rng(seed)
    db = tmp / "home" / "rungflow.db"
    killed = 0
    for _ in range(kills):
        target = event_count(db) + int(rng.integers(2, 9))
        proc = subprocess.Popen(
            [*CLI, "run", str(spec), "--json"], env=env_for(tmp), start_new_session=True,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + timeout
        while proc.poll() is None and event_count(db) < target and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(float(rng.uniform(0, 0.3)))
        if proc.poll() is None:
            # Kill the whole session: the CLI and every worker process it started.
            os.killpg(proc.pid, signal.SIGKILL)
            killed += 1
        proc.wait()
    final = subprocess.run(
        [*CLI, "run", str(spec), "--json"], env=env_for(tmp), capture_output=True, text=True,
        timeout=timeout, start_new_session=True,
    )
    assert final.returncode == 0, final.stderr[-3000:]
    return killed


def read_events(tmp: Path, name: str) -> list[Any]:
    store = EventStore(f"sqlite:///{tmp / 'home' / 'rungflow.db'}")
    try:
        return [r.event for r in store.read(name)]
    finally:
        store.close()


CASES = {
    "random": ({"max_t": 3}, {"max_trials": 8}),
    "hyperband": ({"max_t": 9, "reduction_factor": 3}, {"max_trials": 17}),
    "asha": ({"max_t": 9, "grace_period": 1, "reduction_factor": 3}, {"max_resource": 40}),
    "pbt": ({"perturbation_interval": 2, "population_size": 4, "max_generations": 4}, {}),
    "dyhpo": ({"max_t": 9, "grace_period": 1, "num_init_random": 4, "num_candidates": 32},
              {"max_resource": 30}),
}


#: The default run (README's test command) drills one scheduler for real; the
#: other schedulers' drills are marked slow (``pytest -m slow`` runs them).
DEFAULT_DRILL = "random"


@pytest.mark.parametrize(
    ("scheduler", "args", "budget"),
    [
        pytest.param(k, *v, marks=() if k == DEFAULT_DRILL else (pytest.mark.slow,))
        for k, v in CASES.items()
    ],
)
def test_sigkill_then_resume_loses_and_duplicates_nothing(
    tmp_path: Path, scheduler: str, args: dict[str, Any], budget: dict[str, Any]
) -> None:
    spec = write_spec(tmp_path / "spec.json", scheduler, args, budget, 3, "crash")
    killed = run_until_done(tmp_path, spec, kills=2, seed=1)
    assert killed >= 1
    events = read_events(tmp_path, "crash")
    assert_log_integrity(events)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("scheduler", "args", "budget"),
    [(k, *CASES[k]) for k in ("hyperband", "pbt", "dyhpo")],
)
def test_killed_run_makes_the_same_decisions_as_an_uninterrupted_one(
    tmp_path: Path, scheduler: str, args: dict[str, Any], budget: dict[str, Any]
) -> None:
    """With one worker the order of results is fixed, so the logs must match exactly."""
    straight = write_spec(tmp_path / "a.json", scheduler, args, budget, 1, "same")
    run_until_done(tmp_path / "a", straight, kills=0, seed=0)
    crashed = write_spec(tmp_path / "b.json", scheduler, args, budget, 1, "same")
    run_until_done(tmp_path / "b", crashed, kills=2, seed=5)
    a = read_events(tmp_path / "a", "same")
    b = read_events(tmp_path / "b", "same")
    assert_log_integrity(b)
    assert decision_view(a) == decision_view(b)
