"""PBT decision latency, this tree against older ones, in one run.

``pbt_latency.py`` can only time the scheduler code it imports. To put a
before and an after side by side, this driver runs this tree's
``pbt_latency.py --repeats 1`` in a fresh child per (tree, repeat), with
``PYTHONPATH`` pointing at each source tree in turn and the order of the
trees rotated per repeat, so both see the same machine load.

A baseline tree is a ``git archive`` of an older commit, for example::

    mkdir -p /tmp/base && git archive 52e99e7 | tar -x -C /tmp/base
    python benchmarks/pbt_latency_ab.py --tree before=/tmp/base --tree after=. \\
        --population 10000 --generations 2 --repeat 3

Printed per tree and scheduler, min / median / max over repeats: the wall
p50, p95 and max per decision, the thread-CPU p95 and max (what the decision
costs, without the time the OS ran other processes), and the last decision
(``Done``). The load average is printed at the start and the end.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _cpu import load_average, spread

HERE = Path(__file__).resolve().parent
COLUMNS = ("p50", "p95", "max", "cpu_p95", "cpu_max", "done")


def _tree(arg: str) -> tuple[str, Path]:
    label, sep, path = arg.partition("=")
    if not sep or not label or not path:
        raise argparse.ArgumentTypeError(f"--tree must be LABEL=PATH, got {arg!r}")
    root = Path(path).resolve()
    if not (root / "schedulers" / "pbt.py").is_file():
        raise argparse.ArgumentTypeError(f"--tree {label}: {root} holds no schedulers/pbt.py")
    return label, root


def _run_once(root: Path, extra: list[str]) -> dict[str, list[dict[str, float]]]:
    with tempfile.TemporaryDirectory(prefix="rungflow-pbt-ab-") as tmp:
        out = Path(tmp) / "figures.json"
        env = {**os.environ, "PYTHONPATH": str(root)}
        done = subprocess.run(
            [
                sys.executable,
                str(HERE / "pbt_latency.py"),
                "--repeats",
                "1",
                "--json",
                str(out),
                *extra,
            ],
            env=env,
            cwd=root,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        if done.returncode != 0:
            tail = "\n".join(done.stderr.splitlines()[-20:])
            raise SystemExit(f"error: pbt_latency.py failed in {root}:\n{tail}")
        figures: dict[str, list[dict[str, float]]] = json.loads(out.read_text())
        return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--tree",
        type=_tree,
        action="append",
        required=True,
        help="LABEL=PATH of a source tree; the first is the baseline.",
    )
    parser.add_argument("--population", type=int, default=10000)
    parser.add_argument("--generations", type=int, default=2)
    parser.add_argument("--gc", default="runner", choices=["default", "freeze-once", "runner"])
    parser.add_argument(
        "--only", nargs="+", default=["pbt async truncation", "pbt sync truncation", "random"]
    )
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    trees: list[tuple[str, Path]] = args.tree
    extra = [
        "--population",
        str(args.population),
        "--generations",
        str(args.generations),
        "--gc",
        args.gc,
        "--only",
        *args.only,
    ]
    # figures[label][scheduler][column] = one value per repeat
    figures: dict[str, dict[str, dict[str, list[float]]]] = {label: {} for label, _ in trees}
    load_start = load_average()
    for r in range(args.repeat):
        for label, root in trees[r % len(trees) :] + trees[: r % len(trees)]:
            for name, runs in _run_once(root, extra).items():
                row = figures[label].setdefault(name, {c: [] for c in COLUMNS})
                for c in COLUMNS:
                    row[c].append(runs[0][c])
                print(
                    f"repeat {r} {label:8s} {name:34s} "
                    + " ".join(f"{c} {runs[0][c]:.3f}" for c in COLUMNS),
                    flush=True,
                )
    print(
        f"population {args.population}, {args.generations} generations, gc {args.gc}, "
        f"repeats {args.repeat}; trees rotated per repeat, one child per (tree, repeat)"
    )
    print(f"load average at start: {load_start}; at end: {load_average()}")
    print("ms per decision, min / median / max over repeats:")
    for name in args.only:
        print(f"{name}")
        print(f"  {'tree':8s} " + " ".join(f"{c:>24s}" for c in COLUMNS))
        for label, _ in trees:
            row = next((v for k, v in figures[label].items() if k.startswith(name)), None)
            if row is not None:
                print(
                    f"  {label:8s} " + " ".join(f"{spread(row[c], '{:.3f}'):>24s}" for c in COLUMNS)
                )


if __name__ == "__main__":
    main()
