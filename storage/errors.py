"""Exceptions raised by the storage layer.

Every error derives from :class:`StoreError` so callers can catch storage
failures as one family while still telling a lost race
(:class:`ConcurrencyError`, retry after re-reading) from a real fault.
"""

from __future__ import annotations

__all__ = [
    "CheckpointError",
    "ConcurrencyError",
    "ExperimentExistsError",
    "ExperimentNotFoundError",
    "SchemaVersionError",
    "StoreError",
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
