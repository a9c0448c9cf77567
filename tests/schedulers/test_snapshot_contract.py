"""Snapshot + tail == full fold, for every scheduler, at random cut points.

Resume loads the latest snapshot of a scheduler's folded state and folds the
log's tail (see :mod:`storage.snapshots`); the log stays the truth, so the
state and the next decision must be exactly those of a full fold.
"""

from __future__ import annotations

import numpy as np

from schedulers.simulate import simulate
from storage.snapshots import dumps, loads
from tests.schedulers.conftest import make, objective


def test_snapshot_plus_tail_equals_full_fold(scheduler_name: str) -> None:
    result = simulate(make(scheduler_name, seed=5), objective, max_concurrency=3)
    points = [p for p in result.decision_points if p > 1]
    rng = np.random.default_rng(0)
    for point in rng.choice(points, size=min(4, len(points)), replace=False):
        cut = int(rng.integers(1, point + 1))
        full = make(scheduler_name, seed=5)
        for event in result.events[:point]:
            full.tell(event)
        head = make(scheduler_name, seed=5)
        for event in result.events[:cut]:
            head.tell(event)
        resumed = loads(dumps(head))
        for event in result.events[cut:point]:
            resumed.tell(event)
        assert resumed.trials == full.trials, f"cut {cut}, point {point}"
        assert resumed.n_events == full.n_events
        assert resumed.finished == full.finished
        assert resumed.status_extras() == full.status_extras()
        assert resumed.ask(1) == full.ask(1), f"cut {cut}, point {point}"
