"""Keep the cyclic garbage collector's full passes off a long run's hot path.

A run at 10,000 trials holds ~250k long-lived objects (the scheduler's
folded state). CPython's full collection walks every tracked object, so each
one pauses the decision loop for tens of milliseconds, and they keep coming
as the state grows. :func:`gc.freeze` moves every object alive now into a
permanent generation the collector never walks; it is O(1).

:class:`HeapFreezer` freezes the heap after a replay and then every
:data:`FREEZE_EVERY_EVENTS` events folded live, so a full pass only ever
walks what was allocated since the last freeze. The price: a reference cycle
that becomes garbage after it was frozen is not reclaimed until the process
ends (objects freed by reference counting, nearly all of them, are freed as
usual). The scheduler state is acyclic, and a run that ends unfreezes.
"""

from __future__ import annotations

import gc

__all__ = ["FREEZE_EVERY_EVENTS", "HeapFreezer"]

#: Events folded between two freezes during a run.
FREEZE_EVERY_EVENTS = 1000


class HeapFreezer:
    """Counts folded events and freezes the heap every ``every`` of them.

    Args:
        every: Events between freezes (None or 0: never, only :meth:`freeze`).
    """

    def __init__(self, every: int | None = FREEZE_EVERY_EVENTS) -> None:
        self.every = every or 0
        self.freezes = 0
        self._since = 0
        self._host_frozen = 0

    def freeze(self) -> None:
        """Freeze every object alive now (after a replay: the whole folded state)."""
        if not self.freezes:
            # gc.unfreeze() is all or nothing: remember whether the host
            # application (a notebook, a worker that calls tune) froze
            # objects of its own before us, so release() does not thaw them.
            self._host_frozen = gc.get_freeze_count()
        gc.freeze()
        self.freezes += 1
        self._since = 0

    def tick(self, events: int = 1) -> None:
        """``events`` more were folded; freeze when ``every`` have been since the last time."""
        self._since += events
        if self.every and self._since >= self.every:
            self.freeze()

    def release(self) -> None:
        """Hand the frozen objects back to the collector (at the end of a run).

        Only when nothing was frozen before this freezer's first freeze: the
        host's own frozen objects stay frozen, at the price of this run's
        staying frozen too (reclaimed by reference counting, as while frozen).
        """
        if self.freezes:
            if not self._host_frozen:
                gc.unfreeze()
            self.freezes = 0
