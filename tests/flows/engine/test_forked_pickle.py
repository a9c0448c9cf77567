"""ForkedPickle: a forked child pickles a state, a thread hands the bytes on."""

from __future__ import annotations

import pytest

from flows.engine.forked_pickle import ForkedPickle
from storage.snapshots import dumps


def test_the_child_pickles_the_state_as_it_was_at_the_fork() -> None:
    state = {"trials": {f"t{i}": [i] for i in range(1000)}}
    expected = dumps(state)
    saved: list[tuple[int, bytes]] = []
    job = ForkedPickle.start(state, 7, lambda seq, b: saved.append((seq, b)))
    assert job is not None
    for values in state["trials"].values():  # the flow folds on meanwhile
        values.append(-1)
    state["trials"]["t1000"] = []
    job.join()
    assert saved == [(7, expected)]
    assert job.pickle_seconds is not None and job.fork_seconds > 0


def test_a_snapshot_child_that_fails_saves_nothing(caplog: pytest.LogCaptureFixture) -> None:
    saved: list[tuple[int, bytes]] = []
    job = ForkedPickle.start({"f": lambda: None}, 3, lambda seq, b: saved.append((seq, b)))
    assert job is not None
    job.join()
    assert saved == [] and "snapshot at seq 3 not saved" in caplog.text
    job.cancel()  # after the end: nothing to kill, nothing raised


def test_a_cancelled_snapshot_child_is_reaped() -> None:
    state = {"xs": list(range(200_000))}
    saved: list[tuple[int, bytes]] = []
    job = ForkedPickle.start(state, 5, lambda seq, b: saved.append((seq, b)))
    assert job is not None
    job.cancel()
    assert not job.running
    # Killed while pickling, or done just before: never a partial snapshot.
    assert saved in ([], [(5, dumps(state))])
