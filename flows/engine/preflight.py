"""What ``rungflow run`` checks before it starts Prefect: every error in seconds, not after a boot.

Booting Prefect's API takes 10-60 s; everything that can be wrong without it is
checked first, in this order, each failure a :class:`PreflightError` with one
line that names the problem and the fix:

1. settings (``RUNGFLOW_*``) parse; an ``env:``/``block:`` database reference
   resolves (exit 2);
2. the database URL is well-formed and supported (exit 2), the database opens
   within ``RUNGFLOW_CONNECT_TIMEOUT`` and its schema is usable (exit 1);
3. an existing experiment of the same name was created with a compatible
   spec (a refused resume writes nothing, exit 2), or it is finished: then
   there is nothing to run and the caller prints its leaderboard;
4. the checkpoint root can be written (exit 1), and is shared if the task
   runner trains in other processes (exit 2).

Nothing here imports Prefect (checked by import-linter), and nothing is
written to the event log: a run that stops here leaves the store as it was.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from pydantic import ValidationError

from flows.settings import DatabaseReferenceError, RungflowSettings
from schedulers import ExperimentCreated, ExperimentFinished
from storage import CheckpointStore, DatabaseURLError, EventStore, StoreError
from storage.checkpoints import is_process_local, resolve_root

if TYPE_CHECKING:
    # The runner and the spec import every scheduler's numerical stack; the
    # read-only commands (`status`, `list`) open a store through this module
    # without them.
    from flows.spec import ExperimentSpec

__all__ = [
    "BAD_INPUT",
    "ENVIRONMENT",
    "Preflight",
    "PreflightError",
    "check_checkpoints",
    "check_resume",
    "load_settings",
    "open_store",
    "preflight",
]

#: Exit code of an error in what the user gave (spec, URL, flags).
BAD_INPUT = 2
#: Exit code of an error in the environment (database down, disk full).
ENVIRONMENT = 1

ResumeState = Literal["new", "resume", "finished"]


class PreflightError(Exception):
    """A problem found before the run; ``str()`` is the one line to show.

    Attributes:
        exit_code: :data:`BAD_INPUT` (2) or :data:`ENVIRONMENT` (1).
    """

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass(frozen=True)
class Preflight:
    """What the checks found; ``store`` is open inside :func:`preflight` only."""

    store: EventStore
    state: ResumeState
    checkpoint_root: str


def load_settings() -> RungflowSettings:
    """``RUNGFLOW_*`` settings, or a :class:`PreflightError` naming the bad variable."""
    try:
        return RungflowSettings()
    except ValidationError as exc:
        first = exc.errors()[0]
        var = "RUNGFLOW_" + "_".join(str(p) for p in first["loc"]).upper()
        raise PreflightError(
            f"{var} is {first.get('input')!r}, but {first['msg'].lower()}", BAD_INPUT
        ) from None


def open_store(settings: RungflowSettings) -> EventStore:
    """Open (and migrate) the configured database, failing fast and in one line."""
    try:
        url = settings.resolved_database_url
    except DatabaseReferenceError as exc:
        raise PreflightError(str(exc), BAD_INPUT) from None
    try:
        return EventStore(url, connect_timeout=settings.connect_timeout)
    except DatabaseURLError as exc:
        raise PreflightError(str(exc), BAD_INPUT) from None
    except StoreError as exc:
        raise PreflightError(str(exc), ENVIRONMENT) from None


def check_resume(store: EventStore, spec: ExperimentSpec) -> ResumeState:
    """Whether ``spec`` starts a new experiment, resumes one, or names a finished one.

    Reads two events (the first and the last), whatever the log's length.

    Raises:
        ResumeRefusedError: the stored experiment has an incompatible spec.
    """
    from flows.engine.runner import refused_resume
    from flows.spec import spec_differences

    if not store.has_experiment(spec.name):
        return "new"
    first = store.read_one(spec.name, 1)
    if first is None or not isinstance(first.event, ExperimentCreated):
        return "resume"  # half-created by a racing writer: the runner sorts it out
    diffs = spec_differences(first.event.spec, spec)
    if diffs:
        raise refused_resume(spec.name, diffs)
    last = store.read_one(spec.name, store.last_seq(spec.name))
    if last is not None and isinstance(last.event, ExperimentFinished):
        return "finished"
    return "resume"


def check_checkpoints(root: str, spec: ExperimentSpec) -> str:
    """The checkpoint root, absolute, after proving it can be written.

    Raises:
        PreflightError: an unknown URL scheme or a process-local store for a
            multi-process task runner (exit 2); a root that cannot be created
            or written (exit 1).
    """
    try:
        resolved = resolve_root(root)
    except (ValueError, OSError) as exc:
        raise PreflightError(f"checkpoints {root!r}: {exc}", BAD_INPUT) from None
    if spec.task_runner != "thread" and is_process_local(resolved):
        raise PreflightError(
            f"checkpoints are at {resolved!r}, in this process's memory, but task_runner "
            f"{spec.task_runner!r} trains in other processes; use a directory or a shared URL",
            BAD_INPUT,
        )
    try:
        CheckpointStore(resolved).check_writable()
    except StoreError as exc:
        raise PreflightError(str(exc), ENVIRONMENT) from None
    except ImportError as exc:
        raise PreflightError(
            f"checkpoints {resolved!r} need the package {exc.name!r}; install it "
            "(e.g. pip install s3fs for s3://)",
            BAD_INPUT,
        ) from None
    except ValueError as exc:  # fsspec: "Protocol not known: ..."
        raise PreflightError(
            f"checkpoints {resolved!r}: {exc}; use a directory or an fsspec URL", BAD_INPUT
        ) from None
    return resolved


@contextmanager
def preflight(
    spec: ExperimentSpec, settings: RungflowSettings | None = None
) -> Iterator[Preflight]:
    """Run every check; yield the findings with the store open, close it afterwards.

    Raises:
        PreflightError: the first problem found (``exit_code`` says whose it is).
    """
    from flows.engine.runner import ResumeRefusedError

    settings = settings or load_settings()
    store = open_store(settings)
    try:
        try:
            state = check_resume(store, spec)
        except ResumeRefusedError as exc:
            raise PreflightError(str(exc), BAD_INPUT) from None
        except StoreError as exc:
            raise PreflightError(str(exc), ENVIRONMENT) from None
        root = settings.checkpoints or str(settings.home / "checkpoints")
        checked = check_checkpoints(root, spec) if state != "finished" else resolve_root(root)
        yield Preflight(store=store, state=state, checkpoint_root=checked)
    finally:
        store.close()
