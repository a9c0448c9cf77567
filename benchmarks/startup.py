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

With ``--cli``, the fixed cost of the commands that never start Prefect
instead: ``--help``, ``plan``, ``list``, ``status NAME`` (table and
``--json``), ``export NAME`` and ``run``'s errors before the boot (a spec
that fails validation, an unsupported URL, a refused resume), each on an
empty and a small store (34 trials, 223 events) on SQLite and, with
``--pg URL``, PostgreSQL (scratch databases, dropped afterwards). Each
command is a fresh ``rungflow`` process; wall is spawn to exit and CPU its
user+sys (``wait4``). With ``--baseline DIR`` (a source tree, e.g. ``git
archive <commit> | tar -x -C DIR``) every command also runs from that tree,
same venv, same stores, interleaved (the order alternates per repeat), so
before and after come from one run. Bytecode is cached (under a private
``PYTHONPYCACHEPREFIX``, written by an uncounted warm-up) as an installed
package has it. Printed: per command, backend and store, min/median/max
wall and CPU in ms, the exit code, the heavy packages it imported (from
``-X importtime`` in the warm-up) and the CPU ratio to the baseline; the load
average before and after and its range over the timings.

Usage:
    python benchmarks/startup.py [--repeat 3] [--python NAME=PATH ...]
    python benchmarks/startup.py --cli [--repeat 15] [--baseline DIR] [--pg URL]
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

from _cpu import load_average  # benchmarks/_cpu.py: run as a script from here

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


#: Packages a command that never starts Prefect should not need (or only some).
CLI_HEAVY = ("prefect", "optuna", "numpy", "scipy", "alembic", "pydantic", "pydantic_settings",
             "fsspec", "sqlalchemy", "sqlalchemy.orm", "psycopg", "yaml", "asyncio")
#: The small store's experiment (benchmarks/resume.py's log, cut small).
CLI_NAME = "resume-bench"


def cli_commands(work: Path) -> list[tuple[str, str, list[str], dict[str, str]]]:
    """``(command label, store kind, argv, extra env)``; kind "-" needs no store."""
    bad = work / "bad.json"
    bad.write_text(json.dumps({**SPEC, "max_concurrency": 0}))
    other = work / "refused.json"  # the small store's name, another spec: refused resume
    other.write_text(json.dumps({**SPEC, "name": CLI_NAME}))
    new = work / "new.json"  # a new experiment whose checkpoints cannot be written
    new.write_text(json.dumps({**SPEC, "name": "fresh"}))
    return [
        ("--help", "-", ["--help"], {}),
        ("plan hyperband", "-", ["plan", "hyperband", "--max-t", "81"], {}),
        ("run: invalid spec", "-", ["run", str(bad)], {}),
        ("run: unsupported URL", "-", ["run", str(bad.with_name("new.json")), "--db",
                                       "mysql://u@h/db"], {}),
        ("list", "empty", ["list"], {}),
        ("status NAME (not found)", "empty", ["status", CLI_NAME], {}),
        ("run: checkpoints unwritable", "empty", ["run", str(new)],
         {"RUNGFLOW_CHECKPOINTS": "/proc/rungflow-no-such-dir"}),
        ("list", "small", ["list"], {}),
        ("status NAME", "small", ["status", CLI_NAME], {}),
        ("status NAME --json", "small", ["status", CLI_NAME, "--json"], {}),
        ("export NAME", "small", ["export", CLI_NAME, "--format", "json"], {}),
        ("run: refused resume", "small", ["run", str(other)], {}),
    ]


def cli_stores(
    work: Path, pg: str | None, stack: contextlib.ExitStack
) -> dict[str, dict[str, str]]:
    """Backend -> store kind -> URL: an empty (migrated) and a small store per backend."""
    import resume  # benchmarks/resume.py: the 10k-trial log's builder, run small here

    from storage import EventStore

    urls = {"sqlite": {k: f"sqlite:///{work / k}.db" for k in ("empty", "small")}}
    if pg:
        from _pg import scratch_database

        urls["postgresql"] = {k: stack.enter_context(scratch_database(pg, f"startup_cli_{k}"))
                              for k in ("empty", "small")}
    spec = resume.make_spec("asha", 20)
    events = resume.build_events(spec, 20, 60)
    for kinds in urls.values():
        EventStore(kinds["empty"]).close()
        with EventStore(kinds["small"]) as store:
            resume.write_log(store, spec, events)
    return urls


def heavy_imports(stderr: str) -> list[str]:
    """Which of :data:`CLI_HEAVY` a run imported, from its ``-X importtime`` lines."""
    seen = {line.rsplit("|", 1)[1].strip() for line in stderr.splitlines()
            if line.startswith("import time:")}
    return [m for m in CLI_HEAVY if m in seen]


def cli_main(args: argparse.Namespace) -> None:
    """The ``--cli`` suite (see the module docstring)."""
    work = Path(tempfile.mkdtemp(prefix="rungflow-startup-cli-"))
    trees = {"this": Path(__file__).resolve().parents[1]}
    if args.baseline:
        trees = {"baseline": args.baseline.resolve(), **trees}
    exe = str(Path(sys.executable).with_name("rungflow"))
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("RUNGFLOW_", "PYTHONDONTWRITEBYTECODE", "PYTHONPROFILEIMPORTTIME"))}
    env.update(PYTHONPYCACHEPREFIX=str(work / "pycache"), RUNGFLOW_HOME=str(work / "home"),
               PREFECT_HOME=str(work / "prefect"), PREFECT_SERVER_ANALYTICS_ENABLED="false")
    print(f"load average before: {load_average()}  "
          f"cpus: {os.cpu_count()}  repeats: {args.repeat}", flush=True)
    with contextlib.ExitStack() as stack:
        urls = cli_stores(work, args.pg, stack)
        cases = []  # (command, backend, kind, argv, env per tree)
        for command, kind, argv, extra in cli_commands(work):
            for backend in (["-"] if kind == "-" else list(urls)):
                url = {"RUNGFLOW_DATABASE_URL": urls[backend][kind]} if kind != "-" else {}
                envs = {t: {**env, **url, **extra, "PYTHONPATH": str(root)}
                        for t, root in trees.items()}
                cases.append((command, backend, kind, argv, envs))

        def once(argv: list[str], e: dict[str, str]) -> tuple[float, float, int, str]:
            t0 = time.perf_counter()
            child = subprocess.Popen([exe, *argv], env=e, cwd=work, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True)
            assert child.stderr is not None
            err = child.stderr.read()
            _, status, usage = os.wait4(child.pid, 0)
            wall = time.perf_counter() - t0
            return wall, usage.ru_utime + usage.ru_stime, os.waitstatus_to_exitcode(status), err

        heavy: dict[tuple[int, str], list[str]] = {}
        codes: dict[tuple[int, str], int] = {}
        for i, (_, _, _, argv, envs) in enumerate(cases):  # warm-up: bytecode, snapshots
            for tree, e in envs.items():
                once(argv, e)
                *_, code, err = once(argv, {**e, "PYTHONPROFILEIMPORTTIME": "1"})
                heavy[i, tree], codes[i, tree] = heavy_imports(err), code
        times: dict[tuple[int, str], list[tuple[float, float]]] = {}
        loads: list[float] = []
        for r in range(args.repeat):
            for i, (_, _, _, argv, envs) in enumerate(cases):
                order = list(envs) if r % 2 == 0 else list(reversed(envs))
                for tree in order:
                    wall, cpu, code, err = once(argv, envs[tree])
                    if code != codes[i, tree]:
                        print(f"  exit {code} != {codes[i, tree]}: {argv} {err[-300:]}")
                    times.setdefault((i, tree), []).append((wall, cpu))
                    loads.append(os.getloadavg()[0])
    print(f"load average after: {load_average()}  "
          f"1-min load over the timings {min(loads):.2f}-{max(loads):.2f}")

    def ms(values: list[float]) -> str:
        v = sorted(x * 1000 for x in values)
        return f"{v[0]:5.0f} {statistics.median(v):5.0f} {v[-1]:5.0f}"

    print(f"\n{'command':29} {'backend':10} {'store':5} {'tree':8} {'wall ms min med max':>19} "
          f"{'cpu ms min med max':>18} {'rc':>2} {'cpu/base':>8}  imports")
    for i, (command, backend, kind, _, envs) in enumerate(cases):
        for tree in envs:
            rows = times[i, tree]
            cpus = [c for _, c in rows]
            ratio = ""
            if tree != "baseline" and "baseline" in envs:
                base = statistics.median(c for _, c in times[i, "baseline"])
                ratio = f"{statistics.median(cpus) / base:8.2f}"
            print(f"{command:29} {backend:10} {kind:5} {tree:8} {ms([w for w, _ in rows]):>19} "
                  f"{ms(cpus):>18} {codes[i, tree]:2d} {ratio:>8}  "
                  f"{' '.join(heavy[i, tree]) or '-'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--python", action="append", default=[],
                        help="NAME=PATH of a python whose rungflow to measure (repeatable).")
    parser.add_argument("--cli", action="store_true",
                        help="Time the commands that never start Prefect (see the docstring).")
    parser.add_argument("--baseline", type=Path, help="--cli: source tree to compare against")
    parser.add_argument("--pg", help="--cli: PostgreSQL URL (scratch databases are made there)")
    args = parser.parse_args()
    if args.cli:
        cli_main(args)
        return
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
    print(f"load average: {load_average()}  "
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
