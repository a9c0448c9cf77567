"""Errors before the boot: ``rungflow run``, ``status`` and ``list`` on bad input and broken stores.

Every case runs the real command in a subprocess (``python -X importtime -m
flows.cli``) and checks what a user sees: the exit code (2 for bad input, 1
for the environment), exactly one ``error:`` line, no traceback, no password,
and that Prefect was never imported (``-X importtime`` lists every module the
process imported). Stores are real SQLite files and a real PostgreSQL; the
"server that never answers" is a real socket that accepts and stays silent.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from flows.engine.runner import ExperimentRunner
from flows.spec import load_spec
from storage import EventStore
from tests.flows.inline import InlineExecutor
from tests.pg import pg_url, require_pg

SPEC: dict[str, Any] = {
    "name": "pre",
    "trainable": "noop",
    "metric": "loss",
    "space": {"x": {"type": "float", "low": 0.0, "high": 1.0}},
    "scheduler": "hyperband",
    "scheduler_args": {"max_t": 4, "reduction_factor": 2},
    "budget": {"max_trials": 4},
    "max_concurrency": 1,
    "seed": 3,
}
SECRET = "s3cr3tPW"


@dataclass
class Result:
    code: int
    lines: list[str]  # what the user sees on stderr (import-time lines removed)
    stdout: str
    imported: set[str]

    @property
    def errors(self) -> list[str]:
        return [ln for ln in self.lines if ln.startswith("error:")]


def rungflow(*args: str, cwd: Path, env: dict[str, str] | None = None,
             unprivileged: bool = False, timeout: float = 120) -> Result:
    """``rungflow ARGS`` in a fresh interpreter; which modules it imported, what it printed."""
    full_env = {
        k: v for k, v in os.environ.items()
        if not k.startswith(("RUNGFLOW_", "PREFECT_API")) and k != "COLUMNS"
    }
    full_env.update({"RUNGFLOW_HOME": str(cwd / "home"), "COLUMNS": "80"})
    full_env.update(env or {})
    prefix = without_root() if unprivileged else []
    proc = subprocess.run(
        [*prefix, sys.executable, "-X", "importtime", "-m", "flows.cli", *args],
        cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout,
    )
    imported, lines = set(), []
    for line in proc.stderr.splitlines():
        if line.startswith("import time:"):
            imported.add(line.rsplit("|", 1)[-1].strip())
        elif line.strip():
            lines.append(line)
    return Result(proc.returncode, lines, proc.stdout, imported)


def assert_refused(result: Result, code: int, *needles: str) -> None:
    """Exit ``code``, one ``error:`` line containing ``needles``, no traceback, no Prefect."""
    text = "\n".join(result.lines)
    assert result.code == code, text
    assert len(result.errors) == 1, text
    assert [ln for ln in result.lines if not ln.startswith("warning:")] == result.errors, text
    assert "Traceback" not in text and SECRET not in text + result.stdout
    for needle in needles:
        assert needle in result.errors[0], text
    assert not any(m.split(".")[0] == "prefect" for m in result.imported), "Prefect was imported"


@pytest.fixture
def work() -> Iterator[Path]:
    """A fresh directory for the command to run in."""
    path = Path(tempfile.mkdtemp(prefix="rungflow-preflight-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def write_spec(directory: Path, **changes: Any) -> Path:
    path = directory / "spec.yaml"
    path.write_text(yaml.safe_dump({**SPEC, **changes}))
    return path


def finished_experiment(url: str, directory: Path) -> None:
    """Run SPEC to the end without Prefect (segments run inline)."""
    with EventStore(url) as store:
        runner = ExperimentRunner(store, load_spec(SPEC), str(directory / "ckpt"))
        runner.run(InlineExecutor())


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A TCP server that accepts connections and never says a word."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                held.append(srv.accept()[0])
            except OSError:
                return

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield int(srv.getsockname()[1])
    finally:
        stop.set()
        srv.close()
        for conn in held:
            conn.close()


def without_root() -> list[str]:
    """A command prefix under which file modes apply, even when the tests run as root.

    Root writes through any file mode. In a new user namespace the process
    keeps its files but loses its capabilities over them, so a 0444 file is
    read-only to it, as it is to any ordinary user.
    """
    if os.geteuid() != 0:
        return []
    if shutil.which("unshare") is None:
        pytest.skip("running as root without unshare: file modes cannot be tested")
    return ["unshare", "--user"]


# ------------------------------------------------------------------ spec files
def _bomb() -> str:
    lines = ["a: &a [" + ", ".join(['"lol"'] * 9) + "]"]
    for prev, cur in zip("abcdefgh", "bcdefghi", strict=True):
        lines.append(f"{cur}: &{cur} [" + ", ".join([f"*{prev}"] * 9) + "]")
    lines += [f"pad{i}: [" + ", ".join(["*i"] * 30) + "]" for i in range(18)]
    return "\n".join(lines) + "\n"


SPEC_CASES: dict[str, tuple[bytes, str]] = {
    "alias-bomb": (_bomb().encode(), "expands to more than"),
    "deep-nesting": (b"name: " + b"[" * 50_000 + b"]" * 50_000 + b"\n", "spec.yaml"),
    "deep-block-nesting": (
        "".join(f"{'  ' * i}k{i}:\n" for i in range(200)).encode() + b"x: 1\n", "deeper than"
    ),
    "not-utf8": (yaml.safe_dump(SPEC).replace("pre", "pr\xe9").encode("latin-1"), "not UTF-8"),
    "too-big": (b"# " + b"x" * (1 << 20) + b"\n", "larger than"),
    "duplicate-key": (
        yaml.safe_dump(SPEC).encode() + b"seed: 4\n", "duplicate key 'seed'"
    ),
    "seed-true": (yaml.safe_dump({**SPEC, "seed": True}).encode(), "seed is true"),
    "asha-reduction_factor": (
        yaml.safe_dump({**SPEC, "scheduler": "asha", "scheduler_args": {"reduction_factor": 1}})
        .encode(),
        "scheduler_args.reduction_factor: reduction_factor is 1, but must be >= 2",
    ),
    "form-layout-probability_sh": (
        yaml.safe_dump({**{k: v for k, v in SPEC.items() if k != "scheduler"},
                        "scheduler_args": {"scheduler": "dyhpo", "max_t": 4,
                                           "probability_sh": 1.5}}).encode(),
        "scheduler_args.probability_sh: probability_sh is 1.5, but must be in [0, 1]",
    ),
    "max_t-unreachable": (
        yaml.safe_dump({**SPEC, "scheduler_args": {"max_t": 100}, "budget": {"max_resource": 10}})
        .encode(),
        "0 trials",
    ),
}


def test_the_alias_bomb_is_the_issue_s_size() -> None:
    assert 2000 < len(SPEC_CASES["alias-bomb"][0]) < 3000


@pytest.mark.parametrize("case", sorted(SPEC_CASES))
def test_bad_spec_file_is_one_line_and_exit_2(case: str, work: Path) -> None:
    content, needle = SPEC_CASES[case]
    (work / "spec.yaml").write_bytes(content)
    result = rungflow("run", "spec.yaml", cwd=work)
    assert_refused(result, 2, "invalid experiment spec", needle)
    assert not (work / "home").exists(), "a refused spec must not create the store"


# ------------------------------------------------------------------ database URLs
@pytest.mark.parametrize(
    ("url", "needle"),
    [
        ("not a url", "does not parse"),
        ("foo://x/y", "supports only SQLite and PostgreSQL"),
        ("mysql://u@h/d", "supports only SQLite and PostgreSQL"),
        ("postgresql+asyncpg://u@127.0.0.1/d", "driver 'asyncpg'"),
    ],
)
def test_bad_db_url_is_exit_2(url: str, needle: str, work: Path) -> None:
    write_spec(work)
    assert_refused(rungflow("run", "spec.yaml", "--db", url, cwd=work), 2, needle)


def test_corrupt_and_directory_sqlite_are_exit_1_for_run_status_and_list(work: Path) -> None:
    write_spec(work)
    (work / "corrupt.db").write_bytes(b"this is not a database " * 200)
    (work / "dir.db").mkdir()
    for name, needle in (("corrupt.db", "corrupt"), ("dir.db", "is a directory")):
        url = f"sqlite:///{work / name}"
        for args in (("run", "spec.yaml"), ("status", "pre"), ("list",)):
            assert_refused(rungflow(*args, "--db", url, cwd=work), 1, name, needle)
    assert (work / "corrupt.db").read_bytes() == b"this is not a database " * 200


def test_read_only_sqlite_is_exit_1_and_unchanged(work: Path) -> None:
    db = work / "ro" / "r.db"
    db.parent.mkdir()
    finished_experiment(f"sqlite:///{db}", work)
    for p in (db.parent, *db.parent.iterdir()):
        p.chmod(0o555 if p.is_dir() else 0o444)
    write_spec(work)
    before = db.read_bytes()
    for args in (("run", "spec.yaml"), ("list",)):
        result = rungflow(*args, "--db", f"sqlite:///{db}", cwd=work, unprivileged=True)
        assert_refused(result, 1, str(db), "read-only")
    assert db.read_bytes() == before


def test_postgres_refused_missing_and_silent(work: Path, silent_server: int) -> None:
    require_pg()
    write_spec(work)
    cases = [
        (f"postgresql+psycopg://postgres:{SECRET}@127.0.0.1:{closed_port()}/test",
         "refused the connection"),
        ("postgresql+psycopg://postgres@127.0.0.1:5432/rungflow_no_such_db",
         "no database 'rungflow_no_such_db'"),
        (f"postgresql+psycopg://postgres:{SECRET}@127.0.0.1:{silent_server}/test",
         "did not answer within 2 s"),
    ]
    for url, needle in cases:
        for args in (("run", "spec.yaml"), ("list",)):
            result = rungflow(*args, "--db", url, cwd=work, env={"RUNGFLOW_CONNECT_TIMEOUT": "2"})
            assert_refused(result, 1, needle)
            if SECRET in url:  # the literal password on the command line is called out
                assert any(ln.startswith("warning:") and "ps" in ln for ln in result.lines)


def test_bad_connect_timeout_setting_is_exit_2(work: Path) -> None:
    write_spec(work)
    result = rungflow("run", "spec.yaml", cwd=work, env={"RUNGFLOW_CONNECT_TIMEOUT": "soon"})
    assert_refused(result, 2, "RUNGFLOW_CONNECT_TIMEOUT")


# ------------------------------------------------------------------ checkpoints
def test_unwritable_checkpoints_are_exit_1(work: Path) -> None:
    write_spec(work)
    (work / "afile").write_text("x")
    result = rungflow("run", "spec.yaml", "--checkpoints", str(work / "afile" / "ck"), cwd=work)
    assert_refused(result, 1, "checkpoint store", "Not a directory")
    locked = work / "locked"
    locked.mkdir(mode=0o555)
    locked.chmod(0o555)
    result = rungflow(
        "run", "spec.yaml", "--checkpoints", str(locked / "ck"), cwd=work, unprivileged=True
    )
    assert_refused(result, 1, "checkpoint store", "Permission denied")
    assert not any(locked.iterdir())


def test_memory_checkpoints_with_processes_is_exit_2(work: Path) -> None:
    write_spec(work, task_runner="process")
    result = rungflow("run", "spec.yaml", "--checkpoints", "memory://x", cwd=work)
    assert_refused(result, 2, "in this process's memory")


# ------------------------------------------------------------------ resume and finish
def test_changed_spec_is_refused_and_changes_nothing(work: Path) -> None:
    db = work / "r.db"
    finished_experiment(f"sqlite:///{db}", work)
    with EventStore(f"sqlite:///{db}") as store:
        before = [(e.name, e.state, e.last_seq) for e in store.list_experiments()]
    write_spec(work, space={"x": {"type": "float", "low": 0.0, "high": 2.0}})
    result = rungflow("run", "spec.yaml", "--db", f"sqlite:///{db}", cwd=work)
    assert_refused(result, 2, "exists with a different spec", "space")
    with EventStore(f"sqlite:///{db}") as store:
        assert [(e.name, e.state, e.last_seq) for e in store.list_experiments()] == before
    assert before[0][1] == "finished"


def test_finished_experiment_prints_its_leaderboard_without_prefect(work: Path) -> None:
    db = work / "r.db"
    finished_experiment(f"sqlite:///{db}", work)
    write_spec(work)
    # Through an env: reference, as a password-holding URL would be given.
    result = rungflow("run", "spec.yaml", "--db", "env:MY_DB", cwd=work,
                      env={"MY_DB": f"sqlite:///{db}"})
    assert result.code == 0, result.lines
    assert "pre (finished, hyperband)" in result.stdout and "best trial" in result.stdout
    assert not any(m.split(".")[0] == "prefect" for m in result.imported)
    assert "Traceback" not in "\n".join(result.lines)
    as_json = rungflow("run", "spec.yaml", "--json", "--db", f"sqlite:///{db}", cwd=work)
    assert as_json.code == 0 and '"state": "finished"' in as_json.stdout


def test_env_reference_that_is_unset_is_exit_2(work: Path) -> None:
    write_spec(work)
    result = rungflow("run", "spec.yaml", "--db", "env:RUNGFLOW_TEST_UNSET_URL", cwd=work)
    assert_refused(result, 2, "RUNGFLOW_TEST_UNSET_URL", "not set")


def test_resume_of_a_postgres_experiment_is_checked_before_prefect(work: Path) -> None:
    url = pg_url()
    finished_experiment(url, work)
    write_spec(work, scheduler_args={"max_t": 8, "reduction_factor": 2})
    result = rungflow("run", "spec.yaml", "--db", "env:PG", cwd=work, env={"PG": url})
    assert_refused(result, 2, "exists with a different spec", "scheduler_args")
