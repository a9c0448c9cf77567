"""A usage error is one ``error:`` line naming what was wrong, with Click's exit code."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


def _rungflow(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "RUNGFLOW_HOME": str(cwd)}
    return subprocess.run(
        [sys.executable, "-m", "flows.cli", *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=120, check=False,
    )


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["export", "x", "--format", "xml"], ["--format", "'xml' is not one of 'csv', 'json'",
                                              "rungflow export --help"]),
        (["resume"], ["No such command 'resume'", "rungflow --help"]),
        (["status", "--nope"], ["No such option: --nope", "rungflow status --help"]),
    ],
)
def test_usage_errors_are_one_error_line(args: list[str], words: list[str], tmp_path: Path) -> None:
    done = _rungflow(args, tmp_path)
    assert done.returncode == 2
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    for word in words:
        assert word in lines[0]
    assert "Value error" not in lines[0] and "Traceback" not in done.stderr


def test_no_command_still_prints_the_help(tmp_path: Path) -> None:
    done = _rungflow([], tmp_path)
    assert done.returncode == 2
    assert "Usage: rungflow" in done.stdout + done.stderr
