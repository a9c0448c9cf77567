"""Exceptions raised by the storage layer.

Every error derives from :class:`StoreError` so callers can catch storage
failures as one family while still telling a lost race
(:class:`ConcurrencyError`, retry after re-reading) from a real fault.
"""

from __future__ import annotations

__all__ = [
    "CheckpointError",
    "CheckpointStoreUnavailableError",
    "ConcurrencyError",
    "ConnectionDroppedError",
    "DatabaseURLError",
    "DatabaseUnavailableError",
    "ExperimentExistsError",
    "ExperimentNotFoundError",
    "SchemaVersionError",
    "StoreError",
    "StoreUnavailableError",
]


class StoreError(Exception):
    """Base class of every storage error."""


class ConcurrencyError(StoreError):
    """Another writer appended first: the caller's view of the log is stale.

    Attributes:
        experiment: Experiment whose log was appended to.
        expected_seq: Last sequence number the caller believed was current.
        actual_seq: Last sequence number actually stored.
    """

    def __init__(self, experiment: str, expected_seq: int, actual_seq: int) -> None:
        super().__init__(
            f"experiment {experiment!r}: expected last seq {expected_seq}, but the log is at "
            f"seq {actual_seq}; another writer appended first, re-read the log and retry"
        )
        self.experiment = experiment
        self.expected_seq = expected_seq
        self.actual_seq = actual_seq


class ExperimentExistsError(StoreError):
    """``create_experiment`` was called for a name that is already taken."""


class ExperimentNotFoundError(StoreError):
    """The named experiment does not exist in this store."""


class SchemaVersionError(StoreError):
    """The database schema is newer than this version of rungflow understands."""


class CheckpointError(StoreError):
    """A checkpoint is missing or does not match its recorded size or sha256."""


class DatabaseURLError(StoreError, ValueError):
    """The database URL is malformed or names a backend rungflow does not support.

    Bad input (the CLI exits 2): nothing was contacted.
    """


class StoreUnavailableError(StoreError):
    """The database or the checkpoint store cannot be used right now.

    An infrastructure error, never a trial's fault: the disk is full or
    read-only, the server is down, the file is corrupt. The run stops (exit 1)
    and leaves the segments it was running un-finished, so a resume after the
    problem is fixed runs them again.
    """


class DatabaseUnavailableError(StoreUnavailableError):
    """The database cannot be opened or stopped answering (see the message for the fix)."""


class ConnectionDroppedError(DatabaseUnavailableError):
    """The server closed a connection in use (a restart, an idle timeout, a kill).

    The pool has discarded that connection. Whatever the statement belonged
    to was rolled back, so the store (and the runner's writer) repeats the
    whole operation once on a fresh connection; only a second failure
    reaches the user, with the same message as any unusable database.
    """


class CheckpointStoreUnavailableError(StoreUnavailableError):
    """The checkpoint store cannot be written or read: full, read-only or unreachable."""
