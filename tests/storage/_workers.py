"""Functions run in spawned worker processes (must be importable by name)."""

from __future__ import annotations

import contextlib

from schedulers.events import TrialCreated, TrialPaused
from storage import ConcurrencyError, EventStore, ExperimentExistsError


def append_with_retry(store: EventStore, name: str, event: TrialCreated | TrialPaused) -> int:
    """Append one event, re-reading the last seq after each lost race; return #conflicts."""
    conflicts = 0
    while True:
        try:
            store.append(name, [event], expected_seq=store.last_seq(name))
            return conflicts
        except ConcurrencyError:
            conflicts += 1


def process_worker(url: str, name: str, worker: int, n: int) -> int:
    """Open the store (maybe creating schema and experiment concurrently) and append ``n`` events.

    The worker's first event creates trial ``w<worker>``; the rest pause it at
    resources 1..n-1, so the final log shows each worker's events in order.
    """
    store = EventStore(url)
    try:
        with contextlib.suppress(ExperimentExistsError):
            store.create_experiment(name, {"workers": True})
        tid = f"w{worker}"
        conflicts = append_with_retry(store, name, TrialCreated(tid, {"worker": worker}))
        for i in range(1, n):
            conflicts += append_with_retry(store, name, TrialPaused(tid, float(i)))
        return conflicts
    finally:
        store.close()
