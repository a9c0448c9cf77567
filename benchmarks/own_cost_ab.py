"""rungflow's own cost per segment, this tree against older ones, in one run.

``overhead.py`` measures rungflow against a bare Prefect task loop inside one
process, so it can only time the code it imports. To put a before and an after
side by side, this driver runs ``overhead.py --repeat 1`` in a fresh child per
(tree, repeat), with ``PYTHONPATH`` pointing at each source tree in turn and
the order of the trees rotated per repeat. Each child boots its own ephemeral
Prefect API, times the bare loop and rungflow's loop between drains of that
server, and reports client and server CPU per segment; the paired difference
(rungflow minus bare, same child) is rungflow's own cost in that tree.

A baseline tree is a ``git archive`` of an older commit, for example::

    mkdir -p /tmp/base && git archive 218adc2 | tar -x -C /tmp/base
    python benchmarks/own_cost_ab.py --tree before=/tmp/base --tree after=. \\
        --segments 200 --repeat 3

``--gc`` is handed to ``overhead.py`` (``freeze``, the default, freezes the
warm-up heap in every child, so that a full collection does not land in one
variant at random). ``--pg URL`` (a PostgreSQL server URL with the right to
create databases) gives every child a fresh database on that server instead
of a temp SQLite file, dropped afterwards; each tree migrates its own.

Printed per tree, min / median / max over repeats: rungflow's own client CPU
(and the part of it on the flow's thread, rungflow minus bare, which leaves
out the task threads and Prefect's client workers),
the server CPU rungflow adds over the bare loop, and the total; then each
tree's median against the first tree's; then the own client CPU split by
thread group (the flow thread, the task runner's workers, Prefect's
services, rungflow's threads, the rest: see ``_threads.py``; every tree
runs this tree's ``overhead.py``). The load average is printed at the
start and the end.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _cpu import load_average, spread
from _pg import scratch_database
from _threads import GROUPS

HERE = Path(__file__).resolve().parent


def _tree(arg: str) -> tuple[str, Path]:
    label, sep, path = arg.partition("=")
    if not sep or not label or not path:
        raise argparse.ArgumentTypeError(f"--tree must be LABEL=PATH, got {arg!r}")
    root = Path(path).resolve()
    if not (root / "flows" / "tune.py").is_file():
        raise argparse.ArgumentTypeError(f"--tree {label}: {root} holds no flows/tune.py")
    return label, root


@contextmanager
def _fresh_database(pg: str | None) -> Iterator[str | None]:
    """None (overhead.py's temp SQLite), or the URL of a new database on ``pg``."""
    if pg is None:
        yield None
        return
    with scratch_database(pg, "rungflow_ab") as url:
        yield url


def _run_once(
    root: Path, segments: int, concurrency: int, gc_mode: str, pg: str | None
) -> dict[str, list[float]]:
    with tempfile.TemporaryDirectory(prefix="rungflow-ab-") as tmp, _fresh_database(pg) as db:
        out = Path(tmp) / "figures.json"
        env = {
            **os.environ,
            "PYTHONPATH": str(root),
            "RUNGFLOW_HOME": tmp,
            "PREFECT_HOME": str(Path(tmp) / "prefect"),
        }
        env.pop("PREFECT_API_URL", None)  # each child times its own ephemeral server
        done = subprocess.run(
            [
                sys.executable, str(HERE / "overhead.py"),
                "--segments", str(segments), "--concurrency", str(concurrency),
                "--repeat", "1", "--artifacts", "off", "--json", str(out),
                "--gc", gc_mode, *(["--db", db] if db else []),
            ],
            env=env, cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        if done.returncode != 0:
            tail = "\n".join(done.stderr.splitlines()[-20:])
            raise SystemExit(f"error: overhead.py failed in {root}:\n{tail}")
        figures: dict[str, list[float]] = json.loads(out.read_text())
        return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", type=_tree, action="append", required=True,
                        help="LABEL=PATH of a source tree; the first is the baseline.")
    parser.add_argument("--segments", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--gc", choices=["freeze", "default"], default="freeze")
    parser.add_argument("--pg", default=None,
                        help="PostgreSQL server URL: a fresh database per child")
    args = parser.parse_args()
    trees: list[tuple[str, Path]] = args.tree
    own: dict[str, list[float]] = {label: [] for label, _ in trees}
    extra_server: dict[str, list[float]] = {label: [] for label, _ in trees}
    bare_total: dict[str, list[float]] = {label: [] for label, _ in trees}
    own_thread: dict[str, list[float]] = {label: [] for label, _ in trees}
    # Own client CPU split by thread group (see _threads.py), rungflow minus bare.
    own_groups: dict[str, dict[str, list[float]]] = {
        label: {g: [] for g in GROUPS} for label, _ in trees
    }
    own_gc: dict[str, list[float]] = {label: [] for label, _ in trees}
    load_start = load_average()
    for r in range(args.repeat):
        for label, root in trees[r % len(trees):] + trees[: r % len(trees)]:
            fig = _run_once(root, args.segments, args.concurrency, args.gc, args.pg)
            own[label].append(fig["client"]["off"][0] - fig["client"]["bare"][0])
            extra_server[label].append(fig["server"]["off"][0] - fig["server"]["bare"][0])
            bare_total[label].append(fig["client"]["bare"][0] + fig["server"]["bare"][0])
            thread = fig["flow_thread"]
            own_thread[label].append(thread["off"][0] - thread["bare"][0])
            for g in GROUPS:
                groups = fig["threads"]
                own_groups[label][g].append(groups["off"][g][0] - groups["bare"][g][0])
            own_gc[label].append(fig["gc"]["off"][0] - fig["gc"]["bare"][0])
            print(f"repeat {r} {label}: own client {own[label][-1]:.2f} ms/segment "
                  f"(flow thread {own_thread[label][-1]:.2f}), "
                  f"server extra {extra_server[label][-1]:.2f} ms/segment; by thread group "
                  + ", ".join(f"{g} {own_groups[label][g][-1]:.2f}" for g in GROUPS)
                  + f" (garbage collection in any: {own_gc[label][-1]:.2f})",
                  flush=True)
    print(f"segments={args.segments} concurrency={args.concurrency} repeats={args.repeat} "
          f"gc={args.gc} db={'postgresql' if args.pg else 'sqlite'}; "
          f"trees rotated per repeat, one fresh ephemeral Prefect API per child")
    print(f"load average at start: {load_start}; at end: {load_average()}")
    print("ms per segment, min / median / max over repeats:")
    print(f"{'tree':10s} {'own client CPU':>24s} {'own flow-thread CPU':>24s} "
          f"{'server CPU added':>24s} {'bare loop client+server':>26s}")
    for label, _ in trees:
        print(f"{label:10s} {spread(own[label]):>24s} {spread(own_thread[label]):>24s} "
              f"{spread(extra_server[label]):>24s} {spread(bare_total[label]):>26s}")
    print("own client CPU by thread group (rungflow minus bare, paired), ms per segment, "
          "min / median / max:")
    print(f"{'tree':10s} " + " ".join(f"{g:>22s}" for g in GROUPS) + f" {'(GC, in any)':>22s}")
    for label, _ in trees:
        print(f"{label:10s} " + " ".join(f"{spread(own_groups[label][g]):>22s}" for g in GROUPS)
              + f" {spread(own_gc[label]):>22s}")
    base = trees[0][0]
    for label, _ in trees[1:]:
        before = statistics.median(own[base])
        ratio = statistics.median(own[label]) / before if before else float("nan")
        print(f"own client CPU, {label} / {base}: {ratio:.2f}x")


if __name__ == "__main__":
    main()
