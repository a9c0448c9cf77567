"""CLI output snapshots: status, run, export, plot and the progress line.

The experiment is built without Prefect (an inline executor runs segments in
order), so the log, and every table printed from it, is the same on every run.
Output is rendered at a fixed width without colour, timings are masked.
Regenerate after an intended change with ``UPDATE_SNAPSHOTS=1 pytest ...``.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import sys
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from typer.testing import CliRunner

import flows.cli as cli
from flows.cli.export import history_records
from flows.cli.progress import CliProgress
from flows.engine.runner import ExperimentRunner
from flows.spec import load_spec
from storage import EventStore
from tests.flows.inline import InlineExecutor

SNAPSHOTS = Path(__file__).with_name("snapshots")
WIDTH = 110

SPEC: dict[str, Any] = {
    "name": "snap",
    "trainable": "faults",
    "metric": "loss",
    "space": {
        "x": {"type": "float", "low": 0.0, "high": 1.0},
        "depth": {"type": "int", "low": 1, "high": 4},
    },
    "scheduler": "hyperband",
    "scheduler_args": {"max_t": 4, "reduction_factor": 2},
    "budget": {"max_trials": 6},
    "max_concurrency": 1,
    "seed": 7,
}


@pytest.fixture
def experiment(rungflow_home: Path) -> str:
    """The ``snap`` experiment, finished, in this test's RUNGFLOW_HOME."""
    rungflow_home.mkdir(parents=True)
    store = EventStore(f"sqlite:///{rungflow_home / 'rungflow.db'}")
    try:
        runner = ExperimentRunner(store, load_spec(SPEC), str(rungflow_home / "checkpoints"))
        runner.run(InlineExecutor())
    finally:
        store.close()
    return "snap"


@pytest.fixture
def invoke(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Invoke the CLI with fixed-width, colourless consoles; return the result."""
    monkeypatch.setenv("COLUMNS", str(WIDTH))
    out = Console(width=WIDTH, color_system=None)
    err = Console(width=WIDTH, color_system=None, stderr=True)
    # Each command module binds the shared consoles at import: patch every binding.
    for module in list(sys.modules.values()):
        name = getattr(module, "__name__", "")
        if name == "flows.cli" or name.startswith("flows.cli."):
            if hasattr(module, "console"):
                monkeypatch.setattr(module, "console", out)
            if hasattr(module, "err"):
                monkeypatch.setattr(module, "err", err)
    runner = CliRunner()

    def run(*args: str) -> Any:
        return runner.invoke(cli.app, list(args), catch_exceptions=False)

    return run


ANSI = re.compile(r"\x1b\[[?0-9;]*[A-Za-z]")


def normalise(text: str) -> str:
    text = ANSI.sub("", text)  # cursor control of the live bar
    text = re.sub(r"\d{4}-\d\d-\d\dT[\d:.]+\+00:00", "TIMESTAMP", text)  # log times
    text = re.sub(r"\d+:\d\d:\d\d", "H:MM:SS", text)  # elapsed times
    text = re.sub(r"\d+\.\d s$", "S.S s", text, flags=re.M)  # elapsed seconds
    return "\n".join(line.rstrip() for line in text.splitlines()) + "\n"


def assert_snapshot(name: str, text: str) -> None:
    path = SNAPSHOTS / name
    text = normalise(text)
    if os.environ.get("UPDATE_SNAPSHOTS") or not path.exists():
        SNAPSHOTS.mkdir(exist_ok=True)
        path.write_text(text)
        if not os.environ.get("UPDATE_SNAPSHOTS"):
            pytest.fail(f"snapshot {name} was missing and has been written; run again")
    assert text == path.read_text(), f"{name} changed; UPDATE_SNAPSHOTS=1 if intended"


def test_status(experiment: str, invoke: Any) -> None:
    result = invoke("status", experiment)
    assert result.exit_code == 0, result.output
    assert_snapshot("status.txt", result.stdout)


def test_status_limit_and_all(experiment: str, invoke: Any) -> None:
    limited = invoke("status", experiment, "--limit", "2")
    assert limited.exit_code == 0, limited.output
    assert "top 2 of 6 reporting loss" in limited.stdout
    assert "t0000" not in limited.stdout.split("best trial")[0]
    everything = invoke("status", experiment, "--all")
    assert "top 6 of 6" in everything.stdout and "t0000" in everything.stdout
    data = json.loads(invoke("status", experiment, "--json").stdout)
    assert data["counts"] == {"completed": 2, "pruned": 4}
    assert data["reason"] == "budget exhausted"
    assert all(t["started_at"] <= t["ended_at"] for t in data["trials"])


def test_status_unknown_experiment(rungflow_home: Path, invoke: Any) -> None:
    result = invoke("status", "nope")
    assert result.exit_code == 1
    assert "experiment 'nope' not found" in result.stderr


def test_export_csv(experiment: str, invoke: Any) -> None:
    result = invoke("export", experiment, "--format", "csv")
    assert result.exit_code == 0, result.output
    assert_snapshot("export.csv", result.stdout)
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert set(rows[0]) == {
        "trial_id", "status", "segment_start", "segment_stop", "resource", "finished_at",
        "config.depth", "config.x", "loss",
    }
    # The same outcome words as `rungflow status`, and when each result landed.
    assert {r["status"] for r in rows} <= {"completed", "pruned", "failed"}
    assert all(r["finished_at"].endswith("+00:00") for r in rows)


def test_export_json_to_file(experiment: str, invoke: Any, rungflow_home: Path) -> None:
    out = rungflow_home / "hist.json"
    result = invoke("export", experiment, "--format", "json", "--output", str(out))
    assert result.exit_code == 0, result.output
    records = json.loads(out.read_text())
    store = EventStore(f"sqlite:///{rungflow_home / 'rungflow.db'}")
    stored = store.read(experiment)
    store.close()
    assert records == history_records(stored)
    # One row per report: the faults trainable reports once per resource unit.
    assert len(records) == 14
    longest = [r["resource"] for r in records if (r["segment_start"], r["segment_stop"]) == (2, 4)]
    assert longest == [3.0, 4.0, 3.0, 4.0]  # two trials reach 4 (t0002, t0005)
    assert {"trial_id", "config", "metrics", "resource"} <= set(records[0])
    assert "wrote" in result.stderr


def test_export_bad_format(experiment: str, invoke: Any) -> None:
    result = invoke("export", experiment, "--format", "xml")
    assert result.exit_code == 2
    assert "xml" in result.output


def test_plot_writes_a_png(experiment: str, invoke: Any, rungflow_home: Path) -> None:
    out = rungflow_home / "curves.png"
    result = invoke("plot", experiment, "--output", str(out))
    assert result.exit_code == 0, result.output
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_without_matplotlib_says_how_to_get_it(
    experiment: str, invoke: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import now fails
    result = invoke("plot", experiment)
    assert result.exit_code == 1
    assert "pip install 'rungflow[plot]'" in result.stderr


@pytest.mark.usefixtures("prefect_harness")
def test_run_ends_with_the_leaderboard(rungflow_home: Path, invoke: Any, tmp_path: Path) -> None:
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({**SPEC, "name": "snap"}))
    result = invoke("run", str(spec))
    assert result.exit_code == 0, result.output
    assert_snapshot("run.txt", result.stdout)
    assert "segments" in result.stderr  # the progress line


def test_progress_line(experiment: str, rungflow_home: Path) -> None:
    """The text next to the bar: segments, failures, trials and resource vs budget, best."""
    store = EventStore(f"sqlite:///{rungflow_home / 'rungflow.db'}")
    try:
        runner = ExperimentRunner(store, load_spec(SPEC), str(rungflow_home / "checkpoints"))
        runner.open()
    finally:
        store.close()
    runner.summary.segments_run, runner.summary.segments_failed = 9, 1
    out = io.StringIO()
    console = Console(file=out, width=WIDTH, color_system=None, force_terminal=True)
    progress = CliProgress(load_spec(SPEC), console)
    with progress:
        progress(runner)
    assert_snapshot("progress.txt", out.getvalue())


@pytest.mark.parametrize("width", [80, 60])
def test_progress_keeps_bar_and_numbers_in_a_narrow_terminal(
    experiment: str, rungflow_home: Path, width: int
) -> None:
    """The name and detail give way (ellipsis); bar, 100% and elapsed time stay."""
    store = EventStore(f"sqlite:///{rungflow_home / 'rungflow.db'}")
    try:
        runner = ExperimentRunner(
            store, load_spec({**SPEC, "name": "snap"}), str(rungflow_home / "checkpoints")
        )
        runner.open()
    finally:
        store.close()
    out = io.StringIO()
    console = Console(file=out, width=width, color_system=None, force_terminal=True)
    progress = CliProgress(load_spec(SPEC), console)
    with progress:
        progress(runner)
    last = [line for line in ANSI.sub("", out.getvalue()).splitlines() if line.strip()][-1]
    assert "━" in last and "100%" in last, last  # finished: the bar is full
    assert re.search(r"\d:\d\d:\d\d", last), last
    assert len(last.rstrip()) <= width


def test_progress_off_a_terminal_prints_one_whole_final_line(
    experiment: str, rungflow_home: Path
) -> None:
    store = EventStore(f"sqlite:///{rungflow_home / 'rungflow.db'}")
    try:
        runner = ExperimentRunner(store, load_spec(SPEC), str(rungflow_home / "checkpoints"))
        runner.open()
    finally:
        store.close()
    out = io.StringIO()
    progress = CliProgress(load_spec(SPEC), Console(file=out, width=40, color_system=None))
    with progress:
        progress(runner)
    text = out.getvalue()
    assert "━" not in text  # no live bar in a log file
    assert text.count("\n") == 1 and text.startswith("snap: finished 100% | best loss=")
    assert "resource 14" in text  # never cut at the console width
