"""What each command that never starts Prefect imports: its fixed cost, guarded by structure.

A fresh ``rungflow`` process costs what it imports (``benchmarks/startup.py
--cli`` times it). Each command below runs in a subprocess whose
``sys.modules`` is written out at exit by a small hook, and must not contain
packages it does not need: Prefect anywhere; the numerical stack (numpy,
scipy, optuna) and the schedulers where no experiment is folded; Alembic on a
store already at the current schema; the SQLAlchemy ORM and pydantic-settings
(settings are read by :mod:`flows.envsettings`); fsspec where no checkpoint
is looked at. No timing is asserted.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from flows.engine.runner import ExperimentRunner
from flows.spec import load_spec
from storage import EventStore
from storage.schema import VERSION_TABLE
from tests.flows.inline import InlineExecutor

SPEC: dict[str, Any] = {
    "name": "imports",
    "trainable": "noop",
    "metric": "loss",
    "space": {"x": {"type": "float", "low": 0.0, "high": 1.0}},
    "scheduler": "hyperband",
    "scheduler_args": {"max_t": 4, "reduction_factor": 2},
    "budget": {"max_trials": 4},
    "max_concurrency": 1,
    "seed": 3,
}

#: Writes the process's modules to $MODULES_OUT at exit, then runs the CLI.
HOOK = """
import atexit, json, os, runpy, sys
def _dump():
    with open(os.environ["MODULES_OUT"], "w") as f:
        json.dump(sorted(sys.modules), f)
atexit.register(_dump)
sys.argv = ["rungflow", *sys.argv[1:]]
runpy.run_module("flows.cli", run_name="__main__")
"""

NUMERICAL = ("numpy", "scipy", "optuna", "sklearn")
NEVER = ("prefect", "alembic", "sqlalchemy.orm", "pydantic_settings")
FOLDING = ("schedulers.base", "schedulers.registry", "flows.engine.runner", "flows.spec")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished experiment in a SQLite store, and the spec files the commands read."""
    work = tmp_path_factory.mktemp("imports")
    url = f"sqlite:///{work / 'home' / 'rungflow.db'}"
    with EventStore(url) as store:
        ExperimentRunner(store, load_spec(SPEC), str(work / "home" / "checkpoints")).run(
            InlineExecutor()
        )
    (work / "spec.yaml").write_text(yaml.safe_dump(SPEC))
    (work / "refused.yaml").write_text(yaml.safe_dump({**SPEC, "metric": "acc"}))
    (work / "invalid.yaml").write_text(yaml.safe_dump({**SPEC, "max_concurrency": 0}))
    return work


def modules_of(workdir: Path, *args: str, stderr: bool = False) -> Any:
    """Exit code and ``sys.modules`` of ``rungflow ARGS`` run in a fresh interpreter
    (and its stderr if asked)."""
    out = workdir / "modules.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNGFLOW_", "PREFECT_API"))}
    env.update(RUNGFLOW_HOME=str(workdir / "home"), MODULES_OUT=str(out))
    proc = subprocess.run([sys.executable, "-c", HOOK, *args], cwd=workdir, env=env,
                          capture_output=True, text=True, timeout=120)
    assert "Traceback" not in proc.stderr, proc.stderr
    modules = set(json.loads(out.read_text()))
    return (proc.returncode, modules, proc.stderr) if stderr else (proc.returncode, modules)


def loaded(modules: set[str], packages: tuple[str, ...]) -> list[str]:
    """Which of ``packages`` (or their submodules) are in ``modules``."""
    return [p for p in packages if any(m == p or m.startswith(p + ".") for m in modules)]


@pytest.mark.parametrize(
    ("args", "code", "also_absent"),
    [
        (["--help"], 0, ("sqlalchemy", "pydantic", "storage", "fsspec")),
        (["plan", "hyperband", "--max-t", "81"], 0, ("sqlalchemy", "storage")),
        (["plan", "asha", "--max-t", "81", "--brackets", "2"], 0, ("sqlalchemy", "storage")),
        (["list"], 0, ("fsspec",)),
        (["status", "imports"], 0, ()),
        (["status", "nope"], 1, ("fsspec",)),
        (["export", "imports", "--format", "json"], 0, ("fsspec",)),
        (["export", "imports", "--format", "csv"], 0, ("fsspec",)),
    ],
)
def test_read_commands_import_no_prefect_nor_numerical_stack(
    workdir: Path, args: list[str], code: int, also_absent: tuple[str, ...]
) -> None:
    exit_code, modules = modules_of(workdir, *args)
    assert exit_code == code
    assert loaded(modules, NEVER + NUMERICAL + FOLDING + also_absent) == []


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (["status", "imports", "--json"], 0),  # folds the scheduler (its extras)
        (["run", "invalid.yaml"], 2),  # the spec is validated by the schedulers
        (["run", "refused.yaml"], 2),
        (["run", "spec.yaml"], 0),  # finished: its leaderboard, no Prefect
    ],
)
def test_commands_before_the_boot_import_no_prefect(
    workdir: Path, args: list[str], code: int
) -> None:
    exit_code, modules = modules_of(workdir, *args)
    assert exit_code == code
    assert loaded(modules, NEVER) == []


def test_a_newer_store_is_refused_in_one_line_without_alembic(workdir: Path) -> None:
    """A database a newer rungflow migrated: one ``error:`` line from the version read."""
    newer = workdir / "newer"
    newer.mkdir(exist_ok=True)
    shutil.copy(workdir / "home" / "rungflow.db", newer / "rungflow.db")
    with sqlite3.connect(newer / "rungflow.db") as conn:
        conn.execute(f"UPDATE {VERSION_TABLE} SET version_num = '9999_future'")
    for args in (["list"], ["status", "imports"], ["export", "imports"]):
        url = f"sqlite:///{newer / 'rungflow.db'}"
        code, modules, stderr = modules_of(workdir, *args, "--db", url, stderr=True)
        lines = [ln for ln in stderr.splitlines() if ln.strip()]
        assert code == 1
        assert len(lines) == 1 and lines[0].startswith("error:"), lines
        assert "'9999_future'" in lines[0] and "upgrade rungflow" in lines[0]
        assert loaded(modules, ("alembic", "prefect")) == []
