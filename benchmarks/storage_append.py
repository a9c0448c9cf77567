"""Measure EventStore append throughput under thread contention (not a test).

Usage::

    python benchmarks/storage_append.py [URL] [--threads 8] [--appends 200]

URL defaults to a temporary SQLite file. ``--single N`` measures instead the
single-writer cost per result (CPU and wall ms), apart from the contended
storm. Each thread appends one event at a time with retry on
ConcurrencyError, like the flow's writers; the script prints events/s and
the number of lost races.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa

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


def single_writer(store: EventStore, n: int) -> tuple[float, float]:
    """Per-result cost of one uncontended writer: (CPU ms, wall ms) per append.

    A result is what the flow appends per segment: a ``SegmentFinished`` of an
    existing trial (its projection rows are updated in the same transaction).
    """
    store.create_experiment("single", {})
    seq = store.append("single", [TrialCreated("t0", {"lr": 0.1}),
                                  SegmentStarted("t0", 0.0, 1.0, {"lr": 0.1})], 1)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for i in range(n):
        report = {"resource": float(i + 1), "loss": 1.0 / (i + 1)}
        event = SegmentFinished("t0", float(i), float(i + 1), (report,), report)
        seq = store.append("single", [event], seq)
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    return 1000 * cpu / n, 1000 * wall / n


@contextmanager
def _scratch(url: str | None) -> Iterator[str | None]:
    """A scratch PostgreSQL database beside ``url``'s (never migrate a shared one)."""
    if url is None or not url.startswith("postgresql"):
        yield url
        return
    parsed = sa.make_url(url)
    db = f"rungflow_append_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(parsed, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{db}"'))
    try:
        yield parsed.set(database=db).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)'))
        admin.dispose()


def main() -> None:
    """Run the benchmark and print one summary line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", nargs="?")
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--appends", type=int, default=200)
    parser.add_argument("--single", type=int, default=0, metavar="N",
                        help="instead: N results appended by one uncontended writer")
    args = parser.parse_args()
    if args.single:
        with tempfile.TemporaryDirectory() as tmp, _scratch(args.url) as scratch:
            url = scratch or f"sqlite:///{Path(tmp) / 'bench.db'}"
            with EventStore(url) as store:
                if store.has_experiment("single"):
                    store.delete_experiment("single")
                cpu, wall = single_writer(store, args.single)
                store.delete_experiment("single")
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
