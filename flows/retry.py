"""The ``retry-trial`` Prefect flow: run one failed trial's segment again.

The decision logic (what may be retried, what the result does) is Prefect-free
and lives in :mod:`flows.engine.retry`; this module only wraps it in a flow
whose segment runs as the ``train-segment`` task.
"""

from __future__ import annotations

from typing import Annotated, Any

from prefect import flow, get_run_logger
from pydantic import Field

from flows.engine.retry import RetryRefusedError, RetryResult, check_retry, retry_in_store
from flows.engine.segment import SegmentJob
from flows.settings import get_settings
from flows.spec import NAME_PATTERN
from flows.trainable import SegmentOutcome
from flows.tune import train_segment
from storage import EventStore

__all__ = ["RetryRefusedError", "RetryResult", "check_retry", "retry_in_store", "retry_trial"]


@flow(name="retry-trial", persist_result=False, validate_parameters=True)
def retry_trial(
    experiment: Annotated[str, Field(pattern=NAME_PATTERN)],
    trial_id: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.=+-]{0,127}$")],
    retries: Annotated[int, Field(ge=0, le=10)] = 0,
) -> dict[str, Any]:
    """Run a failed trial's failed segment again and record its result.

    Storage locations come from ``RUNGFLOW_*`` settings, never from
    parameters. See :mod:`flows.engine.retry` for what happens to the result.

    Args:
        experiment: Experiment name.
        trial_id: The failed trial (``t0003``).
        retries: Task retries of the segment (0-10).
    """
    settings = get_settings()
    task = train_segment.with_options(retries=retries, retry_delay_seconds=0)

    def execute(job: SegmentJob) -> SegmentOutcome:
        return task(job)

    store = EventStore(settings.resolved_database_url)
    try:
        result = retry_in_store(
            store, experiment, trial_id,
            checkpoint_root=settings.resolved_checkpoints, execute=execute, retries=retries,
        )
    finally:
        store.close()
    get_run_logger().info(
        "retried %s of %s (%g->%g): %s", trial_id, experiment, result.start, result.stop,
        result.outcome,
    )
    return result.to_json()
