"""Measure EventStore append throughput under thread contention (not a test).

Usage::

    python benchmarks/storage_append.py [URL] [--threads 8] [--appends 200]

URL defaults to a temporary SQLite file. Each thread appends one event at a
time with retry on ConcurrencyError, like the flow's writers; the script
prints events/s and the number of lost races.
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from schedulers.events import TrialCreated, TrialPaused
from storage import ConcurrencyError, EventStore


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


def main() -> None:
    """Run the benchmark and print one summary line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", nargs="?")
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--appends", type=int, default=200)
    args = parser.parse_args()
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
