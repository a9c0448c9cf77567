"""Storage: the SQL event log, its projections, checkpoints and migrations.

The event log (:class:`EventStore`) is the single source of truth of every
experiment; ``trials`` and ``results`` are projections folded from it and can be
rebuilt at any time. Checkpoint blobs live outside SQL in a
:class:`CheckpointStore`. This package imports no Prefect.
"""

from storage.checkpoints import CheckpointStore, validate_name
from storage.engine import display_url
from storage.errors import (
    CheckpointError,
    CheckpointStoreUnavailableError,
    ConcurrencyError,
    ConnectionDroppedError,
    DatabaseUnavailableError,
    DatabaseURLError,
    ExperimentExistsError,
    ExperimentNotFoundError,
    SchemaVersionError,
    StoreError,
    StoreUnavailableError,
)
from storage.event_store import (
    STATES,
    AppendTransaction,
    EventStore,
    EventWriter,
    ExperimentSummary,
    LeaseRow,
    ResultRow,
    StoredEvent,
    TrialRow,
)

__all__ = [
    "STATES",
    "AppendTransaction",
    "CheckpointError",
    "CheckpointStore",
    "CheckpointStoreUnavailableError",
    "ConcurrencyError",
    "ConnectionDroppedError",
    "DatabaseURLError",
    "DatabaseUnavailableError",
    "EventStore",
    "EventWriter",
    "ExperimentExistsError",
    "ExperimentNotFoundError",
    "ExperimentSummary",
    "LeaseRow",
    "ResultRow",
    "SchemaVersionError",
    "StoreError",
    "StoreUnavailableError",
    "StoredEvent",
    "TrialRow",
    "display_url",
    "validate_name",
]
