"""The table of ``rungflow status`` from the summary read == from the full view.

:func:`flows.engine.status.experiment_summary` reads the ``trials`` projection,
a few event kinds and one sum over ``results`` (no snapshot, no results scan);
what the table prints from it must equal what it prints from
:func:`flows.engine.status.experiment_status` on the same store: the same
leaderboard rows, failed rows, waiting trials, best trial, counts and state,
for every scheduler, on every backend, mid-run (open segments) and finished,
with short appends (per-event projection statements) and long ones (bulk).
"""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa

from flows.cli._common import console
from flows.cli.status import last_metrics, print_status, ranked_trials
from flows.engine.status import experiment_status, experiment_summary
from schedulers.events import SegmentFailed, SegmentStarted, TrialRetried
from storage import EventStore
from storage.models import RESULTS
from tests.flows.engine.test_status_projections import (
    CASES,
    NAME,
    make_spec,
    simulated_log,
    write,
)

SAME_KEYS = ("experiment", "state", "reason", "scheduler", "metric", "mode", "n_trials",
             "counts", "failures", "checkpoints")


def printed(status: dict[str, Any], limit: int | None) -> str:
    with console.capture() as captured:
        print_status(status, limit)
    return captured.get()


def assert_same_table(store: EventStore) -> dict[str, Any]:
    full = experiment_status(store, NAME, checkpoints="/nonexistent")
    fast = experiment_summary(store, NAME, checkpoints="/nonexistent")
    for key in SAME_KEYS:
        assert fast[key] == full[key], key
    # Summed in another order (results, failures, open segments): equal as printed.
    assert fast["resource_used"] == pytest.approx(full["resource_used"], rel=1e-12)
    assert f"{fast['resource_used']:g}" == f"{full['resource_used']:g}"
    leaderboard = [
        [(t["trial_id"], t["status"], t["resource"], value, t["config"])
         for t, value in ranked_trials(view)]
        for view in (fast, full)
    ]
    assert leaderboard[0] == leaderboard[1]
    rows = [
        [(t["trial_id"], t["status"], t["resource"], t["config"], t.get("error"),
          t.get("reason"), last_metrics(t)) for t in view["trials"]]
        for view in (fast, full)
    ]
    assert rows[0] == rows[1]
    best = None if full["best"] is None else {
        k: v for k, v in full["best"].items() if k != "checkpoint"
    }
    assert fast["best"] == best
    for limit in (10, None):
        assert printed(fast, limit) == printed(full, limit)
    return fast


@pytest.mark.parametrize("scheduler", list(CASES))
@pytest.mark.parametrize("cut", [0.3, 0.7, 1.0])
def test_summary_table_equals_full_view(store: EventStore, scheduler: str, cut: float) -> None:
    spec = make_spec(scheduler)
    events = simulated_log(spec)
    head = int(len(events) * cut)
    # Short appends take the per-event projection path, long ones the bulk one.
    write(store, spec, events[:head], batch=1 if scheduler in ("random", "pbt") else 50)
    fast = assert_same_table(store)
    assert fast["n_trials"] > 0
    if cut == 1.0:
        assert fast["best"] is not None
    else:
        assert fast["state"] == "interrupted"  # open segments, nobody holds a lease


@pytest.mark.parametrize("batch", [1, 10])
def test_summary_after_a_retry(store: EventStore, batch: int) -> None:
    """A retried trial: paused while only the marker is written, running after it."""
    spec = make_spec("random")
    events = simulated_log(spec)
    seq = write(store, spec, events, batch=batch)
    failed = next(e for e in events if isinstance(e, SegmentFailed) and e.final)
    started = next(
        e for e in events
        if isinstance(e, SegmentStarted) and e.trial_id == failed.trial_id
        and e.start == failed.start
    )
    seq = store.append(NAME, [TrialRetried(failed.trial_id, failed.start, failed.stop)],
                       expected_seq=seq)
    fast = assert_same_table(store)
    assert next(t for t in fast["trials"] if t["trial_id"] == failed.trial_id)["status"] == (
        "paused"
    )
    store.append(NAME, [started], expected_seq=seq)
    fast = assert_same_table(store)
    assert next(t for t in fast["trials"] if t["trial_id"] == failed.trial_id)["status"] == (
        "running"
    )


def test_summary_of_lost_projections_is_the_full_view(store: EventStore) -> None:
    """Projections missing rows (an older rungflow, a hand edit): the full view, rebuilt."""
    spec = make_spec("asha")
    write(store, spec, simulated_log(spec), batch=40)
    expected = printed(experiment_status(store, NAME, checkpoints="/nonexistent"), 10)
    engine = sa.create_engine(store._url)  # behind the store's back
    with engine.begin() as conn:
        conn.execute(sa.delete(RESULTS).where(RESULTS.c.seq > 30))
    engine.dispose()
    assert printed(experiment_summary(store, NAME, checkpoints="/nonexistent"), 10) == expected
    assert_same_table(store)  # rebuilt by that read
