"""The Prefect shell: the ``tune`` flow and the ``train-segment`` task.

Each segment is one Prefect task run, submitted to a bounded task runner chosen
from the spec at run time. The parent flow keeps up to ``max_concurrency``
segments in flight and reacts to whichever finishes first (``as_completed``
over the pending set), never in waves.
"""

from __future__ import annotations

import concurrent.futures
import functools
import inspect
from collections.abc import Callable, Hashable, Sequence
from contextlib import nullcontext
from typing import TYPE_CHECKING, Any, cast

from prefect import Task, flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.exceptions import TerminationSignal
from prefect.futures import PrefectFuture, as_completed
from prefect.results import ResultRecord
from prefect.states import Completed, Failed, State
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner
from prefect.utilities.annotations import quote

from flows.deploy_params import ExperimentSuffix, spec_for_run
from flows.engine.retention import Retention
from flows.engine.runner import ExperimentRunner, RunSummary
from flows.engine.segment import SegmentJob, run_segment
from flows.interrupts import ThreadRunner, is_user_stop
from flows.settings import RungflowSettings, get_settings
from flows.spec import ExperimentSpec
from flows.trainable import MetricNotReportedError, SegmentOutcome, TrainableNotFoundError
from storage import CheckpointError, EventStore, StoreUnavailableError
from storage.checkpoints import is_process_local, resolve_root

if TYPE_CHECKING:
    from flows.artifacts import ExperimentArtifacts

try:  # what PrefectConcurrentFuture.result() checks first (a flow run asked to pause)
    from prefect._flow_run_suspension import (
        raise_if_flow_run_suspension_requested as _suspension_check,
    )
except ImportError:  # another Prefect: read every result through future.result()
    _suspension_check = None  # type: ignore[assignment]

__all__ = ["PrefectExecutor", "make_task_runner", "train_segment", "tune"]

#: Errors a retry cannot fix: retrying them only burns time. A full or
#: unwritable store stops the run instead (see ExperimentRunner._finish).
_PERMANENT = (
    MetricNotReportedError, CheckpointError, TrainableNotFoundError, StoreUnavailableError
)


def _retry_condition(task: Any, task_run: Any, state: Any) -> bool:
    try:
        state.result()
    except _PERMANENT:
        return False
    except Exception:
        return True
    return True


@task(
    name="train-segment",
    task_run_name="{job.trial_id} {job.start}->{job.stop}",
    cache_policy=NO_CACHE,
    persist_result=False,
    retry_condition_fn=_retry_condition,
)
def train_segment(job: SegmentJob) -> SegmentOutcome:
    """Train one segment (see :func:`flows.engine.segment.run_segment`)."""
    return run_segment(job)


def make_task_runner(spec: ExperimentSpec) -> TaskRunner[Any]:
    """A bounded task runner for the spec (unbounded thread pools are a trap).

    ``process``, ``dask`` and ``ray`` run segments in other processes, which
    import the trainable's module and ``RUNGFLOW_WORKER_MODULES`` first (see
    :mod:`flows.dask_runner`, :mod:`flows.ray_runner`); ``dask`` and ``ray``
    connect to ``RUNGFLOW_DASK_ADDRESS`` / ``RUNGFLOW_RAY_ADDRESS`` or start a
    local cluster sized for ``max_concurrency`` segments.
    """
    if spec.task_runner == "thread":
        return ThreadRunner(max_workers=spec.max_concurrency)
    from flows.dask_runner import make_dask_runner, make_process_runner, worker_modules

    settings = get_settings()
    modules = worker_modules(spec, settings.worker_module_list)
    if spec.task_runner == "process":
        return make_process_runner(spec, modules)
    if spec.task_runner == "ray":
        from flows.ray_runner import make_ray_runner

        return make_ray_runner(spec, modules, settings.ray_address,
                               ship=settings.ray_py_modules, extra_env=settings.ray_runtime_env)
    runner: TaskRunner[Any] = make_dask_runner(spec, modules, settings.dask_address)
    return runner


@functools.cache
def _segment_task(retries: int) -> Task[..., SegmentOutcome]:
    """``train_segment`` with ``retries``: built once per value (a copy of a
    Prefect task costs about a millisecond), shared by every flow run."""
    return train_segment.with_options(retries=retries, retry_delay_seconds=0)


class PrefectExecutor:
    """:class:`flows.engine.runner.SegmentExecutor` on a Prefect task runner."""

    def __init__(self, runner: TaskRunner[Any], retries: int) -> None:
        self.runner = runner
        self.task = _segment_task(retries)
        # quote(): Prefect walks every parameter, recursively, several times per
        # task run (task inputs, resolving futures); a job holds no futures, and
        # the task receives it unwrapped. Threads only: Ray ships the annotation
        # as a bare tuple, and the other runners pickle the job anyway.
        self._quote = isinstance(runner, ThreadPoolTaskRunner)

    def submit(self, job: SegmentJob) -> Hashable:
        return self.runner.submit(self.task, {"job": quote(job) if self._quote else job})

    def wait_first(self, handles: Sequence[Hashable], timeout: float | None = None) -> Hashable:
        """The first done handle; None if ``timeout`` seconds pass first."""
        futures: list[PrefectFuture[Any]] = list(handles)  # type: ignore[arg-type]
        pooled = [getattr(f, "wrapped_future", None) for f in futures]
        if pooled and all(type(w) is concurrent.futures.Future for w in pooled):
            # A thread pool: wait on the pool's own futures. Prefect's as_completed
            # arms a cancel scope per call (a SIGALRM timer on the main thread)
            # and adds a done callback to every pending future. (A process
            # pool's are a subclass that cannot be waited on like this.)
            done, _ = concurrent.futures.wait(
                cast(list[concurrent.futures.Future[Any]], pooled),
                timeout=timeout, return_when=concurrent.futures.FIRST_COMPLETED,
            )
            return next((f for f, w in zip(futures, pooled, strict=True) if w in done), None)
        waiting = as_completed(futures, timeout=timeout)
        try:
            return next(waiting)
        except TimeoutError:
            return None
        finally:
            # as_completed arms a cancel scope (SIGALRM on the main thread) that
            # stays armed while the generator is suspended: close it now, or it
            # could fire into whatever the runner does next.
            waiting.close()

    def result(self, handle: Hashable) -> SegmentOutcome:
        future: PrefectFuture[SegmentOutcome] = handle  # type: ignore[assignment]
        done = _completed_value(future)
        if done is not None:
            return done[0]
        return future.result()


def _completed_value(future: PrefectFuture[Any]) -> tuple[Any] | None:
    """``(value,)`` of a thread pool's task run that completed, held in memory;
    None for anything else (then ``future.result()`` says what happened).

    ``future.result()`` reads even an in-memory value through Prefect's
    synchronous bridge: a coroutine sent to its event-loop thread and waited
    for, per segment, in the flow's thread and in that one. A Completed state
    from this process's thread pool holds the task's return value itself
    (results are not persisted, see ``train_segment``), so it is read here,
    after the same flow-run suspension check ``future.result()`` makes.
    """
    if _suspension_check is None:
        return None
    wrapped = getattr(future, "wrapped_future", None)
    if type(wrapped) is not concurrent.futures.Future or not wrapped.done():
        return None
    if wrapped.exception() is not None:
        return None
    state = wrapped.result()
    if not isinstance(state, State) or not state.is_completed():
        return None
    data = state.data
    if not isinstance(data, ResultRecord):
        return None
    _suspension_check()
    return (data.result,)


def run_experiment(
    spec: ExperimentSpec,
    *,
    database_url: str | None = None,
    checkpoints: str | None = None,
    on_progress: Callable[[ExperimentRunner], None] | None = None,
    on_end: Callable[[ExperimentRunner], None] | None = None,
    settings: RungflowSettings | None = None,
    store: EventStore | None = None,
) -> RunSummary:
    """Run or resume ``spec`` inside the current flow run.

    ``on_end`` is called with the runner once its run returned: its folded
    state is the experiment's (the verdict reads it instead of the log).
    ``settings`` are read now by default (reading them costs milliseconds).
    ``store`` is the caller's (left open; ``database_url`` is then unused);
    by default one is opened on the settings' database and closed here.
    """
    settings = settings or get_settings()
    # Workers get the root as a string and may run in another directory.
    root = resolve_root(checkpoints or settings.resolved_checkpoints)
    if spec.task_runner != "thread" and is_process_local(root):
        raise ValueError(
            f"checkpoints are at {root!r}, in this process's memory, but task_runner "
            f"{spec.task_runner!r} trains in other processes; use a directory or a shared URL"
        )
    retention = (
        Retention(root, keep_last=settings.keep_last, every=settings.retain_every)
        if settings.retention
        else None
    )
    own_store = store is None
    if store is None:
        store = _open_store(settings, database_url)
    try:
        runner = ExperimentRunner(
            store, spec, root, on_progress=_chain(retention, on_progress),
            synchronous_commit=settings.pg_synchronous_commit,
        )
        # The stored state changes only by what happened to the experiment (the
        # runner marks it failed when it itself failed): a refused resume, an
        # infrastructure error or this runner stopping leaves it as it was.
        with make_task_runner(spec) as task_runner:
            try:
                summary = runner.run(PrefectExecutor(task_runner, spec.segment_retries))
            except BaseException as exc:
                ended = _ended_state(exc)
                # "failed" is the runner's to record (the experiment itself failed);
                # a stop or a Prefect cancel is recorded here, and nothing else is.
                if ended != "failed" and store.has_experiment(spec.name):
                    store.set_state(spec.name, ended)
                raise
        if retention is not None:
            retention.sweep(runner)  # finished: only each trial's newest remain
            summary.extras = {**summary.extras, "retention": retention.summary()}
        if on_end is not None:
            on_end(runner)
        return summary
    finally:
        if own_store:
            store.close()


def _open_store(settings: RungflowSettings, database_url: str | None = None) -> EventStore:
    return EventStore(
        database_url or settings.resolved_database_url, connect_timeout=settings.connect_timeout
    )


def _ended_state(exc: BaseException) -> str:
    """The experiment state a run left by ``exc`` leaves behind.

    A stop the user asked for (Ctrl-C, SIGTERM to a CLI run: see
    :func:`flows.interrupts.is_user_stop`) leaves it resumable; a
    TerminationSignal in a run a worker or ``serve`` started, or one Prefect's
    control channel drives, is Prefect cancelling the flow run.
    """
    if isinstance(exc, SystemExit) or is_user_stop(exc):
        return "interrupted"
    if isinstance(exc, TerminationSignal):
        return "cancelled"
    return "failed"


def _verdict(
    spec: ExperimentSpec,
    summary: RunSummary,
    artifacts: ExperimentArtifacts | None = None,
    *,
    runner: ExperimentRunner | None = None,
    settings: RungflowSettings | None = None,
    store: EventStore | None = None,
) -> State[Any]:
    """Completed, or Failed when every trial failed or none reported the metric.

    Judged on :func:`flows.engine.status.run_end_status`: the run's own
    ``runner`` (or the one ``artifacts`` saw) holds the folded state (no
    snapshot to load, no log to fold), the rest is one row per trial. With
    ``artifacts``, the status is handed to them for the final artifacts,
    which need not compute it again. ``store`` is the run's (left open); by
    default one is opened and closed here.
    """
    from flows.engine.status import run_end_status, run_verdict

    own_store = store is None
    if store is None:
        store = _open_store(settings or get_settings())
    try:
        if store.has_experiment(spec.name):
            if runner is None and artifacts is not None:
                runner = artifacts.runner
            status = run_end_status(store, spec.name, runner)
            message = run_verdict(status)
            if artifacts is not None:
                artifacts.status = status
        else:
            message = None
        if message is not None:
            store.set_state(spec.name, "failed")
    finally:
        if own_store:
            store.close()
    if message is not None:
        return Failed(message=f"{spec.name}: {message}")
    return Completed(
        message=f"{spec.name} {summary.state}: best trial {summary.best_trial_id}",
        data=summary.to_json(),
    )


def _chain(
    *hooks: Callable[[ExperimentRunner], None] | None,
) -> Callable[[ExperimentRunner], None] | None:
    """One ``on_progress`` hook calling ``hooks`` in order (None if there are none)."""
    present = [h for h in hooks if h is not None]
    if not present:
        return None
    if len(present) == 1:
        return present[0]

    def chained(runner: ExperimentRunner) -> None:
        for hook in present:
            hook(runner)

    return chained


@flow(name="tune", persist_result=False, validate_parameters=True)
def tune(spec: ExperimentSpec, experiment_suffix: ExperimentSuffix = "none") -> dict[str, Any]:
    """Run or resume a hyperparameter search.

    Running a flow with the name of an existing experiment resumes it from its
    event log: finished segments are not run again. Storage locations come from
    ``RUNGFLOW_*`` settings, never from parameters.

    Args:
        spec: The experiment (scheduler, search space, budget, concurrency).
        experiment_suffix: "none" works on the experiment spec.name (a run with
            the name of an unfinished experiment resumes it); "date", "datetime"
            or "flow_run" start a new experiment per run, named spec.name plus
            the run's scheduled date (UTC) or the flow-run name. Retries of a
            run keep its name and so resume it.
    """
    from flows.artifacts import ExperimentArtifacts
    from flows.hooks import PROGRESS_HOOKS

    logger = get_run_logger()
    spec = spec_for_run(spec, experiment_suffix)
    settings = get_settings()  # once per run: reading the environment costs ms
    artifacts = ExperimentArtifacts(spec) if settings.artifacts else None
    hooks: list[Callable[[ExperimentRunner], None]] = [*PROGRESS_HOOKS]
    if artifacts is not None:
        hooks.append(artifacts)

    def on_progress(runner: ExperimentRunner) -> None:
        for hook in hooks:
            hook(runner)

    for hook in hooks:  # Prefect is up: say what the wait is for now (CLI progress)
        phase = getattr(hook, "phase", None)
        if phase is not None:
            phase("replaying the log, first segments running...")

    ended: list[ExperimentRunner] = []
    # One store for the run and its verdict: a second one would connect, check
    # the schema and compile its statements again (milliseconds per flow run).
    with artifacts if artifacts is not None else nullcontext(), _open_store(settings) as store:
        summary = run_experiment(
            spec,
            on_progress=on_progress if hooks else None,
            on_end=ended.append,
            settings=settings,
            store=store,
        )
        if artifacts:
            artifacts.summary = summary
        verdict = _verdict(
            spec, summary, artifacts, runner=ended[0] if ended else None, settings=settings,
            store=store,
        )
    logger.info(
        "experiment %s %s: %d segment(s) run, best trial %s (%s=%s)",
        summary.experiment,
        summary.state,
        summary.segments_run,
        summary.best_trial_id,
        spec.metric,
        summary.best_metric,
    )
    if verdict.is_failed():
        logger.error("%s", verdict.message)
    # Prefect makes a returned state the run's final state; callers of
    # tune(spec) get the summary dict, or FailedRun for a Failed verdict.
    return verdict  # type: ignore[return-value]


# Prefect validates a flow run's parameters with a pydantic model it builds
# for every run, and resolves string annotations (``from __future__ import
# annotations`` above) with a model rebuild each time: ~2 ms per flow run.
# The evaluated signature spares that; the parameters and schema are the same.
tune.fn.__signature__ = inspect.signature(tune.fn, eval_str=True)  # type: ignore[attr-defined]
