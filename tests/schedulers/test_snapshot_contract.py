"""Snapshot + tail == full fold, for every scheduler, at random cut points.

Resume loads the latest snapshot of a scheduler's folded state and folds the
log's tail (see :mod:`storage.snapshots`); the log stays the truth, so the
state and the next decision must be exactly those of a full fold.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from schedulers import create_scheduler
from schedulers.base import Scheduler
from schedulers.simulate import simulate
from storage.snapshots import dumps, loads
from tests.schedulers.conftest import SPACE, available, make, objective

# PBTReplay trains one trial, so the rest of the contract suite does not fit
# it; its snapshots must still fold like the others'.
_POLICY = [(0.0, {"lr": 0.01, "width": 16, "act": "relu"}),
           (4.0, {"lr": 0.1, "width": 16, "act": "tanh"})]


def _make(name: str, seed: int) -> Scheduler:
    if name == "pbt_replay":
        return create_scheduler(name, space=SPACE, metric="loss", seed=seed, max_t=9,
                                policy=_POLICY)
    return make(name, seed=seed)


@pytest.fixture(params=[*available(), "pbt_replay"])
def scheduler_name(request: pytest.FixtureRequest) -> Any:
    return request.param


@pytest.mark.parametrize("asked", [False, True], ids=["told", "asked"])
def test_snapshot_plus_tail_equals_full_fold(scheduler_name: str, asked: bool) -> None:
    """A scheduler's snapshot at a random cut plus the tail decides as a full fold.

    ``asked``: a live runner snapshots a scheduler it has also asked (caches,
    lazily fitted models): that state + the tail must still decide as a full
    fold does.
    """
    result = simulate(_make(scheduler_name, 5), objective, max_concurrency=3)
    points = [p for p in result.decision_points if p > 1]
    rng = np.random.default_rng(int(asked))
    n_asked = 2 if asked else 1
    for point in rng.choice(points, size=min(4, len(points)), replace=False):
        cut = int(rng.integers(1, point + 1))
        full = _make(scheduler_name, 5)
        for event in result.events[:point]:
            full.tell(event)
        head = _make(scheduler_name, 5)
        for i, event in enumerate(result.events[:cut], 1):
            head.tell(event)
            if asked and i in result.decision_points:
                head.ask(2)
        resumed = loads(dumps(head))
        for event in result.events[cut:point]:
            resumed.tell(event)
        assert resumed.trials == full.trials, f"cut {cut}, point {point}"
        assert resumed.n_events == full.n_events
        assert resumed.finished == full.finished
        assert resumed.status_extras() == full.status_extras()
        assert resumed.ask(n_asked) == full.ask(n_asked), f"cut {cut}, point {point}"
