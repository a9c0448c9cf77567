"""Checkpoint retention: delete what no policy keeps, never what may be restored.

Every finished segment writes a checkpoint, so a long PBT or HyperBand run
fills the blob store with weights nobody will read again. Retention deletes a
checkpoint only when all of these hold:

* it was recorded by a ``SegmentFinished`` in the log (a file the log does not
  know yet is a segment still being written, or a crashed attempt that its
  retry overwrites: both are left alone);
* it is not among the newest ``keep_last`` checkpoints of its trial, in *log*
  order (after a PBT exploit a trial's newest checkpoint may cover a lower
  resource than an older one, so names cannot be sorted);
* it is not in ``scheduler.live_checkpoints()`` (latest of running and paused
  trials, PBT donors, a pending retry's source);
* no started-but-unfinished segment restores from it (``restore_from`` of an
  open ``SegmentStarted``, including ones appended by other flow runs since
  this runner last read the log).

The sweep runs in the flow process between results. It is throttled: it runs
once ``RUNGFLOW_RETAIN_EVERY`` new checkpoints have been recorded (no new
checkpoint, nothing new to delete), and costs one read of the log's tail,
only when something is doomed, plus one ``delete`` per doomed key: it never
lists the store, except once per process to learn what an earlier run left
behind. The ledger of recorded checkpoints is the runner's own fold (kept in
its snapshots), so retention never re-reads the log either.

Why deleting between results is safe: the runner decides on this same thread,
and every segment it started is folded into the ledger's open restores
before ``on_progress`` runs. A decision can only restore from a checkpoint the
scheduler considers live or a trial's latest, and both are kept.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from schedulers import Event, SegmentFailed, SegmentFinished, SegmentStarted
from storage import CheckpointStore

__all__ = ["CheckpointLedger", "Retention", "RetentionTarget"]

log = logging.getLogger("rungflow")


class _Record(Protocol):
    @property
    def event(self) -> Event: ...


class _Log(Protocol):
    def read(
        self, name: str, after_seq: int = ..., *, kinds: Sequence[str] | None = ...
    ) -> Sequence[_Record]: ...


class _LiveCheckpoints(Protocol):
    def live_checkpoints(self) -> set[str]: ...


class RetentionTarget(Protocol):
    """What retention reads from a :class:`flows.engine.runner.ExperimentRunner`."""

    name: str
    seq: int
    #: Checkpoints the folded log recorded, and how many so far.
    ledger: CheckpointLedger
    n_checkpoints: int

    @property
    def store(self) -> _Log: ...

    @property
    def scheduler(self) -> _LiveCheckpoints: ...


@dataclass
class CheckpointLedger:
    """Checkpoints of one experiment as the event log knows them.

    Fold events with :meth:`tell` (in log order); :meth:`doomed` then says
    which recorded checkpoints no policy keeps.

    Attributes:
        order: Per trial, the checkpoint keys its finished segments recorded,
            oldest first (log order).
        open_restores: Per trial, the key an open segment restores from.
        touched: Trials whose ``order`` changed since its consumer (one
            :class:`Retention`) last cleared it; not part of the fold's state.
    """

    order: dict[str, list[str]] = field(default_factory=dict)
    open_restores: dict[str, str] = field(default_factory=dict)
    touched: set[str] = field(default_factory=set, compare=False, repr=False)

    def tell(self, event: Event) -> None:
        """Fold one event."""
        if isinstance(event, SegmentStarted):
            if event.restore_from is not None:
                self.open_restores[event.trial_id] = event.restore_from.key
            else:
                self.open_restores.pop(event.trial_id, None)
        elif isinstance(event, SegmentFinished):
            self.open_restores.pop(event.trial_id, None)
            if event.checkpoint is not None:
                keys = self.order.setdefault(event.trial_id, [])
                # A key recorded twice (cannot happen with seq-suffixed names,
                # but older logs may hold it) counts at its newest position.
                with contextlib.suppress(ValueError):
                    keys.remove(event.checkpoint.key)
                keys.append(event.checkpoint.key)
                self.touched.add(event.trial_id)
        elif isinstance(event, SegmentFailed):
            self.open_restores.pop(event.trial_id, None)

    def known(self) -> set[str]:
        """Every checkpoint key the log recorded."""
        return {key for keys in self.order.values() for key in keys}

    def doomed(self, keep_last: int, keep: Iterable[str] = ()) -> set[str]:
        """Recorded keys outside every trial's newest ``keep_last``, ``keep``
        and the sources of open segments.

        Args:
            keep_last: Newest checkpoints kept per trial (>= 1: a trial's
                latest checkpoint is what a promotion or an async PBT exploit
                of a finished member restores).
            keep: Keys that must survive, e.g. ``scheduler.live_checkpoints()``.
        """
        return self.unprotected(self.excess(keep_last), keep)

    def unprotected(self, excess: Mapping[str, Iterable[str]], keep: Iterable[str]) -> set[str]:
        """The keys of ``excess`` (see :meth:`excess`) that neither ``keep`` nor
        an open segment's source protects."""
        protected = set(keep) | set(self.open_restores.values())
        return {k for keys in excess.values() for k in keys if k not in protected}

    def excess(self, keep_last: int, trials: Iterable[str] | None = None) -> dict[str, list[str]]:
        """Per trial (of ``trials``, default all), its keys outside its newest ``keep_last``."""
        if isinstance(keep_last, bool) or not isinstance(keep_last, int) or keep_last < 1:
            raise ValueError(f"keep_last is {keep_last!r}, but must be an integer >= 1")
        out: dict[str, list[str]] = {}
        for trial in self.order if trials is None else trials:
            keys = self.order.get(trial, ())
            if len(keys) > keep_last:
                out[trial] = list(keys[: len(keys) - keep_last])
        return out


class Retention:
    """An ``on_progress`` hook that prunes the runner's checkpoints, throttled.

    Args:
        checkpoint_root: Blob-store root the workers write to.
        keep_last: Newest checkpoints kept per trial (``RUNGFLOW_KEEP_LAST``).
        every: Sweep once this many new checkpoints were recorded
            (``RUNGFLOW_RETAIN_EVERY``).

    Example:
        >>> from flows.engine.retention import CheckpointLedger
        >>> from schedulers import CheckpointRef, SegmentFinished
        >>> ledger = CheckpointLedger()
        >>> for i in range(3):
        ...     ref = CheckpointRef(f"e/t0/{i}-{i + 1}.s{i}.ckpt", 1, "x", "t0", i + 1)
        ...     ledger.tell(SegmentFinished("t0", i, i + 1, (), {}, checkpoint=ref))
        >>> sorted(ledger.doomed(keep_last=2))
        ['e/t0/0-1.s0.ckpt']
    """

    def __init__(self, checkpoint_root: str, *, keep_last: int = 2, every: int = 10) -> None:
        if every < 1:
            raise ValueError(f"every is {every!r}, but must be >= 1")
        CheckpointLedger().doomed(keep_last)  # validate keep_last early
        self.store = CheckpointStore(checkpoint_root)
        self.keep_last = keep_last
        self.every = every
        self.deleted: list[str] = []
        self.sweeps = 0
        self._swept_at: int | None = None  # runner.n_checkpoints at the last sweep
        self._gone: set[str] | None = None  # recorded keys no longer on disk
        self._ledger: CheckpointLedger | None = None  # the ledger of the last sweep
        self._held: set[str] = set()  # trials whose excess keys a policy kept

    def __call__(self, runner: RetentionTarget) -> None:
        """Sweep when ``every`` checkpoints were recorded since the last sweep."""
        if self._swept_at is None:
            self._swept_at = 0  # a resumed run sweeps after its first `every` too
        if runner.n_checkpoints - self._swept_at >= self.every:
            self.sweep(runner)

    def sweep(self, runner: RetentionTarget) -> list[str]:
        """Delete every recorded checkpoint no policy keeps; return the keys.

        Called by the throttle, and once more when the run ends. Looks only at
        the trials that recorded a checkpoint since the last sweep and at those
        whose excess keys a policy kept then (a key becomes deletable either
        way, nothing else changes): at 10k trials a scan of every trial cost
        ~4 ms per sweep on the flow's thread. The first sweep, and any after
        the runner rebuilt its ledger (a reload), scan every trial.
        """
        ledger = runner.ledger
        self.sweeps += 1
        self._swept_at = runner.n_checkpoints
        if self._gone is None:
            # Once per process: learn which recorded keys an earlier run
            # already deleted, so a resumed run does not delete them again.
            known = ledger.known()
            self._gone = known - set(self.store.keys(runner.name))
        if ledger is not self._ledger:
            excess = ledger.excess(self.keep_last)
        else:
            excess = ledger.excess(self.keep_last, ledger.touched | self._held)
        self._ledger = ledger
        ledger.touched.clear()
        gone = self._gone
        excess = {t: [k for k in keys if k not in gone] for t, keys in excess.items()}
        excess = {t: keys for t, keys in excess.items() if keys}
        doomed: set[str] = set()
        if excess:
            # Only now: live_checkpoints() is itself O(trials) for some schedulers.
            doomed = ledger.unprotected(excess, runner.scheduler.live_checkpoints())
        if doomed:
            # Other flow runs on this experiment may have started segments since
            # this runner last read the log: their sources must survive too.
            newer = CheckpointLedger(open_restores=dict(ledger.open_restores))
            for record in runner.store.read(runner.name, after_seq=runner.seq,
                                            kinds=_RESTORE_KINDS):
                newer.tell(record.event)
            doomed -= set(newer.open_restores.values())
        out = sorted(doomed)
        for key in out:
            self.store.delete(key)  # validates the key: it came from the log
            self._gone.add(key)
        # Trials with an excess key a policy kept this time: look again next time.
        self._held = {t for t, keys in excess.items() if any(k not in doomed for k in keys)}
        self.deleted.extend(out)
        if out:
            log.debug("retention deleted %d checkpoint(s) of %s", len(out), runner.name)
        return out

    def summary(self) -> dict[str, Any]:
        """Counts for logs and run summaries."""
        return {"sweeps": self.sweeps, "deleted": len(self.deleted), "keep_last": self.keep_last}


#: The events that open or close a segment's restore (the tail read of a sweep).
_RESTORE_KINDS = ("SegmentStarted", "SegmentFinished", "SegmentFailed")
