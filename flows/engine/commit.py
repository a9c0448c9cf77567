"""Decide, then commit with a concurrency check: the one place it is written.

Every writer that acts on the scheduler's decisions (the flow's runner, the
job API, ``rungflow retry``) goes through :func:`decide_and_commit`:

1. check that the facts are still valid on the state it has folded (a result
   is only appended while its segment is still held);
2. in ONE write transaction, append the facts, fold them, ask the scheduler
   and append (and fold) its decisions, each right after the previous;
3. if another writer appended first, nothing was written or folded: catch up
   with the log and start again from 1, on the new state. The runner does
   that inside the transaction when it can (it finds the newer events at its
   first append, folds them, checks ``valid`` again and decides again); its
   transactions take the experiment's write lock first, so that this second
   attempt cannot lose to another runner.

So a result and the decisions it triggers (a finished trial's ``Stop``, the
next ``RunSegment``) commit together, and no decision is ever appended on a
stale view.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from schedulers import Action, Event
from storage import ConcurrencyError

if TYPE_CHECKING:
    from flows.engine.runner import ExperimentRunner

__all__ = ["Committed", "decide_and_commit"]


@dataclass(frozen=True)
class Committed:
    """What :func:`decide_and_commit` wrote.

    Attributes:
        recorded: Whether the facts were appended (False only when ``valid``
            said no; with no facts, True).
        actions: The decisions appended after them, in order.
    """

    recorded: bool
    actions: list[Action] = field(default_factory=list)


def decide_and_commit(
    runner: ExperimentRunner,
    facts: Sequence[Event] = (),
    *,
    runs: int | None = 0,
    valid: Callable[[], bool] | None = None,
) -> Committed:
    """Append ``facts`` and the decisions they lead to, atomically; retry lost races.

    Args:
        runner: The folded state and the store to append to.
        facts: Events to record first (a result, a claim of a queued job...).
        runs: Decide after the facts: ``Pause``/``Stop`` decisions and up to
            ``runs`` ``RunSegment`` ones (and ``Done`` once nothing runs
            anywhere). None: record the facts only, decide nothing.
        valid: Checked on the current state before every attempt; when it
            returns False nothing is appended (``recorded`` False).

    Returns:
        What was appended.
    """
    while True:
        if valid is not None and not valid():
            return Committed(False)
        try:
            actions = runner.transact(facts, runs, valid)
        except ConcurrencyError:
            runner.catch_up()
            continue
        if actions is None:  # others' events, folded inside the transaction, made it invalid
            return Committed(False)
        return Committed(True, actions)
