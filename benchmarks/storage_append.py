"""Measure EventStore append throughput under thread contention (not a test).

Usage::

    python benchmarks/storage_append.py [URL] [--threads 8] [--appends 200]

URL defaults to a temporary SQLite file. ``--single N`` measures instead the
single-writer cost per result (CPU and wall ms), apart from the contended
storm: through ``EventStore.append`` (a pool checkout per result) and, where
the code has it, through an ``EventWriter`` (the connection a runner holds).
With ``--baseline DIR`` (a source tree, e.g. a ``git archive`` of main) each
figure is also taken with that code, each in a fresh interpreter, variants
interleaved over ``--repeats``; min/median/max and the load average are
printed. Each thread appends one event at a time with retry on
ConcurrencyError, like the flow's writers; the script prints events/s and
the number of lost races.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

from _pg import scratch_database

from schedulers.events import SegmentFinished, SegmentStarted, TrialCreated, TrialPaused
from storage import ConcurrencyError, EventStore, display_url


def _writer(store: EventStore, worker: int, n: int, barrier: threading.Barrier) -> int:
    barrier.wait()
    conflicts = 0
    for i in range(n):
        event = (
            TrialCreated(f"w{worker}", {"i": worker}) if i == 0 else TrialPaused(f"w{worker}", i)
        )
        while True:
            try:
                store.append("bench", [event], store.last_seq("bench"))
                break
            except ConcurrencyError:
                conflicts += 1
    return conflicts


def single_writer(store: EventStore, n: int, path: str = "append") -> tuple[float, float]:
    """Per-result cost of one uncontended writer: (CPU ms, wall ms) per append.

    A result is what the flow appends per segment: a ``SegmentFinished`` of an
    existing trial (its projection rows are updated in the same transaction).
    ``path`` is ``append`` (``EventStore.append``) or ``writer`` (an
    ``EventWriter``, the runner's held connection). 50 warm-up results first.
    """
    name = f"single_{path}"
    store.create_experiment(name, {})
    seq = store.append(name, [TrialCreated("t0", {"lr": 0.1}),
                              SegmentStarted("t0", 0.0, 1.0, {"lr": 0.1})], 1)
    writer = store.writer() if path == "writer" else None  # type: ignore[attr-defined]
    append = writer.append if writer is not None else store.append
    warm = 50
    for i in range(n + warm):
        if i == warm:
            cpu0, wall0 = time.process_time(), time.perf_counter()
        report = {"resource": float(i + 1), "loss": 1.0 / (i + 1)}
        event = SegmentFinished("t0", float(i), float(i + 1), (report,), report)
        seq = append(name, [event], seq)
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    if writer is not None:
        writer.close()
    store.delete_experiment(name)
    return 1000 * cpu / n, 1000 * wall / n


def _child(url: str, n: int) -> None:
    """One measurement per write path this code has, printed as JSON."""
    out = {}
    with EventStore(url) as store:
        for path in ("append", "writer"):
            if path == "writer" and not hasattr(store, "writer"):
                continue
            out[path] = single_writer(store, n, path)
    print(json.dumps(out))


def _compare(url: str | None, n: int, baseline: str, repeats: int) -> None:
    """This code vs ``baseline`` in fresh interpreters, interleaved; min/median/max."""
    codes = {"baseline": str(Path(baseline).resolve()),
             "this": str(Path(__file__).resolve().parents[1])}
    rows: dict[tuple[str, str], list[tuple[float, float]]] = {}
    order = list(codes)
    with tempfile.TemporaryDirectory() as tmp, _scratch(url) as scratch:
        for _ in range(repeats):
            for code in order:
                target = scratch or f"sqlite:///{Path(tmp) / f'{code}.db'}"
                env = {**os.environ, "PYTHONPATH": codes[code]}
                out = subprocess.run([sys.executable, __file__, target, "--single", str(n),
                                      "--child"], env=env, check=True, capture_output=True,
                                     text=True)
                for path, figures in json.loads(out.stdout.splitlines()[-1]).items():
                    rows.setdefault((code, path), []).append(tuple(figures))
            order.reverse()
        shown = display_url(scratch) if scratch else "sqlite (temporary file)"
    print(f"{shown}: single writer, {n} results, {repeats} repeats; ms per result, "
          "min / median / max")
    for (code, path), values in rows.items():
        cpu, wall = [v[0] for v in values], [v[1] for v in values]
        print(f"  {code:<9} {path:<7} CPU {min(cpu):.3f} / {statistics.median(cpu):.3f} / "
              f"{max(cpu):.3f}   wall {min(wall):.3f} / {statistics.median(wall):.3f} / "
              f"{max(wall):.3f}")
    base = rows[("baseline", "append")]

    def med(values: list[tuple[float, float]], i: int) -> float:
        return statistics.median(v[i] for v in values)

    for (code, path), values in rows.items():
        if code == "this":
            print(f"  this {path} / baseline append: CPU {med(values, 0) / med(base, 0):.2f}x, "
                  f"wall {med(values, 1) / med(base, 1):.2f}x")
    print(f"  load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}")


@contextmanager
def _scratch(url: str | None) -> Iterator[str | None]:
    """A scratch PostgreSQL database beside ``url``'s (never migrate a shared one)."""
    if url is None or not url.startswith("postgresql"):
        yield url
        return
    with scratch_database(url, "rungflow_append") as scratch:
        yield scratch


def main() -> None:
    """Run the benchmark and print one summary line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", nargs="?")
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--appends", type=int, default=200)
    parser.add_argument("--single", type=int, default=0, metavar="N",
                        help="instead: N results appended by one uncontended writer")
    parser.add_argument("--baseline", help="with --single: source tree to compare with")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.single and args.child:
        _child(args.url, args.single)
        return
    if args.single and args.baseline:
        _compare(args.url, args.single, args.baseline, args.repeats)
        return
    if args.single:
        with tempfile.TemporaryDirectory() as tmp, _scratch(args.url) as scratch:
            url = scratch or f"sqlite:///{Path(tmp) / 'bench.db'}"
            with EventStore(url) as store:
                cpu, wall = single_writer(store, args.single)
            print(f"{display_url(url)}: single writer, {args.single} results: "
                  f"{cpu:.3f} ms CPU, {wall:.3f} ms wall per result "
                  f"(load average {os.getloadavg()[0]:.1f})")
        return
    with tempfile.TemporaryDirectory() as tmp:
        url = args.url or f"sqlite:///{Path(tmp) / 'bench.db'}"
        with EventStore(url) as store:
            if store.has_experiment("bench"):
                store.delete_experiment("bench")
            store.create_experiment("bench", {})
            barrier = threading.Barrier(args.threads)
            start = time.perf_counter()
            with ThreadPoolExecutor(args.threads) as pool:
                futures = [
                    pool.submit(_writer, store, w, args.appends, barrier)
                    for w in range(args.threads)
                ]
                conflicts = sum(f.result() for f in futures)
            elapsed = time.perf_counter() - start
            total = args.threads * args.appends
            assert store.last_seq("bench") == total + 1
            print(
                f"{store.url_for_display}: {total} appends by {args.threads} threads in "
                f"{elapsed:.2f}s ({total / elapsed:.0f}/s), {conflicts} lost races retried"
            )


if __name__ == "__main__":
    main()
