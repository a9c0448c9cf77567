"""The runner's collector policy: freeze the heap every N folded events."""

from __future__ import annotations

import gc

from flows.engine.gc_policy import HeapFreezer


def test_heap_freezer_freezes_every_n_events_and_releases() -> None:
    freezer = HeapFreezer(every=10)
    try:
        freezer.tick(9)
        assert freezer.freezes == 0
        kept = [object() for _ in range(3)]  # noqa: F841 - alive across the freeze
        before = gc.get_freeze_count()
        freezer.tick(1)
        assert freezer.freezes == 1 and gc.get_freeze_count() > before
        freezer.tick(25)  # one freeze per call at most, the count restarts
        assert freezer.freezes == 2
    finally:
        freezer.release()
    assert freezer.freezes == 0 and gc.get_freeze_count() == 0


def test_never_freezes_without_a_period() -> None:
    freezer = HeapFreezer(every=None)
    freezer.tick(10**6)
    assert freezer.freezes == 0


def test_release_leaves_the_hosts_own_frozen_objects_frozen() -> None:
    # gc.unfreeze() thaws everything: a host that froze its own heap before
    # the run must find it still frozen after the run.
    gc.freeze()
    host = gc.get_freeze_count()
    try:
        freezer = HeapFreezer(every=1)
        freezer.tick(1)
        assert gc.get_freeze_count() >= host
        freezer.release()
        assert freezer.freezes == 0 and gc.get_freeze_count() >= host > 0
    finally:
        gc.unfreeze()
